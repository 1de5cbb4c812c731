"""Send an endpoint's due deliveries: lease, claim, sign, POST in parallel, record.

Why an endpoint lease: one dispatcher at a time works for an endpoint, so deliveries of
one profile go out in order (only the oldest open delivery of a profile is ever claimed,
and the next one waits until it is delivered or given up), and a receiver that hangs
holds one worker thread, never the others' deliveries.

A round, for one endpoint:

1. take the endpoint's lease (a conditional UPDATE: whoever else holds it wins);
2. claim up to ``concurrency * 8`` (at least 32) due deliveries, each the head of its
   profile's queue, counting the attempt before anything is sent (an attempt lost to a
   crash is sent again when the lease runs out: at least once, same ``webhook-id``);
3. POST them on ``concurrency`` threads (one keep-alive session each), signed with every
   active secret of the endpoint; a lane that meets a network failure or timeout stops
   and the rest of the chunk is put back untried (a hanging receiver costs one timeout
   per lane per round, not one per delivery);
4. record every attempt (the delivery log) and each delivery's new state in one
   transaction: delivered; retrying after the schedule's next delay (``Retry-After``
   honoured); failed when the schedule is exhausted. ``410 Gone`` disables the endpoint,
   and so does failing for longer than the whole schedule;
5. repeat while deliveries are due and the round's time budget lasts, then release.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import requests
from sqlalchemy import exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased
from uuid6 import uuid7

from connectors.webhooks.endpoints import active_secrets
from connectors.webhooks.models import (
    DELIVERED,
    FAILED,
    OPEN_PREDICATE,
    RETRYING,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    open_condition,
)
from connectors.webhooks.schedule import DEFAULT_SCHEDULE, next_delay
from connectors.webhooks.send import Attempt, new_session, post
from connectors.webhooks.signing import headers
from pipeline.db import Database, in_list
from pipeline.envelope import utcnow

#: deliveries claimed per lane and chunk (and at least ``MIN_CHUNK`` per chunk)
PER_LANE = 8
MIN_CHUNK = 32
_ERROR_CHARS = 1000


@dataclass(frozen=True)
class Options:
    """How to send: settings of ``ECRM_WEBHOOK_*`` (see :mod:`pipeline.settings`)."""

    timeout: float = 5.0
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    allow_private: bool = False
    #: parallel POSTs per endpoint (different profiles; one profile is always in order)
    concurrency: int = 4
    #: a round gives the endpoint's lease back after about this long
    budget_seconds: float = 30.0
    max_response_bytes: int = 4096


@dataclass(frozen=True)
class Claimed:
    """A delivery claimed for one attempt (``number`` counts this one)."""

    id: int
    message_id: str
    profile_id: str
    body: bytes
    number: int


@dataclass
class RoundStats:
    """What one round did for one endpoint."""

    endpoint_id: str
    leased: bool = False
    attempts: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    disabled: str | None = None
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)


def due_endpoints(session: Session, now: datetime, *, limit: int = 500) -> list[str]:
    """Enabled endpoints with a delivery due and nobody sending to them."""
    d, e = WebhookDelivery, WebhookEndpoint
    due = exists().where(d.endpoint_id == e.id, OPEN_PREDICATE, d.next_attempt_at <= now)
    rows = session.scalars(
        select(e.id)
        .where(e.enabled.is_(True), or_(e.lease_until.is_(None), e.lease_until < now), due)
        .order_by(e.id)
        .limit(limit)
    )
    return list(rows)


def lease(session: Session, endpoint_id: str, token: str, now: datetime, seconds: float) -> bool:
    """Take or renew the endpoint's lease for ``seconds``; False if another holds it."""
    e = WebhookEndpoint
    taken = session.execute(
        update(e)
        .where(
            e.id == endpoint_id,
            e.enabled.is_(True),
            or_(e.lease_token == token, e.lease_until.is_(None), e.lease_until < now),
        )
        .values(lease_token=token, lease_until=now + timedelta(seconds=seconds))
        .execution_options(synchronize_session=False)
    )
    return bool(taken.rowcount)  # type: ignore[attr-defined]


