"""``ecrm bench ingest`` and ``ecrm bench http`` keep working (smoke runs: nothing measured)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_bench_ingest_runs_end_to_end_on_sqlite() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "workers.cli",
            "bench",
            "ingest",
            "--events",
            "400",
            "--backend",
            "sqlite",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    header, row = result.stdout.strip().splitlines()[-2:]
    assert "e2e ev/s" in header and "raw insert ev/s" in header
    assert "api cpu µs/ev" in header and "worker cpu µs/ev" in header
    backend, events, e2e, ingest, raw, ratio, api_cpu, worker_cpu = row.split()
    assert (backend, events) == ("sqlite", "400")
    assert float(e2e) > 0 and float(ingest) > 0 and float(raw) > 0 and ratio.endswith("%")
    assert float(api_cpu) > 0 and float(worker_cpu) > 0


def test_bench_http_runs_against_hub_and_parse_only_app() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "bench", "http", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    header, row = result.stdout.strip().splitlines()[-2:]
    assert "hub ev/s" in header and "parse-only ev/s" in header
    backend, per_request, hub_rps, hub_eps, parse_rps, parse_eps, ratio = row.split()
    assert (backend, per_request) == ("sqlite", "100")
    assert float(hub_rps) > 0 and float(parse_rps) > 0 and ratio.endswith("%")
    assert float(hub_eps) == pytest.approx(float(hub_rps) * 100, rel=0.01, abs=100)
    assert float(parse_eps) == pytest.approx(float(parse_rps) * 100, rel=0.01, abs=100)
