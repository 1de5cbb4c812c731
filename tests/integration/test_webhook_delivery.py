"""Webhook deliveries on SQLite and PostgreSQL: fan-out from the change feed, coalescing,
per-profile order, retries with the schedule, Retry-After, 410 and exhaustion disabling the
endpoint, leases, and a hanging receiver beside a healthy one. Real HTTP receivers (one
http.server per test, in a thread) verify every signature with ``standardwebhooks``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from connectors.webhooks.dispatch import Options, deliver_endpoint, due_endpoints
from connectors.webhooks.endpoints import create_endpoint, update_endpoint
from connectors.webhooks.fanout import advance, cursor, fan_out, targets
from connectors.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from identity.changes import record_change
from pipeline import Database
from workers.webhooks_dispatch import feed_changes

FAST = Options(timeout=2.0, schedule=(0, 0, 0, 0), allow_private=True, concurrency=4)


@dataclass
class Script:
    """What a receiver answers: per profile id, the statuses of its first requests."""

    failures: dict[str, list[int]] = field(default_factory=dict)
    headers: dict[int, dict[str, str]] = field(default_factory=dict)
    hang_seconds: float = 0.0
    secret: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def receiver(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if script.hang_seconds:
                time.sleep(script.hang_seconds)
            try:
                Webhook(script.secret).verify(body, dict(self.headers.items()))
            except Exception:
                with script.lock:
                    script.bad_signatures += 1
                self._answer(400)
                return
            document = json.loads(body)
            with script.lock:
                queue = script.failures.get(document["profile_id"], [])
                status = queue.pop(0) if queue else 200
                script.received.append(
                    {"id": self.headers["webhook-id"], "status": status, **document}
                )
            self._answer(status, script.headers.get(status, {}))

        def _answer(self, status: int, extra: Mapping[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serve(script: Script) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), receiver(script))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def states(session: Session, ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    """A stand-in for the profile view: enough to see which state was sent."""
    return {pid: {"id": pid, "traits": {"seen": True}} for pid in ids}


def endpoint(db: Database, url: str, events: list[str] | None = None) -> tuple[str, str]:
    with db.write() as session:
        view, secret = create_endpoint(
            session,
            "default",
            url=url,
            events=events or [],
            allow_private=True,
            now=datetime.now(UTC) - timedelta(seconds=5),
        )
    return view["id"], secret


def change(db: Database, type_: str, profile_id: str, **data: Any) -> int:
    with db.write() as session:
        return record_change(session, "default", type_, profile_id, data)


def fan_out_now(db: Database, coalesce: float = 0.0) -> int:
    """Fan the whole feed out, as the dispatcher does; the deliveries added."""
    added = 0
    with db.write() as session:
        seen = cursor(session, "default")
        changes = feed_changes(session, "default", seen or 0, 1000)
        if changes:
            stats = fan_out(
                session,
                "default",
                changes,
                targets(session, "default"),
                states,
                now=datetime.now(UTC),
                coalesce_seconds=coalesce,
            )
            assert advance(session, "default", seen, changes[-1].id, datetime.now(UTC))
            added = stats.deliveries
    return added


def deliveries(db: Database, endpoint_id: str) -> list[WebhookDelivery]:
    with db.read() as session:
        rows = session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .order_by(WebhookDelivery.id)
        ).all()
        session.expunge_all()
        return list(rows)


def drain(db: Database, endpoint_id: str, options: Options = FAST, rounds: int = 20) -> None:
    for _ in range(rounds):
        deliver_endpoint(db, endpoint_id, options)
        open_ = [d for d in deliveries(db, endpoint_id) if d.state in ("pending", "retrying")]
        if not open_:
            return


def test_fan_out_follows_filters_and_the_cursor(any_db: Database) -> None:
    script = Script()
    with serve(script) as url:
        everything, _ = endpoint(any_db, url)
        loyalty_only, _ = endpoint(any_db, url, ["loyalty.*"])
        change(any_db, "profile.created", "p-1")
        change(any_db, "loyalty.points_changed", "p-1", points=10, balance=10)
        change(any_db, "profile.tag_added", "p-1", tag="vip")  # delivered as profile.updated
        assert fan_out_now(any_db) == 4
        assert fan_out_now(any_db) == 0  # the cursor moved: nothing twice
        assert [d.type for d in deliveries(any_db, everything)] == [
            "profile.created",
            "loyalty.points_changed",
            "profile.updated",
        ]
        assert [d.type for d in deliveries(any_db, loyalty_only)] == ["loyalty.points_changed"]
        points = json.loads(deliveries(any_db, loyalty_only)[0].body)
        assert points["type"] == "loyalty.points_changed"
        assert points["profile_id"] == "p-1"
        assert points["data"] == {"points": 10, "balance": 10}
        assert isinstance(points["version"], int) and points["timestamp"]


def test_an_endpoint_hears_only_of_changes_after_it_was_created(any_db: Database) -> None:
    change(any_db, "profile.created", "p-old")
    time.sleep(0.01)
    with any_db.write() as session:
        view, _ = create_endpoint(
            session,
            "default",
            url="http://127.0.0.1:9/x",
            events=[],
            allow_private=True,
            now=datetime.now(UTC),
        )
    change(any_db, "profile.created", "p-new")
    fan_out_now(any_db)
    assert [d.profile_id for d in deliveries(any_db, view["id"])] == ["p-new"]


def test_a_burst_of_updates_is_coalesced_into_one_delivery(any_db: Database) -> None:
    script = Script()
    with serve(script) as url:
        endpoint_id, secret = endpoint(any_db, url)
        script.secret = secret
        change(any_db, "profile.created", "p-2")
        change(any_db, "profile.updated", "p-2", traits=["city"])
        last = change(any_db, "profile.trait_set", "p-2", trait="tier")
        change(any_db, "profile.updated", "p-3", traits=["name"])
        fan_out_now(any_db, coalesce=60)
        rows = deliveries(any_db, endpoint_id)
        assert [(d.profile_id, d.type, d.coalesced) for d in rows] == [
            ("p-2", "profile.created", 3),
            ("p-3", "profile.updated", 1),
        ]
        assert json.loads(rows[0].body)["version"] == last
        # held for the window: not due yet
        with any_db.read() as session:
            assert endpoint_id not in due_endpoints(session, datetime.now(UTC))
            assert endpoint_id in due_endpoints(session, datetime.now(UTC) + timedelta(seconds=61))


def test_an_attempted_delivery_is_not_refreshed_a_new_one_follows(any_db: Database) -> None:
    script = Script(failures={"p-4": [500]})
    with serve(script) as url:
        endpoint_id, secret = endpoint(any_db, url)
        script.secret = secret
        change(any_db, "profile.updated", "p-4", traits=["a"])
        fan_out_now(any_db)
        deliver_endpoint(any_db, endpoint_id, replace(FAST, schedule=(0, 60)))
        change(any_db, "profile.updated", "p-4", traits=["b"])
        fan_out_now(any_db)
        rows = deliveries(any_db, endpoint_id)
        assert [(d.state, d.attempts) for d in rows] == [("retrying", 1), ("pending", 0)]
        # the follower waits for its head's retry, not the due scan's next round
        assert rows[1].next_attempt_at >= rows[0].next_attempt_at


def test_retries_keep_each_profiles_order_and_deliver_everything(any_db: Database) -> None:
    script = Script(failures={"p-a": [500, 503], "p-b": [502]})
    with serve(script) as url:
        endpoint_id, secret = endpoint(any_db, url)
        script.secret = secret
        sent: list[tuple[str, int]] = []
        for round_ in range(3):
            for pid in ("p-a", "p-b", "p-c"):
                sent.append((pid, change(any_db, "rule.fired", pid, n=round_)))
        fan_out_now(any_db)
        drain(any_db, endpoint_id)
    assert script.bad_signatures == 0
    accepted = [r for r in script.received if r["status"] == 200]
    assert sorted(r["version"] for r in accepted) == sorted(v for _, v in sent)
    assert len({r["id"] for r in accepted}) == len(accepted)  # no message delivered twice
    for pid in ("p-a", "p-b", "p-c"):
        versions = [r["version"] for r in script.received if r["profile_id"] == pid]
        # every attempt of a profile's message came before its next message
        assert versions == sorted(versions), pid
    retried = [r for r in script.received if r["profile_id"] == "p-a"]
    assert [r["status"] for r in retried][:3] == [500, 503, 200]
    assert len({r["id"] for r in retried[:3]}) == 1  # retries keep the webhook-id
    rows = deliveries(any_db, endpoint_id)
    assert {d.state for d in rows} == {"delivered"}
    with any_db.read() as session:
        attempts = session.scalars(
            select(WebhookAttempt).where(WebhookAttempt.delivery_id == rows[0].id)
        ).all()
        assert [(a.number, a.status, a.outcome) for a in attempts] == [
            (1, 500, "retry"),
            (2, 503, "retry"),
            (3, 200, "delivered"),
        ]
        assert all(a.latency_ms > 0 for a in attempts)
        endpoint_row = session.get(WebhookEndpoint, endpoint_id)
        assert endpoint_row is not None and endpoint_row.failing_since is None


def test_retry_after_is_honoured(any_db: Database) -> None:
    script = Script(failures={"p-5": [429]}, headers={429: {"Retry-After": "120"}})
    with serve(script) as url:
        endpoint_id, secret = endpoint(any_db, url)
        script.secret = secret
        change(any_db, "rule.fired", "p-5")
        fan_out_now(any_db)
        before = datetime.now(UTC)
        deliver_endpoint(any_db, endpoint_id, FAST)
    (row,) = deliveries(any_db, endpoint_id)
    assert row.state == "retrying" and row.last_status == 429
    wait = (row.next_attempt_at - before).total_seconds()
    assert 110 <= wait <= 125


def test_410_gone_disables_the_endpoint(any_db: Database) -> None:
    script = Script(failures={"p-6": [410]})
    with serve(script) as url:
        endpoint_id, secret = endpoint(any_db, url)
        script.secret = secret
        change(any_db, "rule.fired", "p-6")
        change(any_db, "rule.fired", "p-7")
        fan_out_now(any_db)
        deliver_endpoint(any_db, endpoint_id, replace(FAST, concurrency=1))
    with any_db.read() as session:
        row = session.get(WebhookEndpoint, endpoint_id)
        assert row is not None and not row.enabled
        assert row.disabled_reason and "410 Gone" in row.disabled_reason
        assert endpoint_id not in due_endpoints(session, datetime.now(UTC))
    states_ = {d.profile_id: d.state for d in deliveries(any_db, endpoint_id)}
    assert states_["p-6"] == "failed"


def _fail_again(db: Database, endpoint_id: str, failing_for: timedelta) -> None:
    """Make the retry due now, the endpoint failing for ``failing_for`` (time passing)."""
    with db.write() as session:
        row = session.get(WebhookEndpoint, endpoint_id)
        assert row is not None and row.failing_since is not None
        row.failing_since = datetime.now(UTC) - failing_for
        for delivery in session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.state == "retrying")
        ):
            delivery.next_attempt_at = datetime.now(UTC)


def test_failing_longer_than_the_schedule_disables_the_endpoint(any_db: Database) -> None:
    script = Script(failures={"p-8": [500] * 2, "p-9": [500] * 2})
    options = replace(FAST, schedule=(0, 3600))
    with serve(script) as url:
        endpoint_id, secret = endpoint(any_db, url)
        script.secret = secret
        change(any_db, "rule.fired", "p-8")
        fan_out_now(any_db)
        deliver_endpoint(any_db, endpoint_id, options)  # attempt 1 fails
        # the schedule runs out while the endpoint has failed for less than its span:
        # that message is given up, the endpoint stays on
        _fail_again(any_db, endpoint_id, timedelta(minutes=10))
        deliver_endpoint(any_db, endpoint_id, options)
        (delivery,) = deliveries(any_db, endpoint_id)
        assert delivery.state == "failed" and delivery.attempts == 2
        with any_db.read() as session:
            row = session.get(WebhookEndpoint, endpoint_id)
            assert row is not None and row.enabled
        # failing for longer than the whole schedule: the endpoint is disabled
        change(any_db, "rule.fired", "p-9")
        fan_out_now(any_db)
        deliver_endpoint(any_db, endpoint_id, options)
        _fail_again(any_db, endpoint_id, timedelta(hours=2))
        deliver_endpoint(any_db, endpoint_id, options)
    with any_db.read() as session:
        row = session.get(WebhookEndpoint, endpoint_id)
        assert row is not None and not row.enabled
        assert row.disabled_reason and "longer than the retry schedule" in row.disabled_reason


def test_disabled_endpoints_get_no_new_deliveries_and_resume_when_enabled(
    any_db: Database,
) -> None:
    script = Script()
    with serve(script) as url:
        endpoint_id, secret = endpoint(any_db, url)
        script.secret = secret
        with any_db.write() as session:
            update_endpoint(
                session,
                "default",
                endpoint_id,
                enabled=False,
                allow_private=True,
                now=datetime.now(UTC),
            )
        change(any_db, "rule.fired", "p-9")
        assert fan_out_now(any_db) == 0
        with any_db.write() as session:
            update_endpoint(
                session,
                "default",
                endpoint_id,
                enabled=True,
                allow_private=True,
                now=datetime.now(UTC),
            )
        change(any_db, "rule.fired", "p-9")
        assert fan_out_now(any_db) == 1
        drain(any_db, endpoint_id)
    assert [r["profile_id"] for r in script.received] == ["p-9"]


def test_one_round_per_endpoint_at_a_time(any_db: Database) -> None:
    script = Script(hang_seconds=0.5)
    with serve(script) as url:
        endpoint_id, secret = endpoint(any_db, url)
        script.secret = secret
        change(any_db, "rule.fired", "p-10")
        fan_out_now(any_db)
        results: list[Any] = []
        first = threading.Thread(
            target=lambda: results.append(deliver_endpoint(any_db, endpoint_id, FAST))
        )
        first.start()
        time.sleep(0.2)
        second = deliver_endpoint(any_db, endpoint_id, FAST)
        first.join()
    assert not second.leased and second.attempts == 0
    assert results[0].leased and results[0].delivered == 1
    assert len(script.received) == 1


def test_a_hanging_receiver_does_not_hold_up_another_endpoint(any_db: Database) -> None:
    hanging, healthy = Script(hang_seconds=3.0), Script()
    options = replace(FAST, timeout=1.0, schedule=(0, 60))
    with serve(hanging) as slow_url, serve(healthy) as fast_url:
        slow_id, slow_secret = endpoint(any_db, slow_url)
        fast_id, fast_secret = endpoint(any_db, fast_url)
        hanging.secret, healthy.secret = slow_secret, fast_secret
        for n in range(20):
            change(any_db, "rule.fired", f"p-h{n}")
        fan_out_now(any_db)
        with any_db.read() as session:
            assert set(due_endpoints(session, datetime.now(UTC))) == {slow_id, fast_id}
        # as the webhook worker's thread pool runs the two rounds side by side
        slow = threading.Thread(target=deliver_endpoint, args=(any_db, slow_id, options))
        started = time.monotonic()
        slow.start()
        fast = deliver_endpoint(any_db, fast_id, options)
        fast_seconds = time.monotonic() - started
        slow.join()
    assert fast.delivered == 20 and fast_seconds < 1.0
    slow_rows = deliveries(any_db, slow_id)
    # the slow endpoint's lanes stopped at their first timeout: 4 tried, the rest untouched
    assert sorted(d.attempts for d in slow_rows).count(1) == options.concurrency
    assert {d.state for d in slow_rows} == {"pending", "retrying"}


def test_deleting_an_endpoint_removes_its_delivery_log(any_db: Database) -> None:
    from connectors.webhooks.endpoints import delete_endpoint, get_endpoint

    script = Script(failures={"p-del": [500]})
    with serve(script) as url:
        endpoint_id, secret = endpoint(any_db, url)
        script.secret = secret
        change(any_db, "rule.fired", "p-del")
        fan_out_now(any_db)
        deliver_endpoint(any_db, endpoint_id, replace(FAST, schedule=(0, 60)))
    with any_db.read() as session:
        view = get_endpoint(session, "default", endpoint_id, now=datetime.now(UTC))
        assert view is not None and view["failing_since"] is not None
    with any_db.write() as session:
        delete_endpoint(session, "default", endpoint_id)
    assert deliveries(any_db, endpoint_id) == []
    with any_db.read() as session:
        assert session.scalars(select(WebhookAttempt)).all() == []


def test_two_first_fan_outs_move_the_cursor_once(any_db: Database) -> None:
    """Both saw no cursor; the second's insert is not an error (it was a UniqueViolation
    in the soak benchmark's worker log), it reports that another dispatcher moved first."""
    now = datetime.now(UTC)
    with any_db.write() as session:
        assert advance(session, "default", None, 5, now)
    with any_db.write() as session:
        assert not advance(session, "default", None, 7, now)
    with any_db.read() as session:
        assert cursor(session, "default") == 5
