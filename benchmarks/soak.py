"""Soak benchmark: a hub under a steady, realistic load for a long time (not a test).

    .venv/bin/python -m benchmarks.soak --minutes 30 --rate 400 --backend postgres+rabbitmq
    .venv/bin/python -m benchmarks.soak --minutes 30 --backend postgres+redis
    .venv/bin/python -m benchmarks.soak --minutes 10 --backend sqlite      (``ecrm run``)

Why: ``ecrm bench ingest`` and the fault tests measure minutes at most, as fast as the
hub goes. What they cannot show is what an operator sees after hours at an ordinary
load: memory that creeps up (a cache, a leak in a long-lived process, the Celery pool),
a queue that falls a little further behind every minute, sweeps or scrapes that get
slower as the tables grow. A soak sends a *fixed* rate, well under the hub's capacity,
for a long time, and watches memory and lag stay flat or not.

How: the benchmark makes its own PostgreSQL database (``scratch_postgres`` of
``ecrm bench``) and RabbitMQ virtual host or Redis database number (or, for ``sqlite``,
a fresh ``ECRM_HOME``), starts the hub's own processes as production runs them
(``ecrm serve``, ``ecrm worker``, ``ecrm worker --webhooks``, ``ecrm scheduler``; on
``sqlite`` the one ``ecrm run`` that starts them all), with their logs in a temporary
folder, and applies the fault tests' rules (a point per euro on every order, a tag on
every buyer) through ``PUT /v1/rules``. A webhook endpoint for ``profile.created`` and
``loyalty.tier_changed`` points at a receiver in this process (``--no-webhook``: none).

One sender thread follows a clock: every ``--interval`` seconds it sends what the rate
says is due by then, Segment messages in one ``POST /v1/batch`` (HTTP Basic write key)
and shop sales in one ``POST /v1/pos/transactions``. If a request takes longer than an
interval the next one goes out late, with what became due meanwhile (so the rate holds
on average), and the lateness is recorded. The stream is spread over ``--customers``
people: page views (65 %), ``Order Completed`` (15 %) and ``identify`` calls (15 %) on
the web under a user id, and POS sales (5 %) that know only the customer's email, so
identity must merge them into the web profile once the customer has identified. Every
message has a unique ``messageId``; a request that fails is sent again unchanged
(idempotent) a few times.

Every ``--sample-seconds`` (30) a sampler writes one CSV row: per process the RSS
(``VmRSS`` of the process and all its descendants, e.g. the Celery prefork pool; RSS
counts pages shared by forked children once per child, so PSS from ``smaps_rollup`` is
written beside it) and CPU seconds, and from ``GET /metrics`` the events accepted by the
API, processed and failed, the lag (accepted - processed - failed: events in the log
not yet in a profile), ``ecrm_queue_lag_seconds`` (age of the oldest unprocessed batch)
and the sender's own figures. After the run the benchmark waits (``--drain-timeout``)
for the backlog to drain and prints a summary: events sent, processed, failed, the
achieved rate, per process the RSS after warm-up and at the end and its growth in MB per
hour (least-squares slope over the samples after warm-up), lag in the first and last
third of the run, and the drain time. It exits 1 when events were lost (processed +
failed != sent after the drain), then removes processes, database and virtual host (or
Redis database); logs and CSV stay.

Reading it: the first minutes are not the steady state. Until most of the pool has been
seen, nearly every event creates a profile (and a ``profile.created`` delivery), which
costs the worker several times what an event for a known customer does, so the lag of
the first third can be large and still drain; memory and lag of the last third are the
figures that tell whether the hub holds the rate. On a shared machine, compare the CPU
per event and the load average column before blaming the hub for a slow phase.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import redis
import requests

from workers.bench import _free_port, _tree_cpu_seconds, _wait_healthy, scratch_postgres
from workers.process import _die_with_parent

PG_ADMIN_URL = os.environ.get("ECRM_SOAK_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBIT_URL = os.environ.get("ECRM_SOAK_RABBIT", "amqp://guest:guest@127.0.0.1:5672")
REDIS_URL = os.environ.get("ECRM_SOAK_REDIS", "redis://127.0.0.1:6379")
BACKENDS = ("postgres+rabbitmq", "postgres+redis", "sqlite")
#: the rules of the fault scenarios (tests/faults/mixed_stream.py)
RULES = {
    "rules": [
        {
            "id": "points",
            "name": "a point per euro",
            "trigger": {"types": ["order.completed"]},
            "actions": [{"type": "award_points", "per_property": "total"}],
        },
        {
            "id": "buyer",
            "name": "tag buyers",
            "trigger": {"types": ["order.completed"]},
            "actions": [{"type": "add_tag", "tag": "buyer"}],
        },
    ]
}
WEBHOOK_EVENTS = ["profile.created", "loyalty.tier_changed"]
#: the hub's limits per request (workers.api.MAX_BATCH_MESSAGES, connectors.pos.http)
MAX_BATCH = 2500
MAX_TRANSACTIONS = 1000
PAGES = [("/", "Home"), ("/sale", "Sale"), ("/cart", "Cart"), ("/help", "Help")]
PAGES += [(f"/products/sku-{n}", f"Product {n}") for n in range(40)]
STORES = [f"S{n}" for n in range(1, 13)]
MB = 1024 * 1024


# --------------------------------------------------------------------------- the stream


class Stream:
    """The mixed stream: web messages and shop sales over a pool of customers."""

    def __init__(self, customers: int, seed: int, tag: str) -> None:
        self.customers = customers
        self.rng = random.Random(seed)
        self.tag = tag
        self.seq = 0

    def _customer(self) -> tuple[str, str]:
        n = self.rng.randrange(self.customers)
        return f"soak-{self.tag}-{n}", f"Soak.{n}.{self.tag}@Example.com"

    def _next_id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}-{self.tag}-{self.seq}"

    def take(self, count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``count`` new events: (Segment messages, POS transactions)."""
        web: list[dict[str, Any]] = []
        pos: list[dict[str, Any]] = []
        now = datetime.now(UTC).isoformat()
        for _ in range(count):
            user, email = self._customer()
            draw = self.rng.random()
            context = {
                "ip": f"203.0.113.{self.rng.randrange(1, 255)}",
                "userAgent": "Mozilla/5.0 (X11; Linux x86_64) soak/1.0",
                "library": {"name": "analytics.js", "version": "2.11.1"},
            }
            if draw < 0.05:
                total = self.rng.randint(5, 150)
                pos.append(
                    {
                        "transaction_id": self._next_id("t"),
                        "store_id": self.rng.choice(STORES),
                        "occurred_at": now,
                        "currency": "EUR",
                        "totals": {"subtotal": total, "total": total},
                        "items": [{"name": "Mug", "unit_price": total}],
                        "customer": {"email": email},
                    }
                )
            elif draw < 0.20:
                first, last = self.rng.choice(["Ada", "Grace", "Alan", "Edsger"]), user[-5:]
                web.append(
                    {
                        "type": "identify",
                        "userId": user,
                        "messageId": self._next_id("i"),
                        "timestamp": now,
                        "traits": {"email": email, "firstName": first, "lastName": last},
                        "context": context,
                    }
                )
            elif draw < 0.35:
                lines = self.rng.randint(1, 3)
                products = [
                    {"sku": f"SKU-{self.rng.randrange(500)}", "price": self.rng.randint(5, 80)}
                    for _ in range(lines)
                ]
                web.append(
                    {
                        "type": "track",
                        "event": "Order Completed",
                        "userId": user,
                        "messageId": self._next_id("o"),
                        "timestamp": now,
                        "properties": {
                            "order_id": f"web-{self.seq}",
                            "total": sum(p["price"] for p in products),
                            "currency": "EUR",
                            "products": products,
                        },
                        "context": context,
                    }
                )
            else:
                path, title = self.rng.choice(PAGES)
                web.append(
                    {
                        "type": "page",
                        "name": title,
                        "userId": user,
                        "messageId": self._next_id("p"),
                        "timestamp": now,
                        "properties": {
                            "path": path,
                            "title": title,
                            "url": f"https://shop.example.com{path}",
                            "referrer": "https://www.example.org/",
                        },
                        "context": context,
                    }
                )
        return web, pos


