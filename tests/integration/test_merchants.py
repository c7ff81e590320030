"""The merchant registry against a real Redis: merchants, stores, terminals, signing keys, the CLI."""

from __future__ import annotations

import asyncio
import base64
import re

import pytest
import redis

from gateway import keyspace
from gateway.cli import main
from gateway.keyring import Keyring, KeyringError
from gateway.merchants import KEY_CACHE_TTL_S, MerchantError, MerchantRegistry
from gateway.settings import Settings
from gateway.store import Store

SECRET_RE = re.compile(r"pgsk_[A-Za-z0-9_-]{43}")
GS25 = dict(name="GS25", currency="KRW", time_zone="Asia/Seoul", business_day_cutoff="00:00", receipt_width=42)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(store: Store, keyring: Keyring, clock: Clock) -> MerchantRegistry:
    return MerchantRegistry(store, keyring, now=clock)


async def merchant(registry: MerchantRegistry, merchant_id: str = "gs25", stores: dict[str, list[str]] | None = None) -> str:
    await registry.create_merchant(merchant_id, **GS25)
    for store_id, terminals in (stores or {}).items():
        await registry.add_store(merchant_id, store_id, f"store {store_id}")
        for terminal_id in terminals:
            await registry.add_terminal(merchant_id, store_id, terminal_id)
    return merchant_id


async def refused(call) -> str:
    with pytest.raises(MerchantError) as caught:
        await call
    return caught.value.code


async def snapshot(store: Store) -> dict[str, object]:
    """Every key of the database with its value (sets sorted: their serialised order is not stable)."""
    values: dict[str, object] = {}
    for key in sorted(await store.redis.keys("*")):
        kind = await store.redis.type(key)
        if kind == "set":
            values[key] = sorted(await store.redis.smembers(key))
        elif kind == "hash":
            values[key] = await store.redis.hgetall(key)
        else:
            values[key] = await store.redis.dump(key)
    return values


# Merchants


async def test_create_merchant_stores_its_fields_and_indexes_it(registry: MerchantRegistry, store: Store):
    """A created merchant reads back with every field, active, and is in the merchant index."""
    assert True is await registry.create_merchant("gs25", **GS25)
    info = await registry.merchant("gs25")
    assert ("gs25", "GS25", "KRW", "Asia/Seoul", "00:00", 42, "active") == (
        info.id, info.name, info.currency, info.time_zone, info.business_day_cutoff, info.receipt_width, info.status)
    assert {"gs25"} == await store.redis.smembers(keyspace.MERCHANTS_KEY)


async def test_creating_an_existing_merchant_changes_nothing(registry: MerchantRegistry):
    """A second create of the same id returns False and keeps the first one's fields."""
    await registry.create_merchant("gs25", **GS25)
    first = await registry.merchant("gs25")
    assert False is await registry.create_merchant("gs25", **{**GS25, "name": "Other", "receipt_width": 32})
    assert first == await registry.merchant("gs25")


async def test_concurrent_creates_of_one_id_let_exactly_one_win(registry: MerchantRegistry):
    """Ten simultaneous creates of one merchant id: one True, nine False."""
    results = await asyncio.gather(*(registry.create_merchant("gs25", **GS25) for _ in range(10)))
    assert [True] + [False] * 9 == sorted(results, reverse=True)


@pytest.mark.parametrize(
    "change",
    [
        {"merchant_id": "GS25"}, {"merchant_id": "-gs25"}, {"merchant_id": ""}, {"merchant_id": "a" * 41},
        {"merchant_id": "gs25}x"}, {"merchant_id": "gs_25"},
        {"name": ""}, {"name": " GS25"}, {"name": "x" * 101}, {"name": "GS\n25"},
        {"currency": "EUR"}, {"currency": "krw"},
        {"time_zone": "Mars/Olympus"}, {"time_zone": "asia/seoul"}, {"time_zone": "localtime"},
        {"time_zone": "../etc/passwd"}, {"time_zone": ""},
        {"business_day_cutoff": "24:00"}, {"business_day_cutoff": "9:00"}, {"business_day_cutoff": "09:60"},
        {"receipt_width": 0}, {"receipt_width": 200}, {"receipt_width": True}, {"receipt_width": "42"},
    ],
    ids=repr,
)
async def test_invalid_merchant_fields_are_refused_and_nothing_is_written(
    registry: MerchantRegistry, store: Store, change: dict[str, object]
):
    """An id, name, currency, time zone, cutoff or receipt width out of bounds is invalid_merchant; Redis stays empty."""
    args = {"merchant_id": "gs25", **GS25, **change}
    assert "invalid_merchant" == await refused(registry.create_merchant(**args))
    assert [] == await store.redis.keys("*")


