"""Wiring of webhook deliveries: feed → deliveries (fan-out), due endpoints → send rounds.

Why it lives in ``workers``: the fan-out reads identity's change feed and the full profile
view (identity + loyalty + labels), and the connectors package must not import those;
this module hands them over as plain data. The scheduler's ``ecrm.webhooks.dispatch``
calls :func:`dispatch` every relay interval; it publishes one
``ecrm.webhooks.deliver_endpoint`` per endpoint with due deliveries, which the webhook
worker (``ecrm worker --webhooks``, a thread pool) runs with :func:`deliver`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connectors.webhooks import retention
from connectors.webhooks.dispatch import Options, RoundStats, deliver_endpoint, due_endpoints
from connectors.webhooks.endpoints import EndpointNotFound, get_endpoint
from connectors.webhooks.fanout import (
    CHUNK,
    Change,
    FanoutStats,
    Target,
    advance,
    cursor,
    fan_out,
    targets,
)
from connectors.webhooks.models import WebhookCursor
from connectors.webhooks.retention import Pruned, prune_deliveries
from identity.changes import change_rows, delete_changes_before
from identity.models import CHANGES
from pipeline.db import first_id_since, in_write_chunks
from pipeline.envelope import utcnow
from pipeline.models import Workspace
from workers.profile_view import full_profiles
from workers.runtime import Runtime

log = structlog.get_logger(__name__)


class _Moved(Exception):
    """Another dispatcher advanced the cursor first: roll this chunk back."""


@dataclass
class DispatchStats:
    """One dispatch: the fan-out's totals and the endpoints handed to the webhook worker."""

    fanout: FanoutStats
    endpoints: list[str]


def options(runtime: Runtime) -> Options:
    """The sending options from the settings."""
    settings = runtime.settings
    return Options(
        timeout=settings.webhook_timeout,
        schedule=settings.webhook_retry_schedule,
        allow_private=settings.webhook_allow_private,
        concurrency=settings.webhook_concurrency,
    )


def feed_changes(session: Session, workspace_id: str, after: int, limit: int) -> list[Change]:
    """The change feed after ``after``, as the fan-out takes it."""
    return [
        Change(row.id, row.type, row.profile_id, row.data or {}, row.created_at)
        for row in change_rows(session, workspace_id, after, limit)
    ]


def _fan_out_chunk(runtime: Runtime, workspace_id: str, totals: FanoutStats) -> bool:
    """Fan out one chunk of the workspace's feed; True if there may be more."""
    coalesce = runtime.settings.webhook_coalesce_seconds
    try:
        with runtime.db.write() as session:
            now = utcnow()
            seen = cursor(session, workspace_id)
            endpoints = targets(session, workspace_id)
            if not endpoints:  # nobody listens: skip to the end of the feed at once
                last = session.scalar(
                    select(func.max(CHANGES.c.id)).where(CHANGES.c.workspace_id == workspace_id)
                )
                if (
                    last is not None
                    and last != seen
                    and not advance(session, workspace_id, seen, int(last), now)
                ):
                    raise _Moved
                return False
            changes = feed_changes(session, workspace_id, seen or 0, CHUNK)
            if not changes:
                return False
            stats = fan_out(
                session,
                workspace_id,
                changes,
                endpoints,
                lambda s, ids: full_profiles(s, workspace_id, ids),
                now=now,
                coalesce_seconds=coalesce,
            )
            if not advance(session, workspace_id, seen, changes[-1].id, now):
                raise _Moved
    except _Moved:
        return False
    totals.changes += stats.changes
    totals.deliveries += stats.deliveries
    totals.coalesced += stats.coalesced
    return len(changes) == CHUNK


def fan_out_all(runtime: Runtime) -> FanoutStats:
    """Turn every workspace's new profile changes into deliveries."""
    totals = FanoutStats()
    with runtime.db.read() as session:
        workspaces = list(session.scalars(select(Workspace.id).order_by(Workspace.id)))
    for workspace_id in workspaces:
        while _fan_out_chunk(runtime, workspace_id, totals):
            pass
    if totals.deliveries or totals.coalesced:
        log.info(
            "webhooks_fanned_out",
            changes=totals.changes,
            deliveries=totals.deliveries,
            coalesced=totals.coalesced,
        )
    return totals


