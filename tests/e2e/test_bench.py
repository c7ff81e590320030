"""`make bench` in seconds: it runs, every request is a real authorisation, the counts match
(on the one Redis and, where wrk is installed, on the embedded 3-primary cluster).

No speed is asserted. The wrk rounds run where wrk is installed (a Debian
package, not a pip one); elsewhere the same rounds run with the open-loop
generator, which needs nothing but the venv, and the latency rounds always do.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from bench import store_calls
from bench.run import SMOKE, Options, run_bench, write_outputs

pytestmark = pytest.mark.slow

REPORT_KEYS = ("baseline_rps", "auth_rps", "auth_ratio", "p50_ms_at_50pct", "p99_ms_at_50pct", "p999_ms_at_50pct",
               "p99_ms_at_80pct", "redis_bytes_per_member", "redis_bytes_per_payment", "machine", "versions")


async def test_smoke_every_answer_counted_is_one_approval_at_the_gateway(tmp_path: Path):
    """Each round's 2xx answers equal the approved payments the gateway holds for its orders and its
    journal entries; bulk-seeded members pay like enrolled ones; the audit is clean."""
    wrk = shutil.which("wrk") is not None
    options = dataclasses.replace(Options(**SMOKE), out_dir=str(tmp_path / "bench"), use_wrk=wrk)
    out = await run_bench(options, tmp_path)
    assert out["problems"] == []
    gateway_rounds = [r for r in out["rounds"] if r["approved_in_gateway"] is not None]
    assert {r["kind"] for r in gateway_rounds} == ({"wrk", "openloop"} if wrk else {"openloop"})
    assert all(r["approved_in_gateway"] == r["load"]["answered_2xx"] == r["journal_entries"] > 0 for r in gateway_rounds)
    assert out["audit_clean"] is True and out["audit_members"] == options.big_members
    assert out["auth_rps_seeded_members"] > 0
    if wrk:  # the cluster phase is wrk rounds only
        cluster_rounds = [r for r in gateway_rounds if r["target"].endswith(", cluster")]
        assert (1, True) == (len(cluster_rounds), out["cluster_audit_clean"])
        assert out["cluster3_over_1"] > 0
    write_outputs(out, options, tmp_path)
    written = json.loads((tmp_path / "bench" / "report.json").read_text())
    assert all(key in written for key in REPORT_KEYS)
    assert "| auth_ratio |" in (tmp_path / "bench" / "table.md").read_text()


async def test_store_calls_measures_every_path_on_a_real_script(redis_server):
    """bench.store_calls: each path ran the script (its answer checked first) and was measured."""
    results = await store_calls.run(redis_server.url, calls=200, concurrency=8)
    assert set(results) == {"redis-py", "pool", "multiplexed"}
    assert all(cpu > 0 and rate > 0 for cpu, rate in results.values())