async def test_every_configured_currency_and_a_non_seoul_zone_are_accepted(registry: MerchantRegistry):
    """A TWD merchant in Asia/Taipei with its own cutoff and a 32-column receipt is created."""
    assert True is await registry.create_merchant("familymart-tw", "FamilyMart Taiwan", "TWD", "Asia/Taipei", "04:30", 32)
    assert ("TWD", "Asia/Taipei", "04:30", 32) == (
        lambda m: (m.currency, m.time_zone, m.business_day_cutoff, m.receipt_width))(await registry.merchant("familymart-tw"))


async def test_an_unknown_or_malformed_merchant_reads_as_none(registry: MerchantRegistry):
    """merchant() is None for an id never created and for one that is not an id at all."""
    assert (None, None) == (await registry.merchant("nobody"), await registry.merchant("{mc:x}"))


async def test_list_merchants_returns_all_by_id(registry: MerchantRegistry):
    """list_merchants returns every created merchant, sorted by id."""
    for merchant_id in ("gs25", "cu", "familymart-tw"):
        await merchant(registry, merchant_id)
    assert ["cu", "familymart-tw", "gs25"] == [m.id for m in await registry.list_merchants()]


# Stores and terminals


async def test_add_store_once(registry: MerchantRegistry):
    """A store is added once; adding it again returns False and keeps its first name."""
    await merchant(registry)
    assert True is await registry.add_store("gs25", "gs25-gangnam-01", "GS25 Gangnam Station")
    assert False is await registry.add_store("gs25", "gs25-gangnam-01", "Renamed")
    assert ["GS25 Gangnam Station"] == [s.name for s in await registry.stores("gs25")]


async def test_add_store_needs_a_merchant_and_a_valid_id(registry: MerchantRegistry, store: Store):
    """A store of an unknown merchant is unknown_merchant; a malformed store id or name is invalid_store."""
    assert "unknown_merchant" == await refused(registry.add_store("nobody", "s1", "Store"))
    await merchant(registry)
    assert "invalid_store" == await refused(registry.add_store("gs25", "S 1", "Store"))
    assert "invalid_store" == await refused(registry.add_store("gs25", "s1", ""))
    assert set() == await store.redis.smembers(keyspace.merchant_stores_key("gs25"))


async def test_add_terminal_once(registry: MerchantRegistry):
    """A terminal is added once to a store; adding it again returns False."""
    await merchant(registry, stores={"gs25-gangnam-01": []})
    assert (True, False) == (await registry.add_terminal("gs25", "gs25-gangnam-01", "t1"),
                             await registry.add_terminal("gs25", "gs25-gangnam-01", "t1"))


async def test_add_terminal_needs_a_known_store_of_that_merchant(registry: MerchantRegistry):
    """A terminal for a store the merchant lacks is unknown_store; for an unknown merchant, unknown_merchant."""
    await merchant(registry, "gs25", {"gs25-gangnam-01": []})
    await merchant(registry, "cu", {"cu-jongno-01": []})
    assert "unknown_store" == await refused(registry.add_terminal("gs25", "cu-jongno-01", "t1"))
    assert "unknown_merchant" == await refused(registry.add_terminal("nobody", "gs25-gangnam-01", "t1"))
    assert "invalid_terminal" == await refused(registry.add_terminal("gs25", "gs25-gangnam-01", "t 1"))


