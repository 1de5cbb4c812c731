"""Webhook deliveries/s beside a plain ``requests.Session`` loop, in one run, same receiver.

    python -m benchmarks.webhooks [DELIVERIES] [DATABASE_URL]
    python -m benchmarks.webhooks 5000                       (SQLite file in /tmp)
    python -m benchmarks.webhooks 5000 postgresql+psycopg://postgres@127.0.0.1:5432/webhooks_bench
      (PostgreSQL: the database must exist and be empty)

The receiver is a minimal ASGI app under uvicorn in its own process (it answers 204 and
does nothing else), so it is the same for every column:

- ``ceiling``: one ``requests.Session`` POSTing the same bodies one after another, nothing
  else (no signing, no database): the number the issue compares with;
- ``hub, 1 lane``: ``deliver_endpoint`` with ``ECRM_WEBHOOK_CONCURRENCY=1``: claim from the
  database, sign every message (Standard Webhooks), POST, record each attempt and the
  delivery's state; sequential like the ceiling, so the ratio is the hub's overhead;
- ``hub, N lanes``: the default concurrency (parallel POSTs to different profiles).

Each hub column starts from freshly fanned-out deliveries (one per profile, so per-profile
order never holds anything back); the fan-out's own rate is printed too. On PostgreSQL the
table is analyzed after the fan-out, as autovacuum does within a minute of a burst (the
thresholds migration 0015 sets); before that the planner's per-profile head check is slower.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
import structlog
from sqlalchemy import delete, func, select

from connectors.webhooks.dispatch import Options, deliver_endpoint
from connectors.webhooks.endpoints import active_secrets, create_endpoint
from connectors.webhooks.fanout import advance, cursor, fan_out, targets
from connectors.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from identity.changes import record_changes
from pipeline import Database
from pipeline.schema import upgrade
from workers.webhooks_dispatch import feed_changes

RECEIVER_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_receiver(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    (folder / "receiver_app.py").write_text(RECEIVER_APP)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "receiver_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=folder,
    )
    url = f"http://127.0.0.1:{port}/hook"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.post(url, data=b"{}", timeout=1)
            return process, url
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the receiver did not start")


def seed(db: Database, total: int) -> None:
    """``total`` changes, one per profile, each about the size of a rule firing."""
    with db.write() as session:
        record_changes(
            session,
            "default",
            [
                (
                    "rule.fired",
                    f"prof_{n:08d}",
                    {
                        "rule_id": "welcome",
                        "rule_version": 3,
                        "event_id": n,
                        "held": False,
                        "actions": [{"type": "send_email", "status": "queued"}],
                    },
                )
                for n in range(total)
            ],
        )


def fan_out_everything(db: Database) -> float:
    """Fan the whole feed out again (cursor reset, old deliveries gone); deliveries/s."""
    with db.write() as session:
        session.execute(delete(WebhookAttempt))
        session.execute(delete(WebhookDelivery))
    began = time.perf_counter()
    made = 0
    while True:
        with db.write() as session:
            seen = cursor(session, "default")
            changes = feed_changes(session, "default", seen or 0, 500)
            if not changes:
                break
            stats = fan_out(
                session,
                "default",
                changes,
                targets(session, "default"),
                lambda s, ids: {},
                now=datetime.now(UTC),
                coalesce_seconds=0,
            )
            advance(session, "default", seen, changes[-1].id, datetime.now(UTC))
            made += stats.deliveries
    rate = made / (time.perf_counter() - began)
    if db.dialect == "postgresql":  # as autovacuum does soon after a burst (migration 0015)
        with db.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE webhook_deliveries")
    with db.write() as session:  # the next column fans out from the start again
        from connectors.webhooks.models import WebhookCursor

        session.execute(delete(WebhookCursor))
    return rate


def hub_rate(db: Database, endpoint_id: str, concurrency: int) -> float:
    options = Options(timeout=5.0, allow_private=True, concurrency=concurrency, budget_seconds=3600)
    with db.read() as session:
        total = session.scalar(select(func.count()).select_from(WebhookDelivery)) or 0
    began = time.perf_counter()
    stats = deliver_endpoint(db, endpoint_id, options)
    seconds = time.perf_counter() - began
    if stats.delivered != total:
        raise SystemExit(f"delivered {stats.delivered} of {total}: {stats.outcomes}")
    return total / seconds


def ceiling_rate(db: Database, url: str) -> float:
    with db.read() as session:
        bodies = [b.encode() for b in session.scalars(select(WebhookDelivery.body))]
    client = requests.Session()
    client.trust_env = False
    headers = {"Content-Type": "application/json"}
    began = time.perf_counter()
    for body in bodies:
        answer = client.post(url, data=body, headers=headers, timeout=5)
        if answer.status_code != 204:
            raise SystemExit(f"receiver answered {answer.status_code}")
    return len(bodies) / (time.perf_counter() - began)


def main(total: int, url: str | None) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = Database.connect(url or f"sqlite:///{folder / 'webhooks.db'}")
        receiver, hook = start_receiver(folder)
        try:
            upgrade(db)
            with db.write() as session:
                view, _ = create_endpoint(
                    session,
                    "default",
                    url=hook,
                    events=[],
                    allow_private=True,
                    now=datetime.now(UTC) - timedelta(minutes=1),
                )
                assert active_secrets(session, "default", view["id"], now=datetime.now(UTC))
            seed(db, total)
            fanned = fan_out_everything(db)
            ceiling = ceiling_rate(db, hook)
            rows = [("ceiling (requests.Session loop)", ceiling)]
            for lanes in (1, Options().concurrency):
                fan_out_everything(db)
                rows.append(
                    (
                        f"hub, {lanes} lane{'s' if lanes > 1 else ''}",
                        hub_rate(db, view["id"], lanes),
                    )
                )
            with db.read() as session:
                endpoint = session.get(WebhookEndpoint, view["id"])
                assert endpoint is not None and endpoint.enabled
        finally:
            receiver.kill()
            receiver.wait()
            db.dispose()
    backend = "PostgreSQL" if url and url.startswith("postgresql") else "SQLite"
    print(f"{total:,} deliveries to a local uvicorn receiver ({backend}); fan-out {fanned:,.0f}/s")
    print(f"  {'':<34} {'deliveries/s':>12} {'vs ceiling':>10}")
    for name, rate in rows:
        print(f"  {name:<34} {rate:>12,.0f} {rate / ceiling:>10.0%}")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]) if args else 5000, args[1] if len(args) > 1 and args[1] else None)
