"""Side-by-side benchmark of kombu transports for the hub's embedded broker.

The hub's default deployment runs on one machine with no broker server, so Celery needs a
*durable embedded* transport. The candidates are kombu's stock SQLAlchemy transport on a
SQLite file, kombu's stock filesystem transport, and our tuned ``SQLiteTransport``
(``pipeline/broker.py``). Redis and RabbitMQ run alongside as reference points.

Two things are measured per transport:

* throughput -- publish rate and consume+ack rate for N small (~200 byte) JSON messages;
* kill -9 behaviour -- a subprocess consumer emulating ``acks_late`` (receive, work 5 ms,
  ack) is SIGKILLed after 50 acks, while it holds the 51st message unacked (i.e. in the
  middle of a task, where a real worker spends most of its time). A fresh consumer then
  drains what is left. Messages that were in flight at kill time and never come back are
  reported as *lost*.

Why loss matters less than it looks: the hub's event log in the database is the source of
truth and a periodic sweep re-enqueues batches that never completed. Broker loss on
kill -9 therefore costs latency (one sweep interval), not data. Throughput and the size
of that loss window are what decide which transport backs the embedded default.

Usage::

    .venv/bin/python benchmarks/broker_transports.py --messages 2000 --out results.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kombu import Connection, Consumer, Producer, Queue
from kombu.message import Message

REPO_ROOT = Path(__file__).resolve().parent.parent
TUNED_TRANSPORT_REF = "pipeline.broker:SQLiteTransport"
REDIS_URL = "redis://127.0.0.1:6379/15"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"

KILL_TOTAL = 200  # messages published for the kill -9 check
KILL_AFTER_ACKS = 50  # SIGKILL the victim consumer once it reports this many acks
WORK_SECONDS = 0.005  # simulated task duration between receive and ack
THROUGHPUT_PREFETCH = 100
KILL_PREFETCH = 1  # acks_late deployments run with prefetch multiplier 1
OVERALL_TIMEOUT = 60.0  # hard cap for any single drain / wait
DEFAULT_IDLE_TIMEOUT = 10.0  # a drain stops after this long without a message


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class TransportSpec:
    """Everything needed to open a kombu connection, also from a subprocess."""

    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    transport_ref: str | None = None  # "module:Class", resolved lazily

    def connect(self) -> Connection:
        transport = load_transport(self.transport_ref) if self.transport_ref else None
        # a "sqla+" URL makes kombu pick its stock transport whatever class is given: the
        # hub connects with the plain database URL (pipeline.broker.embedded_connection_args)
        url = self.url.removeprefix("sqla+") if transport is not None else self.url
        return Connection(url, transport=transport, transport_options=dict(self.options))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> TransportSpec:
        return cls(**json.loads(raw))


@dataclass
class Result:
    """One row of the report."""

    transport: str
    publish_per_s: float | None = None
    consume_per_s: float | None = None
    acked_before_kill: int | None = None
    remaining: int | None = None
    lost: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class DrainStats:
    seqs: list[int]
    seconds_to_last: float  # time from drain start to the last message acked


# --------------------------------------------------------------------------- helpers


def load_transport(ref: str) -> type[Any]:
    """Import ``module:Class`` (repo root on sys.path); raises on any failure."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    module_name, _, class_name = ref.partition(":")
    cls: type[Any] = getattr(importlib.import_module(module_name), class_name)
    return cls


def make_body(seq: int) -> dict[str, Any]:
    """A ~200 byte payload shaped like the hub's batch notifications."""
    return {
        "batch_id": 100_000 + seq,
        "seq": seq,
        "tenant": "acme-retail",
        "source": "shopify",
        "event_type": "order.created",
        "events": 50,
        "created_at": "2024-05-01T12:00:00+00:00",
        "trace_id": uuid.uuid4().hex,
        "attempt": 0,
    }


def publish(spec: TransportSpec, q: Queue, count: int) -> float:
    """Publish ``count`` persistent messages to ``q``; return elapsed seconds."""
    with spec.connect() as conn:
        channel = conn.channel()
        q(channel).declare()
        producer = Producer(channel, serializer="json")
        started = time.perf_counter()
        for seq in range(count):
            producer.publish(make_body(seq), exchange="", routing_key=q.name, delivery_mode=2)
        return time.perf_counter() - started


def drain(
    spec: TransportSpec,
    q: Queue,
    *,
    prefetch: int,
    done: Callable[[list[int]], bool],
    idle_timeout: float,
) -> DrainStats:
    """Consume and ack from ``q`` until ``done``, ``idle_timeout`` of silence or the cap."""
    seqs: list[int] = []
    started = time.perf_counter()
    last = started

    def on_message(body: dict[str, Any], message: Message) -> None:
        nonlocal last
        seqs.append(int(body["seq"]))
        message.ack()
        last = time.perf_counter()

    with spec.connect() as conn:
        channel = conn.channel()
        consumer = Consumer(channel, queues=[q], callbacks=[on_message], accept=["json"])
        consumer.qos(prefetch_count=prefetch)
        with consumer:
            while not done(seqs):
                now = time.perf_counter()
                if now - last >= idle_timeout or now - started >= OVERALL_TIMEOUT:
                    break
                try:
                    conn.drain_events(timeout=1.0)
                except TimeoutError:
                    continue
    return DrainStats(seqs=seqs, seconds_to_last=last - started)