async def test_terminal_belongs_only_to_its_own_store_and_merchant(registry: MerchantRegistry):
    """terminal_belongs is True for the registered triple only, never via another store or merchant."""
    await merchant(registry, "gs25", {"gs25-gangnam-01": ["t1", "t2"], "gs25-hongdae-02": ["t1"]})
    await merchant(registry, "cu", {"cu-jongno-01": ["t1"]})
    assert True is await registry.terminal_belongs("gs25", "gs25-gangnam-01", "t2")
    assert False is await registry.terminal_belongs("gs25", "gs25-hongdae-02", "t2")
    assert False is await registry.terminal_belongs("gs25", "cu-jongno-01", "t1")
    assert False is await registry.terminal_belongs("cu", "gs25-gangnam-01", "t1")
    assert False is await registry.terminal_belongs("gs25", "gs25-gangnam-01", "t3")
    assert False is await registry.terminal_belongs("gs25}", "gs25-gangnam-01", "t1")


async def test_stores_lists_stores_with_their_terminals(registry: MerchantRegistry):
    """stores() returns each store with its name and sorted terminals."""
    await merchant(registry, "gs25", {"gs25-hongdae-02": ["t1"], "gs25-gangnam-01": ["t2", "t1"]})
    assert [("gs25-gangnam-01", ("t1", "t2")), ("gs25-hongdae-02", ("t1",))] == [
        (s.id, s.terminals) for s in await registry.stores("gs25")]


# Signing keys


async def test_two_keys_are_issued_with_increasing_ids_and_pgsk_secrets(registry: MerchantRegistry):
    """The first two keys are gs25-k1 and gs25-k2, each with its own pgsk_ secret."""
    await merchant(registry)
    first, second = await registry.issue_key("gs25"), await registry.issue_key("gs25")
    assert ("gs25-k1", "gs25-k2") == (first.key_id, second.key_id)
    assert SECRET_RE.fullmatch(first.secret) and SECRET_RE.fullmatch(second.secret)
    assert first.secret != second.secret
    key_id, secret = first
    assert (key_id, secret) == (first.key_id, first.secret)


async def test_a_third_active_key_is_refused(registry: MerchantRegistry, store: Store):
    """With two keys active, issuing a third is too_many_active_keys and writes nothing."""
    await merchant(registry)
    await registry.issue_key("gs25")
    await registry.issue_key("gs25")
    assert "too_many_active_keys" == await refused(registry.issue_key("gs25"))
    assert {"gs25-k1", "gs25-k2"} == await store.redis.smembers(keyspace.signing_keys_key("gs25"))
    assert 0 == await store.redis.exists(keyspace.signing_key_key("gs25", "gs25-k3"))


async def test_after_revoking_one_key_another_is_issued_with_a_fresh_id(registry: MerchantRegistry):
    """Revoking k1 makes room: the next key is k3, never a reused id."""
    await merchant(registry)
    await registry.issue_key("gs25")
    await registry.issue_key("gs25")
    assert True is await registry.revoke_key("gs25", "gs25-k1")
    assert "gs25-k3" == (await registry.issue_key("gs25")).key_id
    assert [("gs25-k1", "revoked"), ("gs25-k2", "active"), ("gs25-k3", "active")] == [
        (k.key_id, k.status) for k in await registry.list_keys("gs25")]


async def test_concurrent_issues_never_exceed_two_active_keys(registry: MerchantRegistry):
    """Six simultaneous issues for one merchant: exactly two keys, the rest too_many_active_keys."""
    await merchant(registry)
    results = await asyncio.gather(*(registry.issue_key("gs25") for _ in range(6)), return_exceptions=True)
    issued = sorted(r.key_id for r in results if not isinstance(r, Exception))
    assert ["gs25-k1", "gs25-k2"] == issued
    assert ["too_many_active_keys"] * 4 == [r.code for r in results if isinstance(r, MerchantError)]


async def test_a_key_for_an_unknown_merchant_is_refused(registry: MerchantRegistry, store: Store):
    """Issuing a key for a merchant that does not exist is unknown_merchant and writes nothing."""
    assert "unknown_merchant" == await refused(registry.issue_key("nobody"))
    assert [] == await store.redis.keys("*")


async def test_revoking_twice_and_revoking_what_does_not_exist(registry: MerchantRegistry):
    """A second revoke returns False; a key never issued is unknown_key; a foreign or malformed id is invalid_key."""
    await merchant(registry)
    await registry.issue_key("gs25")
    assert (True, False) == (await registry.revoke_key("gs25", "gs25-k1"), await registry.revoke_key("gs25", "gs25-k1"))
    assert "unknown_key" == await refused(registry.revoke_key("gs25", "gs25-k9"))
    assert "invalid_key" == await refused(registry.revoke_key("gs25", "cu-k1"))
    assert "invalid_key" == await refused(registry.revoke_key("gs25", "k1"))
    assert "unknown_merchant" == await refused(registry.revoke_key("nobody", "nobody-k1"))


