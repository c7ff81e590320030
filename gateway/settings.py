"""Gateway settings: TOML files in `config/`, overridden by environment variables.

`load_settings()` reads `gateway.toml`, `networks.toml` and `merchants.toml`,
applies `POINTGATE_<KEY>` overrides (and `REDIS_URL`), and validates every
value. A bad value raises `SettingsError` naming the key and what is allowed,
so the process stops at start-up instead of failing on the first payment.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

CONFIG_DIR_DEFAULT = Path(__file__).resolve().parent.parent / "config"
ENV_PREFIX = "POINTGATE_"
CURRENCIES = {"KRW": 0, "TWD": 0, "JPY": 0, "CNY": 2, "THB": 2, "USD": 2}
"""ISO 4217 currencies pointgate knows, with their minor-unit exponent."""


class SettingsError(ValueError):
    """A configuration value is missing or not allowed; the message names the key."""


@dataclass(frozen=True, slots=True)
class Network:
    prefix: str
    id: str
    name: str
    home: bool
    currency: str
    points_unit: str


@dataclass(frozen=True, slots=True)
class Store:
    id: str
    name: str
    terminals: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Merchant:
    id: str
    name: str
    currency: str
    time_zone: str
    business_day_cutoff: str
    receipt_width: int
    stores: tuple[Store, ...]
    fee_bp: int = 0
    """The merchant's fee in basis points of its day's net sales, kept at settlement."""


@dataclass(frozen=True, slots=True)
class Affiliate:
    id: str
    name: str
    budget_points: int


@dataclass(frozen=True, slots=True)
class Partner:
    id: str
    base_url: str
    connect_timeout_s: float
    read_timeout_s: float
    concurrency_max: int
    circuit_failures_max: int
    circuit_open_s: float


@dataclass(frozen=True, slots=True)
class Settings:
    # [server]
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    body_bytes_max: int = 65536
    shutdown_grace_s: int = 10
    # [redis]
    redis_url: str = ""
    data_dir: str = "var/redis"
    redis_port: int = 0
    redis_start_timeout_s: int = 10
    redis_socket_timeout_s: int = 5
    redis_cluster_nodes: tuple[str, ...] = ()
    """`host:port` startup nodes of a Redis Cluster; empty: one server (redis_url or the bundled one)."""
    redis_username: str = ""
    redis_password: str = dataclasses.field(default="", repr=False)
    redis_tls: bool = False
    redis_tls_ca_path: str = ""
    redis_wait_replicas: int = 0
    """After a script that moves points, WAIT for this many replicas to acknowledge it; 0: no WAIT."""
    redis_wait_timeout_ms: int = 100
    # [codes]
    code_step_s: int = 30
    code_window_steps: int = 1
    code_lookback_steps: int = 20
    slot_failures_max: int = 5
    # [keys]
    keyring_path: str = "var/keyring.json"
    # [limits]
    amount_max_krw: int = 2_000_000
    member_daily_points_max: int = 3_000_000
    terminal_invalid_codes_per_min: int = 10
    merchant_invalid_codes_per_min: int = 200
    member_day_time_zone: str = "Asia/Seoul"
    points_expiry_interval_s: float = 60.0
    views_interval_s: float = 1.0
    settle_interval_s: float = 900.0
    settlements_dir: str = "var/settlements"
    live_feeds_max: int = 512
    # [cashout]
    cashout_min_points: int = 5_000
    cashout_fee_points: int = 500
    bank_url: str = ""
    bank_api_key: str = dataclasses.field(default="", repr=False)
    bank_timeout_s: float = 5.0
    bank_resolve_interval_s: float = 2.0
    # networks.toml and merchants.toml
    networks: tuple[Network, ...] = ()
    merchants: tuple[Merchant, ...] = ()
    affiliates: tuple[Affiliate, ...] = ()
    partners: tuple[Partner, ...] = ()
    fx: Mapping[str, Any] | None = None
    """config/fx.toml as parsed; gateway.fx.RateTable validates it."""
    campaigns: Mapping[str, Any] | None = None
    """config/campaigns.toml as parsed (absent file: none); gateway.coupons validates it at start."""

    @property
    def home_network(self) -> Network:
        return next(n for n in self.networks if n.home)

    def network_by_prefix(self, prefix: str) -> Network | None:
        return next((n for n in self.networks if n.prefix == prefix), None)

    def network(self, network_id: str) -> Network | None:
        return next((n for n in self.networks if n.id == network_id), None)

    def partner(self, network_id: str) -> Partner | None:
        return next((p for p in self.partners if p.id == network_id), None)

    def affiliate(self, affiliate_id: str) -> Affiliate | None:
        return next((a for a in self.affiliates if a.id == affiliate_id), None)

    def merchant(self, merchant_id: str) -> Merchant | None:
        return next((m for m in self.merchants if m.id == merchant_id), None)


# (minimum, maximum) for every integer setting; the reason is in gateway.toml.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "port": (0, 65535),
    "workers": (1, 64),
    "body_bytes_max": (1024, 1 << 20),
    "shutdown_grace_s": (1, 300),  # aiohttp reads 0 as "wait for ever"
    "redis_port": (0, 65535),
    "redis_start_timeout_s": (1, 120),
    "redis_socket_timeout_s": (1, 60),
    "redis_wait_replicas": (0, 16),  # WAIT counts replicas of one primary; 16 is far beyond any sane shard
    "redis_wait_timeout_ms": (1, 60_000),  # WAIT 0 would block for ever, so 0 is not allowed
    "code_step_s": (10, 300),
    "code_window_steps": (0, 3),
    "code_lookback_steps": (0, 240),
    "slot_failures_max": (1, 20),
    "amount_max_krw": (1, 10**12),
    "member_daily_points_max": (1, 10**12),
    "terminal_invalid_codes_per_min": (1, 100_000),
    "merchant_invalid_codes_per_min": (1, 1_000_000),
    "cashout_min_points": (1, 10**12),
    "live_feeds_max": (1, 100_000),
    "cashout_fee_points": (0, 10**9),
}
# (minimum, maximum) for every number setting that may have a fraction.
_FLOAT_RANGES: dict[str, tuple[float, float]] = {
    "points_expiry_interval_s": (0.05, 86400.0),
    "views_interval_s": (0.0, 3600.0),
    "settle_interval_s": (0.0, 86400.0),
    "bank_timeout_s": (0.05, 120.0),
    "bank_resolve_interval_s": (0.05, 3600.0),
}
_BOOL_FIELDS = {"redis_tls"}
# Settings that are lists of strings, with the most entries each may have.
_LIST_FIELDS_MAX = {"redis_cluster_nodes": 64}  # startup nodes only: the client discovers the rest
_CLUSTER_NODE_RE = re.compile(r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})")
_SCALAR_FIELDS = {
    f.name: f for f in dataclasses.fields(Settings) if f.name not in ("networks", "merchants", "affiliates", "partners", "fx", "campaigns")
}


def load_settings(
    config_dir: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read, override and validate all settings; raise SettingsError on the first bad one."""
    env = os.environ if env is None else env
    config_dir = Path(config_dir or env.get(ENV_PREFIX + "CONFIG_DIR") or CONFIG_DIR_DEFAULT)
    values: dict[str, Any] = {}
    for section, table in _read_toml(config_dir / "gateway.toml").items():
        if not isinstance(table, dict):
            raise SettingsError(f"gateway.toml: [{section}] must be a table")
        for key, value in table.items():
            if key not in _SCALAR_FIELDS:
                raise SettingsError(f"gateway.toml: unknown key {section}.{key}")
            values[key] = value
    if env.get("REDIS_URL"):
        values["redis_url"] = env["REDIS_URL"]
    for key in _SCALAR_FIELDS:
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is not None:
            values[key] = _from_env(key, raw)
    values.update(overrides)
    for key, value in values.items():
        if key in _SCALAR_FIELDS:
            _check_scalar(key, value)
    for key in _FLOAT_RANGES.keys() & values.keys():
        values[key] = float(values[key])
    for key in _LIST_FIELDS_MAX.keys() & values.keys():
        values[key] = tuple(values[key])
    _check_cashout(values)
    _check_redis(values)
    if "networks" not in values:
        values["networks"] = _networks(_read_toml(config_dir / "networks.toml"))
    if "merchants" not in values:
        values["merchants"] = _merchants(_read_toml(config_dir / "merchants.toml"))
    if "partners" not in values:
        values["partners"] = _partners(_read_toml(config_dir / "partners.toml"), values["networks"])
    if "fx" not in values:
        values["fx"] = _read_toml(config_dir / "fx.toml")
    if "campaigns" not in values:
        # Optional: a configuration from before coupons existed runs with no campaigns.
        path = config_dir / "campaigns.toml"
        values["campaigns"] = _read_toml(path) if path.exists() else {}
    if "affiliates" not in values:
        values["affiliates"] = _affiliates(_read_toml(config_dir / "affiliates.toml"))
    return Settings(**values)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{path.name}: not valid TOML: {e}") from None


