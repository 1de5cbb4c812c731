"""``ecrm bench ingest``: events/s from HTTP batch to processed profiles, beside the ceiling.

Why measured this way: the number users care about is how fast a touchpoint sent over HTTP
becomes part of a profile, with API and worker as the separate processes production runs.
The reference is the raw batched-insert rate of the same database in the same run (the
most the database can take with no API, broker or logic at all), so the ratio says how
much of the database's capacity the whole pipeline turns into processed events.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import requests
from psycopg import sql

from pipeline import Database
from pipeline.events import status_counts
from pipeline.models import EVENTS
from pipeline.schema import upgrade

#: Throw-away credentials of the benchmark's private, temporary hub.
WRITE_KEY = "wk_bench_0123456789"
ADMIN_TOKEN = "adm_bench_0123456789"  # noqa: S105
PER_REQUEST = 100


@dataclass(frozen=True)
class BenchResult:
    """One backend's figures."""

    backend: str
    events: int
    end_to_end_per_s: float
    ingest_per_s: float
    raw_insert_per_s: float
    #: CPU microseconds per event spent by the API and by the worker processes: a figure
    #: that, unlike events/s, does not move when something else shares the machine
    api_cpu_us: float = 0.0
    worker_cpu_us: float = 0.0

    @property
    def ratio(self) -> float:
        return self.end_to_end_per_s / self.raw_insert_per_s


def _bodies(events: int, users: int, seed: str) -> list[bytes]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    bodies = []
    for first in range(0, events, PER_REQUEST):
        batch = [
            {
                "type": "track",
                "event": "Order Completed",
                "userId": f"user-{n % users}",
                "messageId": f"{seed}-{n}",
                "timestamp": (start + timedelta(seconds=n)).isoformat(),
                "properties": {"total": n % 500, "currency": "EUR", "sku": f"SKU-{n % 97}"},
                "context": {"ip": "203.0.113.7", "userAgent": "bench/1.0"},
            }
            for n in range(first, min(first + PER_REQUEST, events))
        ]
        bodies.append(orjson.dumps({"batch": batch}))
    return bodies


def raw_insert_rate(database_url: str, events: int) -> float:
    """Batched Core inserts of event rows (500 per transaction) into a fresh events table."""
    db = Database.connect(database_url)
    upgrade(db)
    now = datetime.now(UTC)

    def rows(first: int) -> list[dict[str, Any]]:
        return [
            {
                "workspace_id": "default",
                "message_id": f"raw-{n}",
                "channel": "web",
                "type": "order.completed",
                "occurred_at": now,
                "received_at": now,
                "source": "bench",
                "identifiers": {"user_id": f"user-{n % 1000}"},
                "traits": {},
                "properties": {"total": n % 500, "currency": "EUR", "sku": f"SKU-{n % 97}"},
                "context": {"ip": "203.0.113.7", "userAgent": "bench/1.0"},
                "batch_id": 1 + n // 500,
            }
            for n in range(first, min(first + 500, events))
        ]

    # Rows are built per transaction, outside the timing: a million at once would need GBs.
    elapsed = 0.0
    for first in range(0, events, 500):
        chunk = rows(first)
        started = time.perf_counter()
        with db.write() as session:
            session.execute(EVENTS.insert(), chunk)
        elapsed += time.perf_counter() - started
    db.dispose()
    return events / elapsed


def _processed(db: Database) -> int:
    with db.read() as session:
        return status_counts(session)["processed"]


def _wait_healthy(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"hub at {base} did not become healthy")