# --------------------------------------------------------------------------- the sender


@dataclass
class SenderStats:
    """What the sender did; read by the sampler under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    generated: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    unsent: int = 0  # events in requests that failed every try
    requests: int = 0
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # this sample window's
    all_latencies: list[float] = field(default_factory=list)
    late_ticks: int = 0  # ticks that began more than one interval after their time
    max_lateness: float = 0.0  # this sample window's
    worst_lateness: float = 0.0
    began: float = 0.0
    finished: float = 0.0

    @property
    def sent(self) -> int:
        """Events the hub holds by its answers: a re-sent request answers duplicates."""
        return self.accepted + self.duplicates


class Sender:
    """Sends what is due every ``interval`` seconds at ``rate`` events/s for ``seconds``."""

    def __init__(
        self,
        base: str,
        write_key: str,
        stream: Stream,
        rate: float,
        seconds: float,
        interval: float,
    ) -> None:
        self.base = base
        self.stream = stream
        self.rate = rate
        self.seconds = seconds
        self.interval = interval
        self.stats = SenderStats()
        self.http = requests.Session()
        self.http.auth = (write_key, "")
        self.http.trust_env = False
        self.stop = threading.Event()

    def run(self) -> None:
        stats = self.stats
        planned = round(self.rate * self.seconds)
        start = stats.began = stats.began or time.monotonic()
        tick = 0
        while not self.stop.is_set():
            at = start + tick * self.interval
            if at >= start + self.seconds:
                break
            now = time.monotonic()
            if now < at:
                self.stop.wait(at - now)
                if self.stop.is_set():
                    break
            else:
                late = now - at
                with stats.lock:
                    stats.max_lateness = max(stats.max_lateness, late)
                    stats.worst_lateness = max(stats.worst_lateness, late)
                    stats.late_ticks += late > self.interval
            tick += 1
            due = min(round(self.rate * tick * self.interval), planned)
            count = due - stats.generated
            if count <= 0:
                continue
            web, pos = self.stream.take(count)
            with stats.lock:
                stats.generated += count
            for first in range(0, len(web), MAX_BATCH):
                part = web[first : first + MAX_BATCH]
                self._post("/v1/batch", {"batch": part}, len(part))
            for first in range(0, len(pos), MAX_TRANSACTIONS):
                part = pos[first : first + MAX_TRANSACTIONS]
                self._post("/v1/pos/transactions", {"transactions": part}, len(part))
        stats.finished = time.monotonic()

    def _post(self, path: str, body: dict[str, Any], count: int) -> None:
        data = orjson.dumps(body)
        stats = self.stats
        for attempt in range(6):
            if attempt:
                with stats.lock:
                    stats.retries += 1
            began = time.monotonic()
            try:
                answer = self.http.post(
                    self.base + path,
                    data=data,
                    headers={"Content-Type": "application/json"},
                    timeout=60,
                )
            except requests.RequestException as exc:
                with stats.lock:
                    stats.errors[type(exc).__name__] += 1
                time.sleep(min(2**attempt, 10))
                continue
            took = time.monotonic() - began
            with stats.lock:
                stats.requests += 1
                stats.latencies.append(took)
                stats.all_latencies.append(took)
            if answer.status_code == 200:
                found = answer.json()
                with stats.lock:
                    stats.accepted += int(found["accepted"])
                    stats.duplicates += int(found["duplicates"])
                    stats.rejected += len(found["rejected"])
                    for item in found["rejected"][:3]:
                        stats.errors[f"rejected: {item.get('reason', '')[:80]}"] += 1
                return
            with stats.lock:
                stats.errors[f"HTTP {answer.status_code}"] += 1
            if answer.status_code not in (429, 500, 502, 503, 504):
                with stats.lock:
                    stats.errors[f"HTTP {answer.status_code}: {answer.text[:120]}"] += 1
                    stats.rejected += count
                return
            wait = answer.headers.get("Retry-After", "")
            time.sleep(float(wait) if wait.replace(".", "", 1).isdigit() else min(2**attempt, 10))
        with stats.lock:
            stats.unsent += count


# --------------------------------------------------------------------------- webhook receiver


class Receiver:
    """A local webhook receiver: answers 204 and counts deliveries by type."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        lock = threading.Lock()
        counts = self.counts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    kind = str(orjson.loads(body).get("type", "?"))
                except orjson.JSONDecodeError:
                    kind = "unreadable"
                with lock:
                    counts[kind] += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def received(self) -> int:
        return sum(self.counts.values())


