"""Every ``ecrm bench`` command keeps working (smoke runs: nothing is measured here)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def bench(*args: str) -> tuple[str, list[str]]:
    """Run ``ecrm bench ARGS``; its table's header line and the cells of its last row."""
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    header, row = result.stdout.strip().splitlines()[-2:]
    return header, row.split()


def test_bench_ingest_runs_end_to_end_on_sqlite() -> None:
    header, row = bench("ingest", "--events", "400", "--backend", "sqlite")
    assert "e2e ev/s" in header and "raw insert ev/s" in header
    assert "api cpu µs/ev" in header and "worker cpu µs/ev" in header
    backend, events, e2e, ingest, raw, ratio, api_cpu, worker_cpu = row
    assert (backend, events) == ("sqlite", "400")
    assert float(e2e) > 0 and float(ingest) > 0 and float(raw) > 0 and ratio.endswith("%")
    assert float(api_cpu) > 0 and float(worker_cpu) > 0


@pytest.mark.parametrize("mode", ["validate", "spool"])
def test_bench_http_runs_against_hub_and_parse_only_app(mode: str) -> None:
    header, row = bench("http", "--seconds", "1", "--ingest-mode", mode)
    assert "hub ev/s" in header and "parse-only ev/s" in header
    backend, shown_mode, per_request, hub_rps, hub_eps, parse_rps, parse_eps, ratio = row
    assert (backend, shown_mode, per_request) == ("sqlite", mode, "100")
    assert float(hub_rps) > 0 and float(parse_rps) > 0 and ratio.endswith("%")
    assert float(hub_eps) == pytest.approx(float(hub_rps) * 100, rel=0.01, abs=100)
    assert float(parse_eps) == pytest.approx(float(parse_rps) * 100, rel=0.01, abs=100)


def test_bench_pos_import_runs() -> None:
    header, row = bench("pos-import", "--rows", "2000")
    assert "import rows/s" in header and "raw insert rows/s" in header
    backend, rows, transactions, rate, per_transaction, raw, ratio, rss = row
    assert (backend, rows) == ("sqlite", "2000") and 0 < int(transactions) <= 2000
    assert float(rate) > 0 and float(per_transaction) > 0 and float(raw) > 0
    assert ratio.endswith("%") and float(rss) > 0
