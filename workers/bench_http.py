"""``ecrm bench http``: HTTP ingest through ``/v1/batch`` beside a parse-only ceiling.

Why measured this way: wrk (a C load generator, so the client costs little CPU) sends the
same Segment batches, each event with a fresh ``messageId``, first to the hub's API
(``ecrm serve``: authenticate, parse, map, validate, normalize and durably append to the
event log) and then to a uvicorn app that only parses the JSON and answers 200
(:mod:`workers.bench_parse_app`). Both run alone on the machine in turn, with the same
uvicorn options; the ratio says how much of what the HTTP stack alone could take the hub
turns into stored events. The worker is not running, so only ingest is measured.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from workers.bench import (
    ADMIN_TOKEN,
    WRITE_KEY,
    _free_port,
    _wait_healthy,
    scratch_postgres,
    scratch_sqlite,
)

_LUA = r"""
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  n = 0
  run = args[1]
  per = tonumber(args[2])
  users = tonumber(args[3])
  auth = args[4]
end
function request()
  n = n + 1
  local parts = {}
  for i = 1, per do
    parts[i] = string.format(
      '{"type":"track","event":"Order Completed","userId":"user-%d",' ..
      '"messageId":"%s-%d-%d-%d","timestamp":"2026-01-01T10:00:00.000Z",' ..
      '"properties":{"total":%d,"currency":"EUR","sku":"SKU-%d"},' ..
      '"context":{"ip":"203.0.113.7","userAgent":"bench/1.0"}}',
      (n * per + i) % users, run, tid, n, i, i % 500, i % 97)
  end
  local body = '{"batch":[' .. table.concat(parts, ",") .. ']}'
  return wrk.format("POST", "/v1/batch",
    {["Content-Type"] = "application/json", ["Authorization"] = auth}, body)
end
"""


@dataclass(frozen=True)
class HttpBenchResult:
    """Requests/s of the hub and of the parse-only app under the same load."""

    backend: str
    per_request: int
    ingest_mode: str
    hub_requests_per_s: float
    parse_only_requests_per_s: float

    @property
    def hub_events_per_s(self) -> float:
        return self.hub_requests_per_s * self.per_request

    @property
    def parse_only_events_per_s(self) -> float:
        return self.parse_only_requests_per_s * self.per_request

    @property
    def ratio(self) -> float:
        return self.hub_requests_per_s / self.parse_only_requests_per_s


def _wrk(url: str, script: Path, seconds: int, connections: int, args: list[str]) -> float:
    """Run wrk; returns requests/s, refusing a run with any non-2xx answer."""
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url, "--", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    if bad:
        raise RuntimeError(f"{bad.group(1)} requests failed against {url}:\n{result.stdout}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if not found:
        raise RuntimeError(f"unexpected wrk output:\n{result.stdout}")
    return float(found.group(1))


def _serve(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", *args], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait_port(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.post(url, data=b"{}", timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def bench_http(
    backend: str,
    *,
    seconds: int,
    connections: int,
    per_request: int,
    pg_admin_url: str,
    ingest_mode: str = "validate",
) -> HttpBenchResult:
    """Measure hub and parse-only app in turn, under identical wrk load.

    ``ingest_mode``: the hub's ``ECRM_INGEST_MODE`` (``spool`` stores each request after a
    check of its messages' shape; see :mod:`pipeline.spool`).
    """
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="ecrm-bench-http-"))
    script = work / "batch.lua"
    script.write_text(_LUA)
    auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    wrk_args = [os.urandom(4).hex(), str(per_request), "5000", auth]
    try:
        with _database(backend, pg_admin_url) as database_url:
            port = _free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("ECRM_")}
            env.update(
                ECRM_HOME=str(work / "home"),
                ECRM_DATABASE_URL=database_url,
                ECRM_BROKER_URL=f"sqla+sqlite:///{work / 'broker.sqlite'}",
                ECRM_WRITE_KEYS=WRITE_KEY,
                ECRM_ADMIN_TOKEN=ADMIN_TOKEN,
                ECRM_HTTP_PORT=str(port),
                ECRM_LOG_LEVEL="WARNING",
                ECRM_INGEST_MODE=ingest_mode,
            )
            hub = _serve(["workers.cli", "serve"], env, work / "serve.log")
            try:
                _wait_healthy(f"http://127.0.0.1:{port}")
                url = f"http://127.0.0.1:{port}"
                _wrk(url, script, 2, connections, wrk_args)  # warm-up
                hub_rps = _wrk(url, script, seconds, connections, wrk_args)
            finally:
                _stop(hub)
        port = _free_port()
        parse_only = _serve(["workers.bench_parse_app", str(port)], env, work / "parse.log")
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_port(url)
            _wrk(url, script, 2, connections, wrk_args)
            parse_rps = _wrk(url, script, seconds, connections, wrk_args)
        finally:
            _stop(parse_only)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return HttpBenchResult(backend, per_request, ingest_mode, hub_rps, parse_rps)


@contextmanager
def _database(backend: str, pg_admin_url: str) -> Iterator[str]:
    """A scratch database URL for the backend, removed afterwards."""
    if backend == "postgres":
        with scratch_postgres(pg_admin_url) as url:
            yield url
    else:
        with scratch_sqlite() as (url, _):
            yield url


__all__ = ["HttpBenchResult", "bench_http"]