# --------------------------------------------------------------------------- backends


@contextmanager
def rabbit_vhost() -> Iterator[str]:
    """A new RabbitMQ virtual host (``rabbitmqctl``) for the run, deleted afterwards."""
    vhost = f"soak_{secrets.token_hex(5)}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    try:
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )
        yield f"{RABBIT_URL}/{vhost}"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)


@contextmanager
def redis_database() -> Iterator[str]:
    """An empty Redis database number, claimed as the test fixtures claim theirs."""
    for number in range(1, 16):
        probe = redis.Redis.from_url(f"{REDIS_URL}/{number}")
        if probe.dbsize() == 0 and probe.set("ecrm:test:lock", "soak", nx=True, ex=86400):
            break
        probe.close()
    else:
        raise SystemExit("no free Redis database number (1-15)")
    try:
        yield f"{REDIS_URL}/{number}"
    finally:
        probe.flushdb()
        probe.close()


def backend_urls(backend: str, stack: ExitStack) -> dict[str, str]:
    """``ECRM_DATABASE_URL`` and ``ECRM_BROKER_URL`` of fresh backends, removed when
    ``stack`` closes (none for sqlite: the embedded default in the run's ``ECRM_HOME``)."""
    if backend == "sqlite":
        return {}
    database = stack.enter_context(scratch_postgres(PG_ADMIN_URL))
    broker = rabbit_vhost() if backend.endswith("rabbitmq") else redis_database()
    return {"ECRM_DATABASE_URL": database, "ECRM_BROKER_URL": stack.enter_context(broker)}