def _from_env(key: str, raw: str) -> Any:
    if key in _LIST_FIELDS_MAX:
        return [item.strip() for item in raw.split(",") if item.strip()]
    if key in _BOOL_FIELDS:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{ENV_PREFIX}{key.upper()}: expected true or false, got {raw!r}")
    if _SCALAR_FIELDS[key].type in ("float", float):
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{ENV_PREFIX}{key.upper()}: expected a number, got {raw!r}") from None
    if _SCALAR_FIELDS[key].type in ("int", int):
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{ENV_PREFIX}{key.upper()}: expected an integer, got {raw!r}") from None
    return raw


def _check_scalar(key: str, value: Any) -> None:
    if key in _INT_RANGES:
        low, high = _INT_RANGES[key]
        if type(value) is not int or not low <= value <= high:
            raise SettingsError(f"{key}: expected an integer from {low} to {high}, got {value!r}")
    elif key in _BOOL_FIELDS:
        if type(value) is not bool:
            raise SettingsError(f"{key}: expected true or false, got {value!r}")
    elif key in _LIST_FIELDS_MAX:
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
            raise SettingsError(f"{key}: expected a list of strings (comma-separated in {ENV_PREFIX}{key.upper()}), got {value!r}")
        if len(value) > _LIST_FIELDS_MAX[key]:
            raise SettingsError(f"{key}: at most {_LIST_FIELDS_MAX[key]} entries, got {len(value)}")
    elif key in _FLOAT_RANGES:
        low_s, high_s = _FLOAT_RANGES[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low_s <= value <= high_s:
            raise SettingsError(f"{key}: expected a number from {low_s} to {high_s}, got {value!r}")
    elif not isinstance(value, str):
        raise SettingsError(f"{key}: expected a string, got {value!r}")
    if key == "redis_url" and value and not re.match(r"^(redis|rediss|unix)://", value):
        raise SettingsError(f"redis_url: expected redis://, rediss:// or unix://, got {value!r}")


def _check_cashout(values: Mapping[str, Any]) -> None:
    """The cash-out keys that only make sense together."""
    def get(key: str) -> Any:
        return values.get(key, _SCALAR_FIELDS[key].default)

    if get("cashout_fee_points") >= get("cashout_min_points"):
        raise SettingsError(f"cashout_fee_points: must be below cashout_min_points ({get('cashout_min_points')}), "
                            f"so every cash-out pays the member something; got {get('cashout_fee_points')}")
    url, api_key = get("bank_url"), get("bank_api_key")
    if url and not re.fullmatch(r"https?://[^/\s]+(/[^\s]*[^/\s])?", url):
        raise SettingsError(f"bank_url: expected http(s)://host[:port][/path] without a trailing slash, got {url!r}")
    if url and not re.fullmatch(r"[\x21-\x7e]{8,256}", api_key):
        raise SettingsError("bank_api_key: expected 8-256 visible ASCII characters when bank_url is set "
                            "(POINTGATE_BANK_API_KEY); the key itself is never printed")


def _check_redis(values: Mapping[str, Any]) -> None:
    """One server or a cluster, and the keys that only make sense with a cluster or with WAIT."""
    def get(key: str) -> Any:
        return values.get(key, _SCALAR_FIELDS[key].default)

    nodes = get("redis_cluster_nodes")
    for node in nodes:
        match = _CLUSTER_NODE_RE.fullmatch(node)
        if not match or not 1 <= int(match["port"]) <= 65535:
            raise SettingsError(f"redis_cluster_nodes: expected host:port entries (port 1-65535), got {node!r}")
    if len(set(nodes)) != len(nodes):
        raise SettingsError(f"redis_cluster_nodes: each node once, got {list(nodes)!r}")
    if nodes and get("redis_url"):
        raise SettingsError("redis_url and redis_cluster_nodes are both set; set one (a single server or a cluster)")
    if not nodes:
        for key in ("redis_username", "redis_password", "redis_tls", "redis_tls_ca_path"):
            if get(key):
                raise SettingsError(f"{key}: only used with redis_cluster_nodes; a single server takes its "
                                    f"user, password and TLS in redis_url (rediss://user:password@host:port/0)")
    if get("redis_tls_ca_path") and not get("redis_tls"):
        raise SettingsError("redis_tls_ca_path: set redis_tls = true as well, or leave the CA path empty")
    if get("redis_wait_replicas") and get("redis_wait_timeout_ms") >= get("redis_socket_timeout_s") * 1000:
        raise SettingsError(f"redis_wait_timeout_ms: must be below redis_socket_timeout_s ({get('redis_socket_timeout_s')} s), "
                            f"or the client gives up on a WAIT that Redis would still answer; got {get('redis_wait_timeout_ms')}")


def _require(table: Mapping[str, Any], key: str, where: str, kind: type) -> Any:
    value = table.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SettingsError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def _networks(doc: Mapping[str, Any]) -> tuple[Network, ...]:
    networks = []
    for i, table in enumerate(doc.get("network", [])):
        where = f"networks.toml network[{i}]"
        prefix = _require(table, "prefix", where, str)
        if not re.fullmatch(r"[0-9]{4}", prefix):
            raise SettingsError(f"{where}.prefix: expected 4 digits, got {prefix!r}")
        currency = _require(table, "currency", where, str)
        if currency not in CURRENCIES:
            raise SettingsError(f"{where}.currency: expected one of {sorted(CURRENCIES)}, got {currency!r}")
        networks.append(
            Network(
                prefix=prefix,
                id=_require(table, "id", where, str),
                name=_require(table, "name", where, str),
                home=_require(table, "home", where, bool),
                currency=currency,
                points_unit=_require(table, "points_unit", where, str),
            )
        )
    if sum(n.home for n in networks) != 1:
        raise SettingsError("networks.toml: exactly one network must have home = true")
    for attr in ("prefix", "id"):
        seen = [getattr(n, attr) for n in networks]
        if len(seen) != len(set(seen)):
            raise SettingsError(f"networks.toml: network {attr} values must be unique")
    return tuple(networks)


def _merchants(doc: Mapping[str, Any]) -> tuple[Merchant, ...]:
    merchants = []
    for i, table in enumerate(doc.get("merchant", [])):
        where = f"merchants.toml merchant[{i}]"
        currency = _require(table, "currency", where, str)
        if currency not in CURRENCIES:
            raise SettingsError(f"{where}.currency: expected one of {sorted(CURRENCIES)}, got {currency!r}")
        cutoff = _require(table, "business_day_cutoff", where, str)
        if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", cutoff):
            raise SettingsError(f"{where}.business_day_cutoff: expected HH:MM, got {cutoff!r}")
        stores = tuple(
            Store(
                id=_require(s, "id", f"{where}.store[{j}]", str),
                name=_require(s, "name", f"{where}.store[{j}]", str),
                terminals=tuple(_require(s, "terminals", f"{where}.store[{j}]", list)),
            )
            for j, s in enumerate(table.get("store", []))
        )
        merchants.append(
            Merchant(
                id=_require(table, "id", where, str),
                name=_require(table, "name", where, str),
                currency=currency,
                time_zone=_require(table, "time_zone", where, str),
                business_day_cutoff=cutoff,
                receipt_width=_require(table, "receipt_width", where, int),
                stores=stores,
                fee_bp=_fee_bp(table.get("fee_bp", 0), where),
            )
        )
    return tuple(merchants)


def _fee_bp(value: Any, where: str) -> int:
    if type(value) is not int or not 0 <= value <= 10_000:
        raise SettingsError(f"{where}.fee_bp: expected whole basis points 0-10000 (150 = 1.5%), got {value!r}")
    return value


def _affiliates(doc: Mapping[str, Any]) -> tuple[Affiliate, ...]:
    affiliates = []
    for i, table in enumerate(doc.get("affiliate", [])):
        where = f"affiliates.toml affiliate[{i}]"
        affiliate_id = _require(table, "id", where, str)
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", affiliate_id):
            raise SettingsError(f"{where}.id: expected 1-40 of a-z 0-9 -, got {affiliate_id!r}")
        budget = _require(table, "budget_points", where, int)
        if not 0 <= budget <= 10**15:
            raise SettingsError(f"{where}.budget_points: expected 0 to 10^15, got {budget}")
        affiliates.append(Affiliate(affiliate_id, _require(table, "name", where, str), budget))
    return tuple(affiliates)


def _partners(doc: Mapping[str, Any], networks: tuple[Network, ...]) -> tuple[Partner, ...]:
    partners = []
    known = {n.id for n in networks if not n.home}
    for i, table in enumerate(doc.get("partner", [])):
        where = f"partners.toml partner[{i}]"
        partner_id = _require(table, "id", where, str)
        if partner_id not in known:
            raise SettingsError(f"{where}.id: {partner_id!r} is not a partner network in networks.toml ({sorted(known)})")
        base_url = _require(table, "base_url", where, str)
        if not re.match(r"^https?://[^/]+$", base_url):
            raise SettingsError(f"{where}.base_url: expected http(s)://host[:port], got {base_url!r}")
        numbers = {}
        for key, low, high in (("connect_timeout_s", 0.1, 60), ("read_timeout_s", 0.1, 120), ("concurrency_max", 1, 10_000),
                               ("circuit_failures_max", 1, 1_000), ("circuit_open_s", 0.1, 3_600)):
            value = table.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise SettingsError(f"{where}.{key}: expected a number from {low} to {high}, got {value!r}")
            numbers[key] = value
        partners.append(Partner(partner_id, base_url, float(numbers["connect_timeout_s"]), float(numbers["read_timeout_s"]),
                                int(numbers["concurrency_max"]), int(numbers["circuit_failures_max"]),
                                float(numbers["circuit_open_s"])))
    return tuple(partners)