def release(session: Session, endpoint_id: str, token: str) -> None:
    """Give the lease back (only if it is still ours)."""
    e = WebhookEndpoint
    session.execute(
        update(e)
        .where(e.id == endpoint_id, e.lease_token == token)
        .values(lease_token=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )


def claim(session: Session, endpoint_id: str, now: datetime, limit: int) -> list[Claimed]:
    """Up to ``limit`` due deliveries, each the oldest open one of its profile."""
    d = WebhookDelivery
    older = aliased(WebhookDelivery, name="older")
    # the profile's oldest open delivery: a correlated scalar, so each candidate costs one
    # probe of the partial profile index however stale the planner's statistics are (an
    # anti-join planned for a "1-row" fresh table scanned every open row per candidate)
    head = (
        select(func.min(older.id))
        .where(
            older.endpoint_id == d.endpoint_id,
            older.profile_id == d.profile_id,
            open_condition("older"),  # literally the index's condition
        )
        .scalar_subquery()
    )
    rows = session.execute(
        select(d.id, d.message_id, d.profile_id, d.body, d.attempts)
        .where(
            d.endpoint_id == endpoint_id,
            OPEN_PREDICATE,  # as the partial index says it, so the planner picks the index
            d.next_attempt_at <= now,
            d.id == head,
        )
        .order_by(d.next_attempt_at)  # the due index's order: the scan stops at the limit
        .limit(limit)
    ).all()
    if not rows:
        return []
    session.execute(
        update(d)
        .where(in_list(session, d.id, [row.id for row in rows]))
        .values(attempts=d.attempts + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return [
        Claimed(row.id, row.message_id, row.profile_id, row.body.encode(), row.attempts + 1)
        for row in rows
    ]


def _stop_lane(attempt: Attempt) -> bool:
    """A network failure or timeout: the receiver is unwell, stop sending to it this round."""
    return attempt.status is None and attempt.outcome == "retry"


def send_all(
    url: str,
    claimed: Sequence[Claimed],
    secrets: Sequence[str],
    options: Options,
    sessions: Callable[[], requests.Session],
) -> dict[int, tuple[datetime, Attempt]]:
    """POST the claimed deliveries on ``options.concurrency`` lanes; the attempts made.

    A delivery missing from the answer was not tried (its lane stopped early); the caller
    gives its attempt back.
    """
    lanes = max(1, min(options.concurrency, len(claimed)))
    results: dict[int, tuple[datetime, Attempt]] = {}
    stop = threading.Event()

    def lane(items: Sequence[Claimed]) -> None:
        client = sessions()
        for item in items:
            if stop.is_set():
                return
            started = utcnow()
            signed = headers(secrets, item.message_id, int(time.time()), item.body)
            attempt = post(
                url,
                item.body,
                signed,
                timeout=options.timeout,
                max_response_bytes=options.max_response_bytes,
                allow_private=options.allow_private,
                session=client,
            )
            results[item.id] = (started, attempt)
            if _stop_lane(attempt):
                stop.set()

    if lanes == 1:
        lane(claimed)
    else:
        with ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="webhook") as pool:
            list(pool.map(lane, [claimed[i::lanes] for i in range(lanes)]))
    return results


def record(
    session: Session,
    workspace_id: str,
    endpoint_id: str,
    claimed: Sequence[Claimed],
    results: dict[int, tuple[datetime, Attempt]],
    options: Options,
    *,
    now: datetime,
    stats: RoundStats,
) -> None:
    """Write the attempts and the deliveries' new states (see the module docstring)."""
    d = WebhookDelivery
    untried = [item.id for item in claimed if item.id not in results]
    if untried:  # never sent: the attempt is given back
        session.execute(
            update(d)
            .where(in_list(session, d.id, untried))
            .values(attempts=d.attempts - 1)
            .execution_options(synchronize_session=False)
        )
    if not results:
        return
    log: list[dict[str, object]] = []
    gone: Attempt | None = None
    first_failure: datetime | None = None
    exhausted = False
    delivered: dict[int | None, list[int]] = {}
    settled: list[str] = []  # profiles whose head is no longer open
    for item in claimed:
        if item.id not in results:
            continue
        started, attempt = results[item.id]
        stats.attempts += 1
        stats.outcomes[attempt.outcome] = stats.outcomes.get(attempt.outcome, 0) + 1
        log.append(
            {
                "workspace_id": workspace_id,
                "delivery_id": item.id,
                "number": item.number,
                "started_at": started,
                "status": attempt.status,
                "latency_ms": attempt.latency_ms,
                "outcome": attempt.outcome,
                "response": attempt.response,
                "error": attempt.error,
            }
        )
        if attempt.outcome == "delivered":
            stats.delivered += 1
            delivered.setdefault(attempt.status, []).append(item.id)
            settled.append(item.profile_id)
            continue
        first_failure = first_failure or started
        delay = (
            None
            if attempt.outcome == "gone"
            else next_delay(item.number, options.schedule, retry_after=attempt.retry_after)
        )
        if delay is None:
            gone = attempt if attempt.outcome == "gone" else gone
            exhausted = exhausted or attempt.outcome != "gone"
            stats.failed += 1
            _set(session, [item.id], state=FAILED, attempt=attempt, now=now)
            settled.append(item.profile_id)
            continue
        stats.retrying += 1
        later = now + timedelta(seconds=delay)
        _set(session, [item.id], state=RETRYING, attempt=attempt, now=now, next_at=later)
        _hold_followers(session, endpoint_id, item, later)
    for ids in delivered.values():
        _set(session, ids, state=DELIVERED, attempt=results[ids[0]][1], now=now)
    _release_followers(session, endpoint_id, settled, now)
    session.execute(insert(WebhookAttempt), log)
    stats.disabled = _endpoint_health(
        session, endpoint_id, now, bool(delivered), first_failure, gone, exhausted, options
    )


def _set(
    session: Session,
    delivery_ids: Sequence[int],
    *,
    state: str,
    attempt: Attempt,
    now: datetime,
    next_at: datetime | None = None,
) -> None:
    """Deliveries that had the same answer: their new state and last status/error."""
    values: dict[str, object] = {
        "state": state,
        "last_status": attempt.status,
        "last_error": attempt.error[:_ERROR_CHARS] if attempt.error else None,
        "updated_at": now,
    }
    if state == DELIVERED:
        values["delivered_at"] = now
    if next_at is not None:
        values["next_attempt_at"] = next_at
    d = WebhookDelivery
    session.execute(
        update(d)
        .where(in_list(session, d.id, list(delivery_ids)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def _hold_followers(session: Session, endpoint_id: str, item: Claimed, until: datetime) -> None:
    """Later deliveries of the profile wait for their head (keeps them out of the due scan)."""
    d = WebhookDelivery
    session.execute(
        update(d)
        .where(
            d.endpoint_id == endpoint_id,
            d.profile_id == item.profile_id,
            OPEN_PREDICATE,
            d.id > item.id,
            d.next_attempt_at < until,
        )
        .values(next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )


def _release_followers(
    session: Session, endpoint_id: str, profile_ids: Sequence[str], now: datetime
) -> None:
    """Heads settled: their profiles' next deliveries, held back behind them, are due now."""
    if not profile_ids:
        return
    d = WebhookDelivery
    session.execute(
        update(d)
        .where(
            d.endpoint_id == endpoint_id,
            in_list(session, d.profile_id, sorted(set(profile_ids))),
            OPEN_PREDICATE,
            d.next_attempt_at > now,
        )
        .values(next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )


def _endpoint_health(
    session: Session,
    endpoint_id: str,
    now: datetime,
    succeeded: bool,
    first_failure: datetime | None,
    gone: Attempt | None,
    exhausted: bool,
    options: Options,
) -> str | None:
    """Track ``failing_since``; disable on ``410 Gone`` or failing longer than the schedule."""
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        return None
    reason: str | None = None
    if gone is not None:
        reason = f"the receiver answered 410 Gone at {now.isoformat()}"
    elif succeeded:  # it answers: whatever one message's trouble, the endpoint is fine
        endpoint.failing_since = None
    elif first_failure is not None:
        endpoint.failing_since = endpoint.failing_since or first_failure
        span = timedelta(seconds=sum(options.schedule))
        # 0.9: jitter may make the schedule run out a little before its nominal span
        if exhausted and now - endpoint.failing_since >= span * 0.9:
            reason = (
                f"failing since {endpoint.failing_since.isoformat()}, longer than the retry "
                f"schedule ({len(options.schedule)} attempts over {_human(span)})"
            )
    if reason is not None:
        endpoint.enabled = False
        endpoint.disabled_reason = reason
        endpoint.updated_at = now
    return reason


def _human(span: timedelta) -> str:
    seconds = span.total_seconds()
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds:.0f} seconds"


def deliver_endpoint(
    db: Database, endpoint_id: str, options: Options, *, now: Callable[[], datetime] = utcnow
) -> RoundStats:
    """One round for one endpoint (see the module docstring); a no-op if it is leased."""
    stats = RoundStats(endpoint_id)
    token = uuid7().hex
    chunk = max(MIN_CHUNK, options.concurrency * PER_LANE)
    # a chunk's longest run: each lane's deliveries one after another at the read cap
    lease_seconds = options.timeout * 2 * -(-chunk // options.concurrency) + 30
    started = time.monotonic()
    with db.write() as session:
        if not lease(session, endpoint_id, token, now(), lease_seconds + options.budget_seconds):
            return stats
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        if endpoint is None:
            return stats
        url, workspace_id = endpoint.url, endpoint.workspace_id
    stats.leased = True
    local = threading.local()
    opened: list[requests.Session] = []
    guard = threading.Lock()

    def session_of_thread() -> requests.Session:
        client = getattr(local, "client", None)
        if client is None:
            client = new_session()
            local.client = client
            with guard:
                opened.append(client)
        return client

    try:
        while time.monotonic() - started < options.budget_seconds:
            with db.write() as session:
                moment = now()
                if not lease(session, endpoint_id, token, moment, lease_seconds):
                    break  # disabled, deleted or taken over meanwhile
                claimed = claim(session, endpoint_id, moment, chunk)
                secrets = active_secrets(session, workspace_id, endpoint_id, now=moment)
            if not claimed:
                break
            results = send_all(url, claimed, secrets, options, session_of_thread)
            with db.write() as session:
                record(
                    session,
                    workspace_id,
                    endpoint_id,
                    claimed,
                    results,
                    options,
                    now=now(),
                    stats=stats,
                )
            if stats.disabled or len(results) < len(claimed):
                break  # disabled, or a lane met a failing receiver: try again next round
    finally:
        with db.write() as session:
            release(session, endpoint_id, token)
        for client in opened:
            client.close()
    stats.seconds = round(time.monotonic() - started, 3)
    return stats


__all__ = [
    "Claimed",
    "Options",
    "RoundStats",
    "claim",
    "deliver_endpoint",
    "due_endpoints",
    "lease",
    "record",
    "release",
    "send_all",
]