# --------------------------------------------------------------------------- processes


@dataclass
class Hub:
    """The hub's processes for one run, their logs in ``home``."""

    home: Path
    env: dict[str, str]
    port: int
    write_key: str
    admin_token: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, role: str, *args: str) -> None:
        log = (self.home / f"{role}.log").open("ab")
        self.processes[role] = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # a killed benchmark leaves no hub behind
        )
        log.close()

    def roles(self) -> dict[str, tuple[int, bool]]:
        """Role -> (pid, whole tree?). ``ecrm run``'s children are roles of their own."""
        found = {role: (p.pid, True) for role, p in self.processes.items() if role != "run"}
        run = self.processes.get("run")
        if run is not None:
            found["run"] = (run.pid, False)
            children = _children(run.pid)
            for pid, cmdline in children.items():
                args = cmdline.split("workers.cli", 1)[-1].split()
                if args[:2] == ["worker", "--webhooks"]:
                    found["webhooks"] = (pid, True)
                elif args:
                    found[args[0]] = (pid, True)
        return found

    def dead(self) -> dict[str, int]:
        return {r: code for r, p in self.processes.items() if (code := p.poll()) is not None}

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 45
        for process in self.processes.values():
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, user + system ticks) of a live process, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _parents() -> dict[int, int]:
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            found[int(entry.name)] = stat[0]
    return found


def _children(pid: int) -> dict[int, str]:
    """Direct children of ``pid``: pid -> command line."""
    found: dict[int, str] = {}
    for child, parent in _parents().items():
        if parent == pid:
            try:
                raw = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            found[child] = raw.replace(b"\0", b" ").decode(errors="replace")
    return found


def _tree(pid: int, parents: dict[int, int]) -> set[int]:
    tree, frontier = {pid}, {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - tree
        tree |= frontier
    return tree


def _memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, Pss) in kB of one process; zeros if it is gone."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, pss


def role_usage(hub: Hub) -> dict[str, tuple[float, float, float]]:
    """Role -> (RSS MB, PSS MB, CPU seconds), each summed over the process's tree."""
    parents = _parents()
    found: dict[str, tuple[float, float, float]] = {}
    for role, (pid, whole) in hub.roles().items():
        members = _tree(pid, parents) if whole else {pid}
        rss = pss = 0
        for member in members:
            one_rss, one_pss = _memory_kb(member)
            rss, pss = rss + one_rss, pss + one_pss
        if whole:
            cpu = _tree_cpu_seconds(pid)
        else:
            stat = _proc_stat(pid)
            cpu = stat[1] / os.sysconf("SC_CLK_TCK") if stat else 0.0
        found[role] = (rss / 1024, pss / 1024, cpu)
    return found


# --------------------------------------------------------------------------- sampling

_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", re.MULTILINE)


def read_metrics(base: str) -> dict[str, float]:
    """The hub's Prometheus metrics, labels folded in (``name{labels}`` -> value)."""
    text = requests.get(f"{base}/metrics", timeout=30).text
    return {name + (labels or ""): float(value) for name, labels, value in _SAMPLE.findall(text)}


