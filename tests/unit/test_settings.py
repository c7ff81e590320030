"""Settings: files, environment overrides, and validation that names the bad key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.settings import CONFIG_DIR_DEFAULT, SettingsError, load_settings


def test_shipped_config_loads():
    """The files in config/ load and name one home network in KRW."""
    settings = load_settings(env={})
    assert ("9410", "KRW", 30) == (settings.home_network.prefix, settings.home_network.currency, settings.code_step_s)
    assert {"gs25", "cu", "familymart-tw"} == {m.id for m in settings.merchants}


def test_environment_overrides_files():
    """POINTGATE_<KEY> and REDIS_URL override the TOML values."""
    settings = load_settings(env={"POINTGATE_CODE_STEP_S": "60", "REDIS_URL": "redis://127.0.0.1:7000/0"})
    assert (60, "redis://127.0.0.1:7000/0") == (settings.code_step_s, settings.redis_url)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"POINTGATE_CODE_STEP_S": "soon"}, "POINTGATE_CODE_STEP_S: expected an integer"),
        ({"POINTGATE_SLOT_FAILURES_MAX": "0"}, "slot_failures_max: expected an integer from 1 to 20"),
        ({"POINTGATE_REDIS_URL": "http://x"}, "redis_url: expected redis://"),
    ],
)
def test_bad_values_name_the_key(env, message):
    """A bad value stops start-up with a message naming the key and what is allowed."""
    with pytest.raises(SettingsError, match=message):
        load_settings(env=env)


def copy_config(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(CONFIG_DIR_DEFAULT, target)
    return target


def test_unknown_key_in_file_is_refused(tmp_path: Path):
    """A typo in gateway.toml is an error, not silently ignored."""
    config = copy_config(tmp_path)
    (config / "gateway.toml").write_text((config / "gateway.toml").read_text() + "\n[extra]\ncode_stepp_s = 30\n")
    with pytest.raises(SettingsError, match="unknown key extra.code_stepp_s"):
        load_settings(config, env={})


def test_exactly_one_home_network(tmp_path: Path):
    """Two home networks are refused."""
    config = copy_config(tmp_path)
    text = (config / "networks.toml").read_text().replace("home = false", "home = true")
    (config / "networks.toml").write_text(text)
    with pytest.raises(SettingsError, match="exactly one network must have home = true"):
        load_settings(config, env={})


def test_bad_issuer_prefix_is_refused(tmp_path: Path):
    """An issuer prefix must be four digits."""
    config = copy_config(tmp_path)
    (config / "networks.toml").write_text((config / "networks.toml").read_text().replace('"8860"', '"88A0"'))
    with pytest.raises(SettingsError, match=r"prefix: expected 4 digits, got '88A0'"):
        load_settings(config, env={})
