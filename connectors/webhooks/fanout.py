"""Turn the profile change feed into deliveries: one signed-to-be message per endpoint.

Why deliveries are written as rows (an outbox) rather than sent from the feed directly:
each endpoint fails, retries and is replayed on its own, and the exact body must be the
same on every retry of a message (the receiver dedupes on ``webhook-id``). The feed is read
in id order from a per-workspace cursor, advanced in the same transaction as the rows it
produced (a compare-and-set, so two dispatchers never fan out the same change twice).

The payload (``type``, ``timestamp``, ``version``, ``profile_id``, ``data``) is built here:
``data`` of ``profile.created``/``profile.updated`` is the profile's current state (what
``GET /v1/profiles/{id}`` shows), ``profile.merged`` adds the survivor's state to the merge
details, other types carry the change's own data. ``version`` is the change id: the feed's
ids only grow, so a consumer keeps the highest version it has seen per profile.

Coalescing: a ``profile.created``/``profile.updated`` delivery waits ``coalesce_seconds``
before its first attempt; a later update of the same profile while it still waits (never
attempted, and still the newest delivery of that profile for the endpoint, so order is
kept) refreshes it instead of adding another message. A replay folds a profile's updates
within the run the same way: each would carry the same current state.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from connectors.webhooks.endpoints import endpoint_wants
from connectors.webhooks.models import (
    OPEN_PREDICATE,
    PENDING,
    RETRYING,
    WebhookCursor,
    WebhookDelivery,
    WebhookEndpoint,
)
from connectors.webhooks.signing import new_message_id
from pipeline.db import dialect_insert, in_list

CREATED = "profile.created"
UPDATED = "profile.updated"
MERGED = "profile.merged"
#: the types whose ``data`` is the profile's current state, and which coalesce
STATEFUL = frozenset({CREATED, UPDATED})
#: feed types that are delivered under another name: a label change is a profile update
ALIASES: Mapping[str, str] = {
    "profile.tag_added": UPDATED,
    "profile.tag_removed": UPDATED,
    "profile.segment_entered": UPDATED,
    "profile.segment_exited": UPDATED,
    "profile.trait_set": UPDATED,
    "profile.trait_unset": UPDATED,
}
#: changes read per transaction
CHUNK = 500

#: the profiles' current state by id (``None``: no such profile any more)
StateReader = Callable[[Session, Sequence[str]], Mapping[str, dict[str, Any] | None]]


@dataclass(frozen=True)
class Change:
    """One row of the profile change feed, as the fan-out needs it."""

    id: int
    type: str
    profile_id: str
    data: Mapping[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Target:
    """An enabled endpoint: its filter, and the time before which it hears of nothing."""

    id: str
    events: tuple[str, ...]
    created_at: datetime


@dataclass
class FanoutStats:
    """What one fan-out did: changes read, deliveries added, updates folded into one."""

    changes: int = 0
    deliveries: int = 0
    coalesced: int = 0


def delivery_type(change_type: str) -> str:
    """The webhook type a feed change is delivered as (label changes: ``profile.updated``)."""
    return ALIASES.get(change_type, change_type)


def targets(session: Session, workspace_id: str) -> list[Target]:
    """The workspace's enabled endpoints."""
    rows = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.events, WebhookEndpoint.created_at)
        .where(WebhookEndpoint.workspace_id == workspace_id, WebhookEndpoint.enabled.is_(True))
        .order_by(WebhookEndpoint.id)
    )
    return [Target(row.id, tuple(row.events or ()), row.created_at) for row in rows]


def cursor(session: Session, workspace_id: str) -> int | None:
    """The last change id fanned out, ``None`` before the first fan-out."""
    return session.scalar(
        select(WebhookCursor.change_id).where(WebhookCursor.workspace_id == workspace_id)
    )