def _total(metrics: dict[str, float], name: str) -> float:
    """The sum of a metric over all its labels."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


@dataclass
class Pipeline:
    """What ``/metrics`` says about the events."""

    accepted: int
    processed: int
    failed: int
    pending: int
    backlog: int
    queue_lag_seconds: float
    batch_latency_seconds: float

    @property
    def lag(self) -> int:
        """Events in the log not (yet) in a profile nor failed."""
        return self.accepted - self.processed - self.failed


def pipeline_state(base: str) -> Pipeline:
    found = read_metrics(base)
    return Pipeline(
        accepted=int(_total(found, "ecrm_events_accepted_total")),
        processed=int(found.get('ecrm_events{status="processed"}', 0)),
        failed=int(found.get('ecrm_events{status="failed"}', 0)),
        pending=int(found.get('ecrm_events{status="pending"}', 0)),
        backlog=int(found.get("ecrm_backlog_events", 0)),
        queue_lag_seconds=found.get("ecrm_queue_lag_seconds", 0.0),
        batch_latency_seconds=found.get("ecrm_batch_latency_seconds", 0.0),
    )


@dataclass
class Sample:
    t: float
    phase: str
    sent: int
    pipeline: Pipeline
    usage: dict[str, tuple[float, float, float]]
    send_rate: float
    processed_rate: float
    request_p50_ms: float
    request_max_ms: float
    max_lateness: float
    late_ticks: int
    unsent: int
    errors: int
    webhooks: int
    load: float  # the machine's 1-minute load average: the neighbours show up here


def _load_average() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


class Sampler:
    """Takes a sample every ``every`` seconds from ``start`` into ``rows`` and a CSV file."""

    def __init__(
        self, hub: Hub, sender: Sender, receiver: Receiver | None, path: Path, every: float
    ) -> None:
        self.hub, self.sender, self.receiver = hub, sender, receiver
        self.path, self.every = path, every
        self.rows: list[Sample] = []
        self.phase = "send"
        self.stop = threading.Event()
        self.failures: list[str] = []
        self._file = path.open("w", newline="")
        self._csv = csv.writer(self._file)
        self._header_written = False
        self._lock = threading.Lock()

    def take(self) -> Sample | None:
        with self._lock:
            return self._take()

    def _take(self) -> Sample | None:
        stats = self.sender.stats
        try:
            state = pipeline_state(self.hub.base)
        except (requests.RequestException, ValueError) as exc:
            self.failures.append(f"{time.monotonic() - stats.began:.0f}s: /metrics: {exc}")
            return None
        usage = role_usage(self.hub)
        with stats.lock:
            sent = stats.sent
            window = sorted(stats.latencies)
            stats.latencies.clear()
            lateness, stats.max_lateness = stats.max_lateness, 0.0
            late, unsent, errors = stats.late_ticks, stats.unsent, sum(stats.errors.values())
        t = time.monotonic() - stats.began
        last = self.rows[-1] if self.rows else None
        dt = t - last.t if last else 0.0
        sample = Sample(
            t=t,
            phase=self.phase,
            sent=sent,
            pipeline=state,
            usage=usage,
            send_rate=(sent - last.sent) / dt if last and dt > 0 else 0.0,
            processed_rate=(state.processed - last.pipeline.processed) / dt if last and dt else 0,
            request_p50_ms=1000 * window[len(window) // 2] if window else 0.0,
            request_max_ms=1000 * window[-1] if window else 0.0,
            max_lateness=lateness,
            late_ticks=late,
            unsent=unsent,
            errors=errors,
            webhooks=self.receiver.received if self.receiver else 0,
            load=_load_average(),
        )
        self.rows.append(sample)
        self._write(sample)
        return sample

    def _write(self, s: Sample) -> None:
        roles = sorted(s.usage)
        if not self._header_written:
            head = ["t_s", "phase", "sent", "accepted", "processed", "failed", "pending"]
            head += ["lag_events", "backlog_events", "queue_lag_s", "batch_latency_s"]
            head += ["send_per_s", "processed_per_s", "request_p50_ms", "request_max_ms"]
            head += ["max_lateness_s", "late_ticks", "unsent", "errors", "webhooks_received"]
            head += ["load_1m"]
            for role in roles:
                head += [f"{role}_rss_mb", f"{role}_pss_mb", f"{role}_cpu_s"]
            self._csv.writerow(head)
            self._roles = roles
            self._header_written = True
        p = s.pipeline
        row: list[Any] = [f"{s.t:.1f}", s.phase, s.sent, p.accepted, p.processed, p.failed]
        row += [p.pending, p.lag, p.backlog, f"{p.queue_lag_seconds:.2f}"]
        row += [f"{p.batch_latency_seconds:.3f}", f"{s.send_rate:.1f}", f"{s.processed_rate:.1f}"]
        row += [f"{s.request_p50_ms:.1f}", f"{s.request_max_ms:.1f}", f"{s.max_lateness:.3f}"]
        row += [s.late_ticks, s.unsent, s.errors, s.webhooks, f"{s.load:.2f}"]
        for role in self._roles:
            rss, pss, cpu = s.usage.get(role, (0.0, 0.0, 0.0))
            row += [f"{rss:.1f}", f"{pss:.1f}", f"{cpu:.1f}"]
        self._csv.writerow(row)
        self._file.flush()

    def run(self) -> None:
        began = self.sender.stats.began
        beat = 0
        while not self.stop.is_set():
            try:
                self.take()
            except Exception as exc:  # a sample lost must not end the sampling
                self.failures.append(f"{time.monotonic() - began:.0f}s: {exc!r}")
            beat += 1
            self.stop.wait(max(began + beat * self.every - time.monotonic(), 0))

    def close(self) -> None:
        self._file.close()


# --------------------------------------------------------------------------- summary


def _slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB per hour."""
    if len(points) < 3 or len({t for t, _ in points}) < 2:
        return None
    slope, _ = statistics.linear_regression([t for t, _ in points], [v for _, v in points])
    return slope * 3600