async def test_the_stored_secret_is_ciphertext_bound_to_its_key(registry: MerchantRegistry, store: Store, keyring: Keyring):
    """Redis holds AES-GCM ciphertext, not the secret; it decrypts only with its own merchant and key id."""
    await merchant(registry)
    key_id, secret = await registry.issue_key("gs25")
    stored = await store.redis.hgetall(keyspace.signing_key_key("gs25", key_id))
    assert ("active", keyring.active) == (stored["status"], stored["keyring_key_id"])
    assert secret not in str(stored)
    assert secret.encode() not in base64.b64decode(stored["secret"])
    aad = f"pointgate:merchant-key:gs25:{key_id}"
    assert secret.encode() == keyring.decrypt(stored["keyring_key_id"], stored["secret"], aad)
    with pytest.raises(KeyringError):
        keyring.decrypt(stored["keyring_key_id"], stored["secret"], "pointgate:merchant-key:cu:cu-k1")


async def test_listing_keys_and_showing_an_issued_key_never_show_the_secret(registry: MerchantRegistry):
    """list_keys and the repr of an issued key hold the key ids but not the secret."""
    await merchant(registry)
    issued = await registry.issue_key("gs25")
    shown = repr(await registry.list_keys("gs25")) + repr(issued) + str([issued.key_id])
    assert "gs25-k1" in shown
    assert issued.secret not in shown


async def test_signing_secret_is_the_issued_secret(registry: MerchantRegistry):
    """signing_secret of an active key returns the secret issue_key returned."""
    await merchant(registry)
    key_id, secret = await registry.issue_key("gs25")
    assert secret == await registry.signing_secret("gs25", key_id)


async def test_another_process_sees_a_revocation_once_its_cache_expires(
    registry: MerchantRegistry, store: Store, keyring: Keyring, clock: Clock
):
    """A process that cached a key keeps it for under KEY_CACHE_TTL_S after revocation, then gets None."""
    other_clock = Clock()
    other_process = MerchantRegistry(store, Keyring.load(keyring.path), now=other_clock)
    await merchant(registry)
    key_id, secret = await registry.issue_key("gs25")
    assert secret == await other_process.signing_secret("gs25", key_id)
    await registry.revoke_key("gs25", key_id)
    other_clock.now_s += KEY_CACHE_TTL_S - 0.001
    assert secret == await other_process.signing_secret("gs25", key_id)
    other_clock.now_s += 0.001
    assert None is await other_process.signing_secret("gs25", key_id)


async def test_the_revoking_process_forgets_the_key_at_once(registry: MerchantRegistry):
    """The registry that revokes a key returns None for it immediately, cache or not."""
    await merchant(registry)
    key_id, _ = await registry.issue_key("gs25")
    await registry.signing_secret("gs25", key_id)
    await registry.revoke_key("gs25", key_id)
    assert None is await registry.signing_secret("gs25", key_id)


async def test_signing_secret_is_none_for_unknown_keys(registry: MerchantRegistry):
    """An unissued key, an unknown merchant and malformed ids all give None."""
    await merchant(registry)
    await registry.issue_key("gs25")
    assert [None, None, None, None] == [
        await registry.signing_secret("gs25", "gs25-k2"),
        await registry.signing_secret("cu", "cu-k1"),
        await registry.signing_secret("gs25", "gs25-k1\n"),
        await registry.signing_secret("{gs25}", "gs25-k1"),
    ]


async def test_a_newly_issued_key_works_at_once_everywhere(registry: MerchantRegistry, store: Store, keyring: Keyring):
    """A process that looked a key up before it existed finds it as soon as it is issued (no negative cache)."""
    other_process = MerchantRegistry(store, Keyring.load(keyring.path), now=Clock())
    await merchant(registry)
    assert None is await other_process.signing_secret("gs25", "gs25-k1")
    key_id, secret = await registry.issue_key("gs25")
    assert secret == await other_process.signing_secret("gs25", key_id)