def delete_queue(spec: TransportSpec, q: Queue) -> None:
    with spec.connect() as conn:
        q(conn.channel()).delete()


def dispose_sqla_engine(spec: TransportSpec) -> None:
    """kombu caches SQLAlchemy engines per URL on the Channel class; release ours."""
    with spec.connect() as conn:
        engines = getattr(conn.transport.Channel, "_engines", None)
        hostname = conn.hostname
    if isinstance(engines, dict) and hostname in engines:
        engine, _session = engines.pop(hostname)
        engine.dispose()


def sqlite_store_note(db_path: Path) -> str:
    """Describe what the SQLite file still holds after every message was acked."""
    if not db_path.exists():
        return "sqlite file missing"
    with sqlite3.connect(db_path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = sum(
            db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
            for t in tables
            if "message" in t
        )
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    size_kib = db_path.stat().st_size / 1024
    return f"after full drain: {rows} message rows kept, {size_kib:.0f} KiB, journal={journal}"


def redis_parked(queue_names: set[str], *, remove: bool) -> int:
    """Count (and optionally delete) our entries in kombu's Redis ``unacked`` hash.

    Unacked Redis messages are not lost on kill -9: they sit in the ``unacked`` hash and
    are restored after ``visibility_timeout`` (1 h by default). We drop ours on cleanup so
    they do not resurrect into db 15 an hour later.
    """
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    ours: list[bytes] = []
    for tag, raw in client.hscan_iter("unacked"):
        try:
            _message, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        if routing_key in queue_names:
            ours.append(tag)
    if remove and ours:
        client.hdel("unacked", *ours)
        client.zrem("unacked_index", *ours)
    client.close()
    return len(ours)


# --------------------------------------------------------------------------- kill -9 check


def run_victim(spec: TransportSpec, queue_name: str) -> None:
    """Subprocess body: acks_late-style consumer printing ``got``/``ack`` lines."""

    def on_message(body: dict[str, Any], message: Message) -> None:
        print(f"got {body['seq']}", flush=True)
        time.sleep(WORK_SECONDS)
        message.ack()
        print(f"ack {body['seq']}", flush=True)

    q = Queue(queue_name, routing_key=queue_name, durable=True)
    deadline = time.monotonic() + OVERALL_TIMEOUT
    with spec.connect() as conn:
        channel = conn.channel()
        consumer = Consumer(channel, queues=[q], callbacks=[on_message], accept=["json"])
        consumer.qos(prefetch_count=KILL_PREFETCH)
        with consumer:
            while time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=1.0)
                except TimeoutError:
                    continue


def kill_check(spec: TransportSpec, q: Queue, idle_timeout: float, result: Result) -> None:
    """Publish, let a subprocess consume ~50 then SIGKILL it, and drain the rest."""
    publish(spec, q, KILL_TOTAL)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_victim", spec.to_json(), q.name]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.strip())
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    acked: set[int] = set()
    got: set[int] = set()

    def record(line: str) -> None:
        kind, _, seq = line.partition(" ")
        (acked if kind == "ack" else got).add(int(seq))

    def holding_message() -> bool:
        # Kill inside the work window: >= 50 acked and one received but not yet acked.
        return len(acked) >= KILL_AFTER_ACKS and bool(got - acked)

    deadline = time.monotonic() + OVERALL_TIMEOUT
    while not holding_message() and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if line is None:  # victim exited on its own
            break
        record(line)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    reader.join(timeout=10)
    while (line := lines.get_nowait() if not lines.empty() else None) is not None:
        record(line)  # lines flushed between our 50th read and the kill
    if len(acked) < KILL_AFTER_ACKS:
        stderr = proc.stderr.read()[-300:] if proc.stderr else ""
        result.notes.append(f"victim reached only {len(acked)} acks: {stderr.strip()}")
    if proc.stderr:
        proc.stderr.close()

    def complete(seqs: list[int]) -> bool:
        return len(acked | set(seqs)) >= KILL_TOTAL

    stats = drain(spec, q, prefetch=THROUGHPUT_PREFETCH, done=complete, idle_timeout=idle_timeout)
    seen = set(stats.seqs)
    result.acked_before_kill = len(acked)
    result.remaining = len(seen - acked)
    result.lost = KILL_TOTAL - result.acked_before_kill - result.remaining
    in_flight = len(got - acked)
    result.notes.append(f"in flight at kill: {in_flight}")
    if duplicates := len(seen & acked) + (len(stats.seqs) - len(seen)):
        result.notes.append(f"{duplicates} redelivered after ack")


# --------------------------------------------------------------------------- driver