def _at_or_after(rows: list[Sample], t: float) -> Sample:
    return next((row for row in rows if row.t >= t), rows[-1])


def _mean_max(values: list[float]) -> str:
    if not values:
        return "-"
    return f"mean {statistics.fmean(values):,.0f}, max {max(values):,.0f}"


def summary(
    args: argparse.Namespace,
    sampler: Sampler,
    final: Pipeline,
    drain_seconds: float | None,
    lag_at_end: int,
    receiver: Receiver | None,
) -> tuple[str, bool]:
    """The printed summary, and whether any event was lost."""
    stats = sampler.sender.stats
    rows = [row for row in sampler.rows if row.phase == "send"]
    out: list[str] = []
    say = out.append
    seconds = stats.finished - stats.began
    rate = stats.sent / seconds if seconds else 0.0
    lost = stats.sent - final.processed - final.failed
    say(
        f"soak {args.backend}: {seconds / 60:.1f} min at {args.rate:g} events/s fixed "
        f"(a send every {args.interval:g} s), {args.customers:,} customers, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores"
    )
    say(
        f"  sent (accepted by the hub): {stats.sent:,}  (planned {stats.generated:,}; "
        f"{stats.duplicates:,} answered as duplicates of a retry, {stats.rejected:,} rejected, "
        f"{stats.unsent:,} unsent after retries)"
    )
    say(
        f"  processed {final.processed:,}, failed {final.failed:,}, API accepted {final.accepted:,}"
        + (f"; lost {lost:,}" if lost >= 0 else f"; {-lost:,} more than acknowledged")
        + ("" if lost == 0 else "  <-- MISMATCH")
    )
    say(f"  achieved rate: {rate:,.1f} events/s (target {args.rate:g})")
    lat = sorted(stats.all_latencies)
    if lat:
        p99 = lat[min(int(len(lat) * 0.99), len(lat) - 1)]
        say(
            f"  requests: {stats.requests:,}, {stats.retries} retried; latency p50 "
            f"{1000 * lat[len(lat) // 2]:.0f} ms, p99 {1000 * p99:.0f} ms, "
            f"max {1000 * lat[-1]:.0f} ms"
        )
    say(
        f"  sender behind its clock: worst {stats.worst_lateness:.2f} s; "
        f"{stats.late_ticks} of {round(seconds / args.interval):,} sends (a /v1/batch and a "
        f"/v1/pos/transactions request each) late by more than one interval"
    )
    if stats.errors:
        say("  errors: " + ", ".join(f"{k} x{v}" for k, v in stats.errors.most_common(5)))
    drained = (
        f"{drain_seconds:.1f} s" if drain_seconds is not None else "NOT within the bounded wait"
    )
    say(f"  drain: {lag_at_end:,} events behind when sending stopped, drained in {drained}")
    if receiver is not None:
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(receiver.counts.items()))
        say(f"  webhook deliveries received: {receiver.received:,} ({kinds or 'none'})")
    if not rows:
        return "\n".join(out), lost != 0
    warm = min(args.warmup_minutes * 60, seconds / 2)
    after = [row for row in rows if row.t >= warm]
    warm_row, end_row = _at_or_after(rows, warm), rows[-1]
    say(
        f"  memory, MB (RSS of each process and its children; PSS beside it counts pages "
        f"shared by a pool once); warm-up = sample at {warm_row.t / 60:.1f} min, end = "
        f"{end_row.t / 60:.1f} min, growth = least-squares slope over the {len(after)} samples "
        f"from warm-up to the end; CPU = µs per processed event over the whole run, drain too"
    )
    say(
        f"    {'process':<10} {'RSS warm-up':>11} {'RSS end':>8} {'MB/hour':>8}   "
        f"{'PSS warm-up':>11} {'PSS end':>8} {'MB/hour':>8}   {'CPU µs/ev':>9}"
    )
    for role in sorted(end_row.usage):
        cells = []
        for index in (0, 1):
            at_warm = warm_row.usage.get(role, (0.0, 0.0, 0.0))[index]
            at_end = end_row.usage[role][index]
            slope = _slope_per_hour([(r.t, r.usage[role][index]) for r in after if role in r.usage])
            growth = f"{slope:+.1f}" if slope is not None else "-"
            cells.append(f"{at_warm:>11.0f} {at_end:>8.0f} {growth:>8}")
        whole = sampler.rows[-1]
        cpu = whole.usage.get(role, (0.0, 0.0, 0.0))[2] - rows[0].usage.get(role, (0, 0, 0))[2]
        events = whole.pipeline.processed - rows[0].pipeline.processed
        per_event = f"{1e6 * cpu / events:>9.0f}" if events > 0 else f"{'-':>9}"
        say(f"    {role:<10} {cells[0]}   {cells[1]}   {per_event}")
    third = seconds / 3
    first = [row for row in rows if row.t <= third]
    last = [row for row in rows if row.t >= 2 * third]
    say("  lag, events (API accepted - processed - failed, at each sample):")
    say(f"    first third: {_mean_max([r.pipeline.lag for r in first])}")
    say(f"    last third:  {_mean_max([r.pipeline.lag for r in last])}")
    lag_first = [r.pipeline.queue_lag_seconds for r in first]
    lag_last = [r.pipeline.queue_lag_seconds for r in last]
    say("  oldest unprocessed batch, seconds (ecrm_queue_lag_seconds):")
    say(f"    first third: {_fmt_seconds(lag_first)}")
    say(f"    last third:  {_fmt_seconds(lag_last)}")
    say(
        f"  processed/s: first third {_fmt_rate([r.processed_rate for r in first[1:]])}, "
        f"last third {_fmt_rate([r.processed_rate for r in last])}"
    )
    say(
        f"  machine load average (1 min; {os.cpu_count()} cores): first third "
        f"{_fmt_seconds([r.load for r in first])}, "
        f"last third {_fmt_seconds([r.load for r in last])}"
    )
    if sampler.failures:
        say(f"  samples missed: {len(sampler.failures)} ({sampler.failures[0]})")
    return "\n".join(out), lost != 0