async def test_secrets_survive_a_keyring_rotation(registry: MerchantRegistry, store: Store, keyring: Keyring):
    """After the keyring rotates, reencrypt_secrets moves every key to the new keyring key and each still decrypts."""
    await merchant(registry)
    key_id, secret = await registry.issue_key("gs25")
    old = keyring.active
    new = keyring.rotate()
    assert {old: 1} == await registry.keyring_keys_in_use()
    assert (1, 0) == (await registry.reencrypt_secrets(), await registry.reencrypt_secrets())
    assert {new: 1} == await registry.keyring_keys_in_use()
    keyring.retire(old)
    fresh = MerchantRegistry(store, Keyring.load(keyring.path), now=Clock())
    assert secret == await fresh.signing_secret("gs25", key_id)


# Configuration


async def test_load_config_creates_the_configured_merchants_stores_and_terminals(registry: MerchantRegistry, settings: Settings):
    """merchants.toml's gs25, cu and familymart-tw arrive with their stores and terminals, and no keys."""
    summary = await registry.load_config(settings)
    assert (3, 4, 6) == (summary.merchants_created, summary.stores_created, summary.terminals_added)
    assert ["cu", "familymart-tw", "gs25"] == [m.id for m in await registry.list_merchants()]
    assert [("gs25-gangnam-01", ("t1", "t2")), ("gs25-hongdae-02", ("t1",))] == [
        (s.id, s.terminals) for s in await registry.stores("gs25")]
    assert [("cu-jongno-01", ("t1",))] == [(s.id, s.terminals) for s in await registry.stores("cu")]
    assert [("fm-taipei-101", ("t1", "t2"))] == [(s.id, s.terminals) for s in await registry.stores("familymart-tw")]
    familymart = await registry.merchant("familymart-tw")
    assert ("TWD", "Asia/Taipei") == (familymart.currency, familymart.time_zone)
    assert () == await registry.list_keys("gs25")


async def test_load_config_twice_changes_nothing(registry: MerchantRegistry, settings: Settings, store: Store):
    """A second load_config reports nothing created and leaves every key and value as it was."""
    await registry.load_config(settings)
    before = await snapshot(store)
    summary = await registry.load_config(settings)
    assert (0, 0, 0, False) == (summary.merchants_created, summary.stores_created, summary.terminals_added, summary.changed)
    assert before == await snapshot(store)


# The command line


@pytest.fixture
def cli_env(redis_server, tmp_path, monkeypatch: pytest.MonkeyPatch):
    """The CLI's environment: the test Redis (flushed) and a keyring of its own."""
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("POINTGATE_KEYRING_PATH", str(tmp_path / "cli-keyring.json"))
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()


def test_cli_creates_a_merchant_issues_a_key_and_lists_without_the_secret(cli_env, capsys: pytest.CaptureFixture[str]):
    """create, add-store, add-terminal and issue-key succeed; issue-key prints a pgsk_ secret once; list never does."""
    assert 0 == main(["merchants", "create", "gs25", "--name", "GS25", "--currency", "KRW", "--time-zone", "Asia/Seoul"])
    assert 0 == main(["merchants", "add-store", "gs25", "gs25-gangnam-01", "--name", "GS25 Gangnam Station"])
    assert 0 == main(["merchants", "add-terminal", "gs25", "gs25-gangnam-01", "t1"])
    capsys.readouterr()
    assert 0 == main(["merchants", "issue-key", "gs25"])
    issued = capsys.readouterr()
    [secret] = SECRET_RE.findall(issued.out)
    assert "gs25-k1" in issued.out
    assert "only this time" in issued.err
    assert 0 == main(["merchants", "list"])
    listed = capsys.readouterr()
    assert "gs25-k1: active" in listed.out
    assert "store gs25-gangnam-01 (GS25 Gangnam Station): terminals t1" in listed.out
    assert secret not in listed.out + listed.err
    assert [] == SECRET_RE.findall(listed.out)