def dispatch(runtime: Runtime, publish: Callable[[str], None]) -> DispatchStats:
    """Fan out, then ask for a send round for each endpoint with deliveries due."""
    fanned = fan_out_all(runtime)
    with runtime.db.read() as session:
        endpoints = due_endpoints(session, utcnow())
    for endpoint_id in endpoints:
        publish(endpoint_id)
    return DispatchStats(fanned, endpoints)


def replay(runtime: Runtime, workspace_id: str, endpoint_id: str, since: datetime) -> int:
    """Queue again, for one endpoint, every change since ``since`` it subscribes to.

    Replayed deliveries are new messages (new ``webhook-id``, ``replay: true`` in the log)
    built from the feed as it is now: stateful types carry the profile's current state and
    the change's version, so a consumer that kept a newer version drops them. Changes from
    before the endpoint existed, or while it was disabled, are included: that is what a
    replay is for. Raises :class:`EndpointNotFound` for an unknown endpoint.
    """
    with runtime.db.read() as session:
        found = get_endpoint(session, workspace_id, endpoint_id, now=utcnow())
        if found is None:
            raise EndpointNotFound(endpoint_id)
        c = CHANGES.c
        first = session.scalar(
            select(func.min(c.id)).where(c.workspace_id == workspace_id, c.created_at >= since)
        )
    if first is None:
        return 0
    target = Target(endpoint_id, tuple(found["events"]), datetime.min.replace(tzinfo=UTC))
    after, queued = int(first) - 1, 0
    while True:
        with runtime.db.write() as session:
            changes = feed_changes(session, workspace_id, after, CHUNK)
            if not changes:
                break
            stats = fan_out(
                session,
                workspace_id,
                changes,
                [target],
                lambda s, ids: full_profiles(s, workspace_id, ids),
                now=utcnow(),
                coalesce_seconds=0,
                replay=True,
            )
        queued += stats.deliveries
        after = changes[-1].id
    log.info("webhooks_replayed", endpoint_id=endpoint_id, since=since.isoformat(), queued=queued)
    return queued


def prune(runtime: Runtime, keep: timedelta | None = None) -> Pruned:
    """Apply the retention (``ECRM_WEBHOOK_RETENTION_DAYS``, or ``keep``); 0 days keeps all.

    Finished deliveries and their attempts go (:mod:`connectors.webhooks.retention`), then
    each workspace's change feed older than the horizon, but never past its fan-out
    cursor: a change not yet turned into deliveries stays however old.
    """
    if keep is None:
        days = runtime.settings.webhook_retention_days
        if days <= 0:
            return Pruned()
        keep = timedelta(days=days)
    horizon = utcnow() - keep
    deliveries, attempts = prune_deliveries(runtime.db, horizon)
    with runtime.db.read() as session:
        old = first_id_since(session, CHANGES, horizon)
        feed_read = select(WebhookCursor.workspace_id, WebhookCursor.change_id)
        cursors = [(str(ws), int(seen)) for ws, seen in session.execute(feed_read)]
    changes = 0
    for workspace_id, seen in cursors:
        step = partial(
            delete_changes_before,
            workspace_id=workspace_id,
            below=min(old, seen + 1),
            limit=retention.CHUNK,
        )
        changes += in_write_chunks(runtime.db, step, retention.CHUNK, retention.MOST)
    pruned = Pruned(deliveries, attempts, changes)
    if deliveries or changes:
        log.info("webhooks_pruned", **pruned.view())
    return pruned


def deliver(runtime: Runtime, endpoint_id: str) -> RoundStats:
    """One send round for an endpoint (a no-op if another round holds it)."""
    stats = deliver_endpoint(runtime.db, endpoint_id, options(runtime))
    if stats.attempts:
        log.info(
            "webhooks_sent",
            endpoint_id=endpoint_id,
            attempts=stats.attempts,
            delivered=stats.delivered,
            retrying=stats.retrying,
            failed=stats.failed,
            seconds=stats.seconds,
        )
    if stats.disabled:
        log.warning("webhook_endpoint_disabled", endpoint_id=endpoint_id, reason=stats.disabled)
    return stats


__all__ = [
    "DispatchStats",
    "deliver",
    "dispatch",
    "fan_out_all",
    "feed_changes",
    "options",
    "prune",
    "replay",
]
