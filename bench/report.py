"""The benchmark's arithmetic and its table. Pure: numbers in, numbers and text out.

Every throughput is reported as a ratio to the baseline measured in the same
run, in alternating rounds (gateway, baseline, gateway, ...), and each side
is the median of its rounds: on a shared machine a neighbour's burst lands
on one round of one side, and the median drops it.
"""

from __future__ import annotations

import statistics
from typing import Any, Mapping, Sequence

README_BEGIN = "<!-- bench:begin -->"
README_END = "<!-- bench:end -->"


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("a median of no rounds")
    return float(statistics.median(values))


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator else 0.0


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def _rate(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render_table(report: Mapping[str, Any]) -> str:
    """The results as a Markdown table (the README keeps the latest)."""
    r = report
    target = r.get("targets", {})
    rows = [
        ("baseline requests/s (1 worker)", _rate(r.get("baseline_rps")), "the ceiling of one Python process"),
        ("gateway authorisations/s (1 worker)", _rate(r.get("auth_rps")), ""),
        ("auth_ratio", _ratio(r.get("auth_ratio")), f"target >= {target.get('auth_ratio_min', 0.5)}, aim 0.65"),
        ("CPU per request: baseline / gateway worker / Redis (us)",
         f"{_rate(r.get('baseline_cpu_us_per_request'))} / {_rate(r.get('gateway_cpu_us_per_auth'))} / "
         f"{_rate(r.get('redis_cpu_us_per_auth'))}", "from /proc, whatever else ran"),
        ("p50 / p99 / p99.9 at 50% load (ms)",
         f"{_ms(r.get('p50_ms_at_50pct'))} / {_ms(r.get('p99_ms_at_50pct'))} / {_ms(r.get('p999_ms_at_50pct'))}",
         f"open loop at {_rate(r.get('rate_at_50pct'))}/s; target p99 <= 5, p99.9 <= 10"),
        ("p50 / p99 / p99.9 at 80% load (ms)",
         f"{_ms(r.get('p50_ms_at_80pct'))} / {_ms(r.get('p99_ms_at_80pct'))} / {_ms(r.get('p999_ms_at_80pct'))}",
         f"open loop at {_rate(r.get('rate_at_80pct'))}/s"),
        ("p50 / p99 / p99.9 at 50% load, Redis fsync once a second (ms)",
         f"{_ms(r.get('p50_ms_at_50pct_fsync_everysec'))} / {_ms(r.get('p99_ms_at_50pct_fsync_everysec'))} / "
         f"{_ms(r.get('p999_ms_at_50pct_fsync_everysec'))}", "diagnostic only: production fsyncs before every reply"),
        ("disk fdatasync of a small append p50 / p99 (ms)",
         f"{_ms(r.get('machine', {}).get('disk_fdatasync_ms_p50'))} / {_ms(r.get('machine', {}).get('disk_fdatasync_ms_p99'))}",
         "what every reply waits for with appendfsync always"),
        ("baseline p99 at the same 50% / 80% load (ms)",
         f"{_ms(r.get('baseline_p99_ms_at_50pct'))} / {_ms(r.get('baseline_p99_ms_at_80pct'))}",
         "the generator's and the machine's share"),
    ]
    if r.get("auth_ratio_1m_members") is not None:
        rows += [
            ("auth_ratio, 1,000,000 members (each payment a new member)", f"{r['auth_ratio_1m_members']:.3f}",
             f"{r.get('members_1m_over_1k', 0):.2f} of the 1,000-member ratio; target >= 0.90"),
            ("auth_ratio, 1,000,000 members (the 1,000 members pay)", f"{r.get('auth_ratio_1m_members_hot', 0):.3f}",
             f"{r.get('members_1m_hot_over_1k', 0):.2f} of the 1,000-member ratio"),
            ("1,000,000 members: new member / the 1,000 paying, same phase",
             _ratio(r.get("new_member_over_hot_1m")),
             f"CPU {_rate(r.get('gateway_cpu_us_per_auth_1m_new_member'))} / {_rate(r.get('gateway_cpu_us_per_auth_1m_hot'))} us: "
             "a device not in the worker's cache costs a round trip and a decryption"),
            ("p99 at 50% load, 1,000 / 1,000,000 members (ms)",
             f"{_ms(r.get('p99_ms_at_50pct'))} / {_ms(r.get('p99_ms_at_50pct_1m_members'))}", ""),
            ("seeding 999,000 members (s)", f"{r.get('seed_s', 0):.0f}", "enrolment scripts, pipelined"),
            ("audit with 1,000,000 members (s)", f"{r.get('audit_s_1m_members', 0):.0f}", "clean" if r.get("audit_clean") else "NOT CLEAN"),
        ]
    rows += [
        ("Redis bytes per enrolled member", _rate(r.get("redis_bytes_per_member")), "wallet + one device, as enrolled"),
        ("Redis bytes per stored payment", _rate(r.get("redis_bytes_per_payment")), "everything one approval leaves"),
    ]
    if r.get("workers2_over_1") is not None:
        rows += [
            ("gateway 2 workers / 1 worker", f"{r['workers2_over_1']:.2f}",
             f"{_rate(r.get('auth_rps_2_workers'))}/s; wrk and Redis share the 2 cores"),
            ("baseline 2 workers / 1 worker", f"{r.get('baseline_workers2_over_1', 0):.2f}", ""),
        ]
    if r.get("cluster3_over_1") is not None:
        workers = r.get("options", {}).get("workers", 1)
        rows += [
            (f"gateway on a 3-primary cluster / on 1 Redis ({workers} worker{'s' if workers != 1 else ''})",
             f"{r['cluster3_over_1']:.2f}", f"{_rate(r.get('auth_rps_cluster3'))}/s against "
             f"{_rate(r.get('auth_rps_1_redis_cluster_phase'))}/s; three round trips a sale, all 6 nodes on these cores"),
            ("CPU per authorisation, 1 Redis / cluster: gateway worker, Redis (us)",
             f"{_rate(r.get('gateway_cpu_us_per_auth_1_redis_cluster_phase'))} / {_rate(r.get('gateway_cpu_us_per_auth_cluster3'))}, "
             f"{_rate(r.get('redis_cpu_us_per_auth_1_redis_cluster_phase'))} / {_rate(r.get('redis_cpu_us_per_auth_cluster3'))}",
             "the cluster's Redis CPU summed over its 6 nodes"),
        ]
    rows.append(("checks", "passed" if r.get("passed") else "FAILED",
                 f"{r.get('approved_total', 0):,} approvals, each counted by wrk and found in the gateway"))
    lines = ["| measure | value | note |", "|---|---:|---|"]
    lines += [f"| {name} | {value} | {note} |" for name, value, note in rows]
    machine = r.get("machine", {})
    versions = r.get("versions", {})
    lines += ["", f"{r.get('date', '')}, {machine.get('cpu', '')} ({machine.get('cores', '')} cores, "
              f"{machine.get('memory_gib', '')} GiB), load average {machine.get('load_average_start', '')} at the start; "
              f"Python {versions.get('python', '')}, aiohttp {versions.get('aiohttp', '')}, "
              f"redis-py {versions.get('redis_py', '')}, Redis {versions.get('redis_server', '')}, "
              f"{versions.get('wrk', '')}; `make bench` took {r.get('duration_s', 0):.0f} s."]
    return "\n".join(lines)


def replace_readme_block(readme: str, table: str) -> str:
    """The README with the text between the bench markers replaced by `table`."""
    begin = readme.index(README_BEGIN) + len(README_BEGIN)
    end = readme.index(README_END, begin)
    return readme[:begin] + "\n" + table + "\n" + readme[end:]