def _send_all(base: str, bodies: list[bytes], clients: int) -> None:
    errors: list[str] = []

    def send(part: list[bytes]) -> None:
        with requests.Session() as http:
            http.auth = (WRITE_KEY, "")
            for body in part:
                response = http.post(
                    f"{base}/v1/batch",
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=60,
                )
                if response.status_code != 200:
                    errors.append(response.text)

    threads = [threading.Thread(target=send, args=(bodies[i::clients],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} ingest requests failed: {errors[0][:300]}")


def run_pipeline(
    backend: str,
    database_url: str,
    broker_url: str,
    events: int,
    clients: int,
    worker_concurrency: int | None = None,
    ingest_mode: str = "validate",
) -> BenchResult:
    """Start API + worker for one backend, send ``events`` over HTTP, time until processed."""
    home = Path(tempfile.mkdtemp(prefix="ecrm-bench-"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECRM_")}
    env.update(
        ECRM_HOME=str(home),
        ECRM_DATABASE_URL=database_url,
        ECRM_BROKER_URL=broker_url,
        ECRM_WRITE_KEYS=WRITE_KEY,
        ECRM_ADMIN_TOKEN=ADMIN_TOKEN,
        ECRM_HTTP_PORT=str(port),
        ECRM_LOG_LEVEL="WARNING",
        ECRM_INGEST_MODE=ingest_mode,
    )
    if worker_concurrency is not None:  # else the hub's default: one per core, up to 4
        env["ECRM_WORKER_CONCURRENCY"] = str(worker_concurrency)
    db = Database.connect(database_url)
    upgrade(db)
    bodies = _bodies(events, users=max(events // 10, 1), seed=uuid.uuid4().hex[:8])
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *args],
            env=env,
            stdout=(home / f"{args[0]}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for args in (("serve",), ("worker", "--beat"))
    ]
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base)
        cpu_before = [_tree_cpu_seconds(proc.pid) for proc in procs]
        started = time.perf_counter()
        _send_all(base, bodies, clients)
        ingested = time.perf_counter() - started
        deadline = time.monotonic() + 600
        while _processed(db) < events:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {_processed(db)} of {events} processed in 600 s")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        cpu = [
            _tree_cpu_seconds(p.pid) - before for p, before in zip(procs, cpu_before, strict=True)
        ]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        db.dispose()
        shutil.rmtree(home, ignore_errors=True)
    api_us, worker_us = (seconds * 1e6 / events for seconds in cpu)
    return BenchResult(backend, events, events / elapsed, events / ingested, 0.0, api_us, worker_us)


def _tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (Linux ``/proc``)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree, frontier = {pid}, {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - tree
        tree |= frontier
    return sum(ticks.get(member, 0) for member in tree) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str]:
    """A temporary PostgreSQL database (created and dropped through ``admin_url``)."""
    name = f"ecrm_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def scratch_sqlite() -> Iterator[tuple[str, str]]:
    """A temporary SQLite database and embedded broker file."""
    folder = Path(tempfile.mkdtemp(prefix="ecrm-bench-db-"))
    try:
        yield f"sqlite:///{folder / 'hub.sqlite'}", f"sqla+sqlite:///{folder / 'broker.sqlite'}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def bench_backend(
    backend: str,
    events: int,
    clients: int,
    pg_admin_url: str,
    broker_url: str | None,
    worker_concurrency: int | None = None,
    ingest_mode: str = "validate",
) -> BenchResult:
    """End-to-end and raw-insert figures for one backend, measured in this run."""
    if backend == "sqlite":
        with scratch_sqlite() as (db_url, broker):
            e2e = run_pipeline(
                backend, db_url, broker, events, clients, worker_concurrency, ingest_mode
            )
        with scratch_sqlite() as (db_url, _):
            raw = raw_insert_rate(db_url, events)
    else:
        if broker_url is None:
            raise ValueError(f"{backend} needs a broker URL")
        with scratch_postgres(pg_admin_url) as db_url:
            e2e = run_pipeline(
                backend, db_url, broker_url, events, clients, worker_concurrency, ingest_mode
            )
        with scratch_postgres(pg_admin_url) as db_url:
            raw = raw_insert_rate(db_url, events)
    return BenchResult(
        backend,
        events,
        e2e.end_to_end_per_s,
        e2e.ingest_per_s,
        raw,
        e2e.api_cpu_us,
        e2e.worker_cpu_us,
    )


__all__ = ["BenchResult", "bench_backend", "raw_insert_rate", "run_pipeline"]