def build_specs(workdir: Path) -> tuple[list[TransportSpec], list[str]]:
    """The transports to compare, plus notes for the ones that had to be skipped."""
    fs_folder = workdir / "filesystem"
    fs_folder.mkdir()
    specs = [
        TransportSpec("sqla+sqlite (stock)", f"sqla+sqlite:///{workdir / 'stock.sqlite'}"),
        TransportSpec(
            "filesystem (stock)",
            "filesystem://",
            {"data_folder_in": str(fs_folder), "data_folder_out": str(fs_folder)},
        ),
    ]
    skipped: list[str] = []
    try:
        load_transport(TUNED_TRANSPORT_REF)
    except Exception as exc:  # any import failure means "not there yet"
        skipped.append(f"tuned SQLiteTransport skipped ({type(exc).__name__}: {exc})")
    else:
        specs.append(
            TransportSpec(
                "SQLiteTransport (tuned)",
                f"sqla+sqlite:///{workdir / 'tuned.sqlite'}",
                transport_ref=TUNED_TRANSPORT_REF,
            )
        )
    specs.append(TransportSpec("redis (reference)", REDIS_URL))
    specs.append(TransportSpec("rabbitmq (reference)", AMQP_URL))
    return specs, skipped


def bench_one(spec: TransportSpec, messages: int, idle_timeout: float, run_id: str) -> Result:
    """Throughput + kill -9 check for one transport; never raises."""
    result = Result(spec.name)
    slug = "".join(c if c.isalnum() else "-" for c in spec.name.split(" ")[0])
    queues = [
        Queue(name, routing_key=name, durable=True)
        for name in (f"bench-{run_id}-{slug}-tp", f"bench-{run_id}-{slug}-kill")
    ]
    throughput_q, kill_q = queues
    try:
        result.publish_per_s = messages / publish(spec, throughput_q, messages)

        def complete(seqs: list[int]) -> bool:
            return len(seqs) >= messages

        stats = drain(
            spec,
            throughput_q,
            prefetch=THROUGHPUT_PREFETCH,
            done=complete,
            idle_timeout=idle_timeout,
        )
        if len(stats.seqs) < messages:
            result.notes.append(f"drained only {len(stats.seqs)}/{messages}")
        result.consume_per_s = len(stats.seqs) / stats.seconds_to_last
        if spec.url.startswith("sqla+sqlite:///"):
            result.notes.append(sqlite_store_note(Path(spec.url.removeprefix("sqla+sqlite:///"))))
        kill_check(spec, kill_q, idle_timeout, result)
        if spec.url == REDIS_URL:
            parked = redis_parked({q.name for q in queues}, remove=False)
            result.notes.append(f"{parked} parked in 'unacked' until visibility_timeout")
    except Exception as exc:  # report and move on to the next transport
        result.notes.append(f"error: {type(exc).__name__}: {exc}")
    finally:
        cleanup(spec, queues)
    return result


def cleanup(spec: TransportSpec, queues: list[Queue]) -> None:
    for q in queues:
        try:
            delete_queue(spec, q)
        except Exception as exc:
            print(f"  cleanup of {q.name} on {spec.name} failed: {exc}", file=sys.stderr)
    if spec.url == REDIS_URL:
        redis_parked({q.name for q in queues}, remove=True)
    if spec.url.startswith("sqla+"):
        dispose_sqla_engine(spec)


def fmt(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if isinstance(value, float) else str(value)


def print_table(results: list[Result]) -> None:
    headers = ["transport", "publish/s", "consume/s", "acked<kill", "remaining", "lost"]
    rows = [
        [
            r.transport,
            fmt(r.publish_per_s),
            fmt(r.consume_per_s),
            fmt(r.acked_before_kill),
            fmt(r.remaining),
            fmt(r.lost),
        ]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def render(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    print(render(headers))
    print("-" * len(render(headers)))
    for row in rows:
        print(render(row))
    print()
    for r in results:
        for note in r.notes:
            print(f"  {r.transport}: {note}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="messages for throughput")
    parser.add_argument("--out", type=Path, help="write results as JSON to this file")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        help="stop a drain after this many seconds without a message",
    )
    parser.add_argument("--_victim", nargs=2, metavar=("SPEC", "QUEUE"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._victim:
        run_victim(TransportSpec.from_json(args._victim[0]), args._victim[1])
        return 0

    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"broker-bench-{run_id}-", dir="/tmp"))
    results: list[Result] = []
    try:
        specs, skipped = build_specs(workdir)
        for note in skipped:
            print(note)
        for spec in specs:
            print(f"benchmarking {spec.name} ...", flush=True)
            results.append(bench_one(spec, args.messages, args.idle_timeout, run_id))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"{args.messages} messages (~200 B JSON); kill -9 check with {KILL_TOTAL} messages,")
    print(
        f"victim SIGKILLed after {KILL_AFTER_ACKS} acks while holding the next message, "
        f"{WORK_SECONDS * 1000:.0f} ms work each"
    )
    print()
    print_table(results)
    if args.out:
        payload = {
            "messages": args.messages,
            "kill_total": KILL_TOTAL,
            "kill_after_acks": KILL_AFTER_ACKS,
            "skipped": skipped,
            "results": [asdict(r) for r in results],
        }
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