def _fmt_seconds(values: list[float]) -> str:
    if not values:
        return "-"
    return f"mean {statistics.fmean(values):.1f}, max {max(values):.1f}"


def _fmt_rate(values: list[float]) -> str:
    return f"{statistics.fmean(values):,.0f}" if values else "-"


# --------------------------------------------------------------------------- the run


def _on_term(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # finally blocks clean up


def start_hub(backend: str, home: Path, urls: dict[str, str], webhook: bool) -> Hub:
    write_key = f"wk_soak_{secrets.token_hex(8)}"
    admin_token = f"adm_soak_{secrets.token_hex(12)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECRM_")}
    env.update(
        urls,
        ECRM_HOME=str(home / "home"),
        ECRM_WRITE_KEYS=write_key,
        ECRM_ADMIN_TOKEN=admin_token,
        ECRM_LOG_LEVEL="WARNING",
        ECRM_WEBHOOK_ALLOW_PRIVATE="1",
    )
    for attempt in range(3):
        port = _free_port()
        hub = Hub(home, {**env, "ECRM_HTTP_PORT": str(port)}, port, write_key, admin_token)
        if backend == "sqlite":
            hub.start("run", "run")
        else:
            # migrations first, once: processes starting together would race on them
            init = subprocess.run(
                [sys.executable, "-m", "workers.cli", "init"],
                env=hub.env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if init.returncode:
                raise SystemExit(f"ecrm init failed: {init.stderr.strip()}")
            hub.start("serve", "serve")
            hub.start("worker", "worker")
            hub.start("scheduler", "scheduler")
            if webhook:
                hub.start("webhooks", "worker", "--webhooks")
        try:
            _wait_healthy(hub.base, timeout=120)
            # a random admin token proves the answering hub is this one, not a neighbour's
            ours = requests.get(f"{hub.base}/v1/rules", headers=_admin(hub), timeout=10)
            if ours.status_code == 200:
                time.sleep(2)  # a process failing at start-up is gone by now
                if not hub.dead():
                    return hub
            print(f"attempt {attempt + 1}: port {port} not ours or a process died: {hub.dead()}")
        except RuntimeError as exc:
            print(f"attempt {attempt + 1}: {exc}; exited: {hub.dead()}")
        hub.stop()
    raise SystemExit(f"the hub did not start; logs in {home}")


def _admin(hub: Hub) -> dict[str, str]:
    return {"Authorization": f"Bearer {hub.admin_token}"}


def configure(hub: Hub, receiver: Receiver | None) -> None:
    """The rule set, and the webhook endpoint if any, through the admin API."""
    answer = requests.put(f"{hub.base}/v1/rules", json=RULES, headers=_admin(hub), timeout=30)
    if answer.status_code != 200:
        raise SystemExit(f"PUT /v1/rules answered {answer.status_code}: {answer.text}")
    if receiver is not None:
        answer = requests.post(
            f"{hub.base}/v1/webhooks/endpoints",
            json={"url": receiver.url, "events": WEBHOOK_EVENTS, "description": "soak"},
            headers=_admin(hub),
            timeout=30,
        )
        if answer.status_code != 201:
            raise SystemExit(f"webhook endpoint: {answer.status_code}: {answer.text}")


def drain(hub: Hub, sent: int, timeout: float) -> tuple[float | None, Pipeline]:
    """Seconds until every accepted event is processed or failed (None: not in time)."""
    began = time.monotonic()
    state = pipeline_state(hub.base)
    while time.monotonic() - began < timeout:
        state = pipeline_state(hub.base)
        if state.lag <= 0 and state.processed + state.failed >= sent:
            return time.monotonic() - began, state
        if hub.dead():
            print(f"hub processes exited while draining: {hub.dead()}")
            break
        time.sleep(1)
    return None, state


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _on_term)
    work = Path(tempfile.mkdtemp(prefix="ecrm-soak-"))
    csv_path = Path(args.csv) if args.csv else work / "samples.csv"
    print(f"soak {args.backend}: logs in {work}, samples in {csv_path}", flush=True)
    tag = secrets.token_hex(3)
    with ExitStack() as stack:
        urls = backend_urls(args.backend, stack)
        hub = start_hub(args.backend, work, urls, not args.no_webhook)
        stack.callback(hub.stop)
        receiver = None if args.no_webhook else stack.enter_context(Receiver())
        configure(hub, receiver)
        stream = Stream(args.customers, args.seed, tag)
        sender = Sender(
            hub.base, hub.write_key, stream, args.rate, args.minutes * 60, args.interval
        )
        sender.stats.began = time.monotonic()
        sampler = Sampler(hub, sender, receiver, csv_path, args.sample_seconds)
        stack.callback(sampler.close)
        sending = threading.Thread(target=sender.run, name="sender")
        sampling = threading.Thread(target=sampler.run, name="sampler", daemon=True)
        sending.start()
        sampling.start()
        try:
            while sending.is_alive():
                sending.join(timeout=5)
                if hub.dead():
                    print(f"hub processes exited: {hub.dead()}; stopping", flush=True)
                    sender.stop.set()
        except KeyboardInterrupt:
            sender.stop.set()
            sending.join()
            raise
        at_end = pipeline_state(hub.base)
        print(
            f"sending done: {sender.stats.sent:,} sent, {at_end.lag:,} behind; draining",
            flush=True,
        )
        sampler.phase = "drain"
        drain_seconds, final = drain(hub, sender.stats.sent, args.drain_timeout)
        sampler.stop.set()
        sampling.join(timeout=60)
        sampler.take()  # one sample after the drain
        text, lost = summary(args, sampler, final, drain_seconds, at_end.lag, receiver)
        print(text)
        (work / "summary.txt").write_text(text + "\n")
        print(f"samples: {csv_path}\nlogs: {work}", flush=True)
        hub.stop()
        if args.backend == "sqlite":  # the data; logs and samples stay
            for name in ("hub.sqlite", "broker.sqlite"):
                for path in (work / "home").glob(f"{name}*"):
                    path.unlink()
        if drain_seconds is None:
            return 2
        return 1 if lost else 0
    return 2  # not reached: ExitStack re-raises


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--minutes", type=float, default=30.0, help="sending time (30)")
    parser.add_argument("--rate", type=float, default=400.0, help="events per second (400)")
    parser.add_argument("--backend", choices=BACKENDS, default="postgres+rabbitmq")
    parser.add_argument("--customers", type=int, default=20_000, help="customer pool (20,000)")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between requests")
    parser.add_argument("--sample-seconds", type=float, default=30.0, help="sample period (30)")
    parser.add_argument("--warmup-minutes", type=float, default=2.0, help="left out of growth")
    parser.add_argument("--drain-timeout", type=float, default=900.0, help="seconds (900)")
    parser.add_argument("--seed", type=int, default=20261204)
    parser.add_argument("--csv", help="samples file (default: in the run's temp folder)")
    parser.add_argument("--no-webhook", action="store_true", help="no webhook endpoint")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