def advance(session: Session, workspace_id: str, seen: int | None, to: int, now: datetime) -> bool:
    """Move the cursor from ``seen`` to ``to``; False if another dispatcher moved it first."""
    if seen is None:  # two first fan-outs at once: the second waits, then inserts nothing
        created = session.execute(
            dialect_insert(session)(WebhookCursor)
            .values(workspace_id=workspace_id, change_id=to, updated_at=now)
            .on_conflict_do_nothing(index_elements=["workspace_id"])
            .returning(WebhookCursor.workspace_id)
        )
        return created.scalar_one_or_none() is not None
    moved = session.execute(
        update(WebhookCursor)
        .where(WebhookCursor.workspace_id == workspace_id, WebhookCursor.change_id == seen)
        .values(change_id=to, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(moved.rowcount)  # type: ignore[attr-defined]


def payload(change: Change, type_: str, state: Mapping[str, Any] | None) -> dict[str, Any]:
    """The JSON a receiver gets for ``change`` (see the module docstring)."""
    if type_ in STATEFUL:
        data: dict[str, Any] = dict(state) if state is not None else {"id": change.profile_id}
    elif type_ == MERGED:
        data = {**change.data, "profile": dict(state) if state is not None else None}
    else:
        data = dict(change.data)
    return {
        "type": type_,
        "timestamp": change.created_at.isoformat(),
        "version": change.id,
        "profile_id": change.profile_id,
        "data": data,
    }


def encode(document: Mapping[str, Any]) -> str:
    """The body as sent: compact JSON, keys in the order built (signatures cover bytes)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str)


def fan_out(
    session: Session,
    workspace_id: str,
    changes: Sequence[Change],
    endpoints: Sequence[Target],
    states: StateReader,
    *,
    now: datetime,
    coalesce_seconds: float,
    replay: bool = False,
) -> FanoutStats:
    """Write the deliveries of ``changes`` (feed order) to the endpoints that want them."""
    stats = FanoutStats(changes=len(changes))
    wanted: list[tuple[Change, str, Target]] = []
    for change in changes:
        type_ = delivery_type(change.type)
        for endpoint in endpoints:
            if change.created_at >= endpoint.created_at and endpoint_wants(endpoint.events, type_):
                wanted.append((change, type_, endpoint))
    if not wanted:
        return stats
    need_state = sorted(
        {change.profile_id for change, type_, _ in wanted if type_ in STATEFUL or type_ == MERGED}
    )
    state = dict(states(session, need_state)) if need_state else {}
    # the newest delivery of each (endpoint, profile): updates fold into it while it waits
    newest = {} if replay else _newest(session, wanted)
    blocked = _blocked_until(session, wanted)
    hold = timedelta(seconds=max(coalesce_seconds, 0.0))
    rows: list[dict[str, Any]] = []
    for change, type_, endpoint in wanted:
        key = (endpoint.id, change.profile_id)
        document = payload(change, type_, state.get(change.profile_id))
        last = newest.get(key)
        if type_ == UPDATED and last is not None and _fold(session, last, change, document, now):
            stats.coalesced += 1
            continue
        row = {
            "message_id": new_message_id(),
            "workspace_id": workspace_id,
            "endpoint_id": endpoint.id,
            "profile_id": change.profile_id,
            "type": type_,
            "change_id": change.id,
            "coalesced": 1,
            "replay": replay,
            "body": encode(document),
            "state": PENDING,
            "attempts": 0,
            "next_attempt_at": max(
                now + hold if type_ in STATEFUL and not replay else now,
                blocked.get(key, now),
            ),
            "last_status": None,
            "last_error": None,
            "created_at": now,
            "updated_at": now,
            "delivered_at": None,
        }
        rows.append(row)
        newest[key] = _Pending(row, None)
    if rows:
        session.execute(insert(WebhookDelivery), rows)
    stats.deliveries = len(rows)
    return stats


@dataclass
class _Pending:
    """The newest delivery of an (endpoint, profile): a row of this run, or a stored id."""

    row: dict[str, Any] | None
    stored_id: int | None
    stored_type: str = ""


def _newest(session: Session, wanted: Sequence[tuple[Change, str, Target]]) -> dict[Any, _Pending]:
    """For the endpoints and profiles at hand, their newest open delivery if it still waits
    (a delivered or given-up one is history: a new update simply queues)."""
    endpoint_ids = sorted({target.id for _, _, target in wanted})
    profile_ids = sorted({change.profile_id for change, _, _ in wanted})
    d = WebhookDelivery
    latest = (
        select(func.max(d.id))
        .where(in_list(session, d.endpoint_id, endpoint_ids))
        .where(in_list(session, d.profile_id, profile_ids))
        .where(OPEN_PREDICATE)
        .group_by(d.endpoint_id, d.profile_id)
    )
    rows = session.execute(
        select(d.id, d.endpoint_id, d.profile_id, d.type, d.state, d.attempts).where(
            d.id.in_(latest)
        )
    )
    found: dict[Any, _Pending] = {}
    for row in rows:
        if row.state == PENDING and row.attempts == 0 and row.type in STATEFUL:
            found[row.endpoint_id, row.profile_id] = _Pending(None, row.id, row.type)
        else:  # something else came last: a new update must queue behind it
            found[row.endpoint_id, row.profile_id] = _Pending(None, None)
    return found


def _blocked_until(
    session: Session, wanted: Sequence[tuple[Change, str, Target]]
) -> dict[tuple[str, str], datetime]:
    """When the retrying deliveries of these profiles try again: a new one waits behind."""
    endpoint_ids = sorted({target.id for _, _, target in wanted})
    profile_ids = sorted({change.profile_id for change, _, _ in wanted})
    d = WebhookDelivery
    rows = session.execute(
        select(d.endpoint_id, d.profile_id, func.max(d.next_attempt_at))
        .where(in_list(session, d.endpoint_id, endpoint_ids))
        .where(in_list(session, d.profile_id, profile_ids))
        .where(OPEN_PREDICATE, d.state == RETRYING)
        .group_by(d.endpoint_id, d.profile_id)
    )
    return {(endpoint_id, profile_id): until for endpoint_id, profile_id, until in rows}


def _fold(
    session: Session, last: _Pending, change: Change, document: dict[str, Any], now: datetime
) -> bool:
    """Refresh the waiting delivery ``last`` with ``change``; False if it cannot take it.

    The waiting delivery keeps its type (a created-then-updated profile stays created). A
    stored one is updated only if it is still unattempted (the condition is in the UPDATE,
    so a dispatcher claiming it at the same moment wins and a new row is added).
    """
    if last.row is not None:
        if last.row["type"] not in STATEFUL:
            return False
        last.row.update(
            body=encode({**document, "type": last.row["type"]}),
            change_id=change.id,
            coalesced=last.row["coalesced"] + 1,
            updated_at=now,
        )
        return True
    if last.stored_id is None:
        return False
    d = WebhookDelivery
    folded = session.execute(
        update(d)
        .where(d.id == last.stored_id, d.state == PENDING, d.attempts == 0)
        .values(
            body=encode({**document, "type": last.stored_type}),
            change_id=change.id,
            coalesced=d.coalesced + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if folded.rowcount:  # type: ignore[attr-defined]
        return True
    last.stored_id = None  # claimed meanwhile: later updates queue behind it
    return False


__all__ = [
    "ALIASES",
    "CHUNK",
    "Change",
    "FanoutStats",
    "StateReader",
    "Target",
    "advance",
    "cursor",
    "delivery_type",
    "encode",
    "fan_out",
    "payload",
    "targets",
]
