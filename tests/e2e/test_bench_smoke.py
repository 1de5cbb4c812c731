"""``ecrm bench ingest`` keeps working (a smoke run: it measures nothing here)."""

from __future__ import annotations

import subprocess
import sys


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
