"""Cluster and WAIT settings, and which scripts the WAIT option covers (no Redis, no I/O beyond config/)."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from gateway.problems import PROBLEMS
from gateway.settings import SettingsError, load_settings
from gateway.store import MEMBER, MERCHANT, MONEY_SCRIPTS, SPLITS, ClusterAccess, script_names


def test_cluster_nodes_come_from_a_comma_separated_environment_variable():
    """POINTGATE_REDIS_CLUSTER_NODES is split on commas into host:port startup nodes."""
    settings = load_settings(env={"POINTGATE_REDIS_CLUSTER_NODES": "10.0.0.1:6379, redis-2.internal:6380,[::1]:7000"})
    assert ("10.0.0.1:6379", "redis-2.internal:6380", "[::1]:7000") == settings.redis_cluster_nodes


def test_no_cluster_nodes_means_one_server():
    """Without cluster nodes the store connects to one server: there is no ClusterAccess."""
    assert ClusterAccess.from_settings(load_settings(env={})) is None


def test_cluster_access_carries_tls_and_credentials_without_printing_the_password():
    """TLS, user and password reach the cluster client; the password never appears in a repr."""
    settings = load_settings(env={"POINTGATE_REDIS_CLUSTER_NODES": "h1:6379", "POINTGATE_REDIS_TLS": "true",
                                  "POINTGATE_REDIS_USERNAME": "pointgate", "POINTGATE_REDIS_PASSWORD": "s3cret-pw"})
    access = ClusterAccess.from_settings(settings)
    assert (("h1:6379",), "pointgate", "s3cret-pw", True) == (access.nodes, access.username, access.password, access.tls)
    assert "s3cret-pw" not in repr(access) and "s3cret-pw" not in repr(settings)


@pytest.mark.parametrize("nodes, message", [
    (["10.0.0.1"], "host:port"),
    (["10.0.0.1:0"], "host:port"),
    (["10.0.0.1:70000"], "host:port"),
    (["h1:6379", "h1:6379"], "each node once"),
    ("h1:6379", "list of strings"),
    ([f"h{i}:6379" for i in range(65)], "at most 64"),
])
def test_bad_cluster_nodes_are_refused(nodes, message):
    """A startup node must be host:port with a real port, listed once, at most 64 of them."""
    with pytest.raises(SettingsError, match=message):
        load_settings(env={}, redis_cluster_nodes=nodes)


def test_a_url_and_cluster_nodes_together_are_refused():
    """One server or a cluster: setting both is an error, not a guess."""
    with pytest.raises(SettingsError, match="both set"):
        load_settings(env={"REDIS_URL": "redis://127.0.0.1:6379/0", "POINTGATE_REDIS_CLUSTER_NODES": "h1:6379"})


@pytest.mark.parametrize("key, value", [("redis_tls", True), ("redis_password", "pw"), ("redis_username", "u")])
def test_cluster_only_keys_without_a_cluster_are_refused(key, value):
    """TLS and credentials settings are for a cluster; a single server takes them in redis_url."""
    with pytest.raises(SettingsError, match="only used with redis_cluster_nodes"):
        load_settings(env={}, **{key: value})


def test_a_tls_bool_must_be_a_bool():
    """POINTGATE_REDIS_TLS accepts true/false words, not anything else."""
    with pytest.raises(SettingsError, match="expected true or false"):
        load_settings(env={"POINTGATE_REDIS_CLUSTER_NODES": "h1:6379", "POINTGATE_REDIS_TLS": "maybe"})


def test_wait_timeout_must_be_below_the_socket_timeout():
    """A WAIT longer than the client's socket timeout would turn a slow replica into a lost reply."""
    with pytest.raises(SettingsError, match="redis_wait_timeout_ms"):
        load_settings(env={}, redis_wait_replicas=1, redis_wait_timeout_ms=5000, redis_socket_timeout_s=5)
    assert 4999 == load_settings(env={}, redis_wait_replicas=1, redis_wait_timeout_ms=4999).redis_wait_timeout_ms


@pytest.mark.parametrize("key, value", [("redis_wait_replicas", -1), ("redis_wait_replicas", 17), ("redis_wait_timeout_ms", 0)])
def test_wait_settings_have_limits(key, value):
    """WAIT asks for 0-16 replicas, and never with timeout 0 (which blocks for ever)."""
    with pytest.raises(SettingsError, match=key):
        load_settings(env={}, **{key: value})


def test_money_scripts_are_exactly_the_scripts_that_write_journal_entries():
    """The WAIT option covers every script that appends a journal entry, and only those."""
    lua = resources.files("gateway") / "lua"
    journal = re.compile(r"\b(journal_append|wallet_entry|lots_expire|wallet_give_back|payment_give_back)\(")
    writers = {name for name in script_names() if journal.search((lua / f"{name}.lua").read_text())}
    assert writers == set(MONEY_SCRIPTS)


def test_every_split_is_made_of_scripts_over_one_scope_each():
    """Each step of SPLITS is a script of gateway/lua/, over the merchant's or the member's scope, and each split
    splits a script that also runs whole on one Redis."""
    names = set(script_names())
    steps = [(name, step) for name, split in SPLITS.items() for step in split.steps]
    assert set(SPLITS) <= names
    assert [] == [(name, step.script) for name, step in steps if step.script not in names or step.scope not in (MERCHANT, MEMBER)]


def test_durability_timeout_is_a_retryable_gateway_503():
    """The problem the HTTP layer answers for DurabilityTimeout: 503, the gateway's, retryable."""
    kind = PROBLEMS["durability_timeout"]
    assert (503, "gateway", True) == (kind.status, kind.fault, kind.retryable)