def test_cli_refusals_print_one_line_and_exit_1(cli_env, capsys: pytest.CaptureFixture[str]):
    """A third active key, an unknown merchant and a bad currency each exit 1 with one line on stderr."""
    main(["merchants", "create", "gs25", "--name", "GS25", "--currency", "KRW", "--time-zone", "Asia/Seoul"])
    main(["merchants", "issue-key", "gs25"])
    main(["merchants", "issue-key", "gs25"])
    capsys.readouterr()
    for argv, words in [
        (["merchants", "issue-key", "gs25"], "2 active keys"),
        (["merchants", "add-store", "nobody", "s1", "--name", "S"], "no merchant nobody"),
        (["merchants", "create", "cu", "--name", "CU", "--currency", "EUR", "--time-zone", "Asia/Seoul"], "currency"),
        (["merchants", "revoke-key", "gs25", "gs25-k7"], "no key gs25-k7"),
    ]:
        assert 1 == main(argv)
        err = capsys.readouterr().err
        assert 1 == len(err.splitlines())
        assert words in err


def test_cli_revoke_key_and_load_config(cli_env, capsys: pytest.CaptureFixture[str]):
    """revoke-key marks the key revoked in list; load-config creates the configured merchants, then nothing."""
    assert 0 == main(["merchants", "load-config"])
    assert "created 3 merchant(s), 4 store(s), 6 terminal(s)" in capsys.readouterr().out
    assert 0 == main(["merchants", "load-config"])
    assert "nothing changed" in capsys.readouterr().out
    main(["merchants", "issue-key", "cu"])
    assert 0 == main(["merchants", "revoke-key", "cu", "cu-k1"])
    capsys.readouterr()
    assert 0 == main(["merchants", "list", "cu"])
    out = capsys.readouterr().out
    assert "key cu-k1: revoked" in out
    assert "gs25" not in out


def test_keys_rotate_reencrypts_merchant_secrets_too(redis_server, settings, monkeypatch, capsys):
    """`gateway keys rotate` moves merchant signing secrets to the new key, so retiring the old one breaks nothing."""
    import asyncio as _asyncio

    from gateway import cli
    from gateway.keyring import Keyring
    from gateway.merchants import MerchantRegistry
    from gateway.store import Store, connect

    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("POINTGATE_KEYRING_PATH", settings.keyring_path)

    async def issue():
        store = Store(connect(redis_server.url, 5))
        await store.redis.flushall()
        registry = MerchantRegistry(store, Keyring.load(settings.keyring_path))
        await registry.load_config(settings)
        issued = await registry.issue_key("gs25")
        await store.close()
        return issued

    async def secret_now():
        store = Store(connect(redis_server.url, 5))
        registry = MerchantRegistry(store, Keyring.load(settings.keyring_path))
        value = await registry.signing_secret("gs25", issued.key_id)
        await store.close()
        return value

    issued = _asyncio.run(issue())
    assert 0 == cli.main(["keys", "rotate"])
    assert 0 == cli.main(["keys", "retire", "k1"])
    assert issued.secret == _asyncio.run(secret_now())


def test_partner_key_is_stored_encrypted_and_survives_rotation(redis_server, settings, monkeypatch, capsys):
    """`gateway partners set-key` stores the partner's key encrypted; rotation and retiring k1 keep it readable."""
    import asyncio as _asyncio

    from gateway import cli, keyspace
    from gateway.keyring import Keyring
    from gateway.partners import PartnerKeys
    from gateway.store import Store, connect

    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("POINTGATE_KEYRING_PATH", settings.keyring_path)
    secret = "pgsk_" + "Q" * 43

    async def stored():
        store = Store(connect(redis_server.url, 5))
        record = await store.redis.hgetall(keyspace.partner_key_key("taishin"))
        key = await PartnerKeys(store, Keyring.load(settings.keyring_path)).get("taishin")
        await store.close()
        return record, key

    assert 0 == cli.main(["partners", "set-key", "taishin", "hana-k1", secret])
    record, _ = _asyncio.run(stored())
    assert secret not in str(record)
    assert 0 == cli.main(["keys", "rotate"])
    assert 0 == cli.main(["keys", "retire", "k1"])
    assert 0 == cli.main(["partners", "list"])
    record, key = _asyncio.run(stored())
    assert (("hana-k1", secret), "k2") == (key, record["keyring_key_id"])
    assert "our key: hana-k1" in capsys.readouterr().out
