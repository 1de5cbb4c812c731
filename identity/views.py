"""Read models of profiles for the API: a profile with its identifiers and counts, its
timeline, and the profile each event is counted in."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from identity.config import IdentityConfig
from identity.models import (
    IdentityConflict,
    Profile,
    ProfileEvent,
    ProfileIdentifier,
    ProfileTypeCount,
)
from identity.resolve import people_sharing
from pipeline.db import in_list
from pipeline.events import EventRecord, event_view, events_by_id
from pipeline.identifiers import normalize_identifier
from pipeline.models import EVENT_PROCESSED, Event

_MAX_REDIRECTS = 16
#: event ids per query (well under the bound-parameter limits)
_EVENT_CHUNK = 400


def find_profile_id(
    session: Session,
    workspace_id: str,
    kind: str,
    value: str,
    default_region: str,
    config: IdentityConfig | None = None,
) -> str | None:
    """The profile owning identifier ``kind:value`` (normalized first); raises ValueError.

    With ``config``, the value is compared as resolution compares it (email provider rules).
    """
    normalized = normalize_identifier(kind, value, default_region)
    if config is not None:
        normalized = config.canonical(kind, normalized)
    return session.scalars(
        select(ProfileIdentifier.profile_id).where(
            ProfileIdentifier.workspace_id == workspace_id,
            ProfileIdentifier.kind == kind,
            ProfileIdentifier.value == normalized,
        )
    ).first()


def event_views(
    session: Session, workspace_id: str, records: Sequence[EventRecord]
) -> list[dict[str, Any]]:
    """Events as the API shows them, each with the profile it is part of once processed."""
    processed = [r.event.id for r in records if r.status == EVENT_PROCESSED]
    profile_of = profiles_of_events(session, workspace_id, processed)
    return [{**event_view(r), "profile_id": profile_of.get(r.event.id)} for r in records]


def profiles_of_events(
    session: Session, workspace_id: str, event_ids: Sequence[int]
) -> dict[int, str]:
    """For each processed event, the profile it is counted in now (after any merge)."""
    chosen = sorted(set(event_ids))
    rows: list[Any] = []
    for start in range(0, len(chosen), _EVENT_CHUNK):
        rows += session.execute(
            select(ProfileEvent.event_id, ProfileEvent.profile_id).where(
                ProfileEvent.workspace_id == workspace_id,
                in_list(session, ProfileEvent.event_id, chosen[start : start + _EVENT_CHUNK]),
            )
        ).all()
    if not rows:
        return {}
    survivors = _survivors(session, workspace_id, {profile_id for _, profile_id in rows})
    return {event_id: survivors.get(pid, pid) for event_id, pid in rows}


def timeline(
    session: Session,
    workspace_id: str,
    profile_id: str,
    *,
    limit: int = 50,
    before: TimelineCursor | None = None,
) -> dict[str, Any] | None:
    """A profile's events on every channel, newest first (by when they happened).

    ``before`` continues a page: the answer's ``next_before`` names the last event shown,
    so events that share a timestamp are neither skipped nor repeated. ``None`` when no
    such profile exists; a merged-away id shows its survivor's timeline.
    """
    survivor = current_profile(session, workspace_id, profile_id)
    if survivor is None:
        return None
    query = select(ProfileEvent.event_id, ProfileEvent.occurred_at).where(
        ProfileEvent.workspace_id == workspace_id, ProfileEvent.profile_id == survivor.id
    )
    if before is not None:
        at, event_id = before
        query = query.where(
            or_(
                ProfileEvent.occurred_at < at,
                and_(ProfileEvent.occurred_at == at, ProfileEvent.event_id < event_id),
            )
        )
    page = session.execute(
        query.order_by(ProfileEvent.occurred_at.desc(), ProfileEvent.event_id.desc()).limit(limit)
    ).all()
    records = events_by_id(session, workspace_id, [event_id for event_id, _ in page])
    cursor = encode_cursor(page[-1][1], page[-1][0]) if len(page) == limit else None
    view: dict[str, Any] = {
        "profile_id": survivor.id,
        "events": [{**event_view(record), "event_id": record.event.id} for record in records],
        "next_before": cursor,
    }
    if survivor.id != profile_id:
        view["requested_id"] = profile_id
    return view


TimelineCursor = tuple[datetime, int]
_CURSOR_TIME = "%Y%m%dT%H%M%S%fZ"


def encode_cursor(occurred_at: datetime, event_id: int) -> str:
    """``next_before``: the time and log id of the last event of a page, URL-safe."""
    return f"{occurred_at.astimezone(UTC).strftime(_CURSOR_TIME)}.{event_id}"


def decode_cursor(text: str) -> TimelineCursor:
    """Read ``before``: a ``next_before`` token, or an ISO 8601 time with an offset.

    Raises ValueError with a reason a person can act on.
    """
    stamp, dot, event_id = text.partition(".")
    if dot and event_id.isdigit() and stamp.endswith("Z") and "-" not in stamp:
        try:
            return datetime.strptime(stamp, _CURSOR_TIME).replace(tzinfo=UTC), int(event_id)
        except ValueError:
            pass
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("before must be a next_before token or an ISO 8601 time") from None
    if at.tzinfo is None:
        raise ValueError("before needs a UTC offset (Z or +01:00)")
    return at.astimezone(UTC), 0  # event ids start at 1: every event at that instant is later


def _survivors(session: Session, workspace_id: str, profile_ids: set[str]) -> dict[str, str]:
    """Where each merged-away profile now lives (profiles never merged are left out)."""
    parent: dict[str, str] = {}
    frontier = profile_ids
    for _ in range(_MAX_REDIRECTS):
        rows = session.execute(
            select(Profile.id, Profile.merged_into).where(
                Profile.workspace_id == workspace_id,
                Profile.id.in_(sorted(frontier)),
                Profile.merged_into.is_not(None),
            )
        ).all()
        step = {pid: target for pid, target in rows if target}
        parent.update(step)
        frontier = set(step.values()) - parent.keys()
        if not frontier:
            break
    moved: dict[str, str] = {}
    for origin in parent:
        current, hops = origin, 0
        while current in parent and hops < _MAX_REDIRECTS:
            current, hops = parent[current], hops + 1
        moved[origin] = current
    return moved


def merged_members(
    session: Session,
    workspace_id: str,
    survivors: Collection[str],
    *,
    max_depth: int | None = None,
    max_rows: int | None = None,
) -> dict[str, str]:
    """Each of ``survivors`` and every profile row merged into one of them, directly or
    through others (member -> its survivor): one index search per level of merges.

    The reverse of :func:`_survivors`. ``max_depth``/``max_rows`` stop the walk early for
    callers that bound it.
    """
    owner = {survivor: survivor for survivor in survivors}
    frontier = set(owner)
    depth = 0
    while frontier and (max_depth is None or depth < max_depth):
        if max_rows is not None and len(owner) - len(survivors) >= max_rows:
            break
        rows = session.execute(
            select(Profile.id, Profile.merged_into).where(
                Profile.workspace_id == workspace_id,
                in_list(session, Profile.merged_into, sorted(frontier)),
            )
        ).all()
        found = {pid: into for pid, into in rows if pid not in owner and into is not None}
        owner.update({pid: owner[into] for pid, into in found.items()})
        frontier, depth = set(found), depth + 1
    return owner


def current_profile(session: Session, workspace_id: str, profile_id: str) -> Profile | None:
    """The profile, or the one it was merged into (following ``merged_into``)."""
    profile = None
    for _ in range(_MAX_REDIRECTS):
        profile = session.scalars(
            select(Profile).where(Profile.workspace_id == workspace_id, Profile.id == profile_id)
        ).first()
        if profile is None or profile.merged_into is None:
            break
        profile_id = profile.merged_into
    return profile


def profile_view(session: Session, workspace_id: str, profile_id: str) -> dict[str, Any] | None:
    """A profile as the API shows it; an id that was merged away redirects to the survivor."""
    requested = profile_id
    profile = current_profile(session, workspace_id, profile_id)
    if profile is None:
        return None
    identifiers = session.execute(
        select(
            ProfileIdentifier.kind,
            ProfileIdentifier.value,
            ProfileIdentifier.channel,
            ProfileIdentifier.first_seen_at,
            ProfileIdentifier.last_seen_at,
        )
        .where(ProfileIdentifier.profile_id == profile.id)
        .order_by(ProfileIdentifier.kind, ProfileIdentifier.value)
    ).all()
    channels = session.execute(
        select(ProfileTypeCount.channel, func.sum(ProfileTypeCount.count))
        .where(ProfileTypeCount.profile_id == profile.id)
        .group_by(ProfileTypeCount.channel)
    ).all()
    view: dict[str, Any] = {
        "id": profile.id,
        "traits": profile.traits,
        "identifiers": [
            {
                "kind": kind,
                "value": value,
                "channel": channel,
                "first_seen_at": first.isoformat(),
                "last_seen_at": last.isoformat(),
            }
            for kind, value, channel, first, last in identifiers
        ],
        "first_seen_at": profile.first_seen_at.isoformat(),
        "last_seen_at": profile.last_seen_at.isoformat(),
        "event_count": profile.event_count,
        "channels": {channel: count for channel, count in sorted(channels)},
        "created_at": profile.created_at.isoformat(),
        "updated_at": profile.updated_at.isoformat(),
    }
    if requested != profile.id:
        view["requested_id"] = requested
        view["merged_into"] = profile.id
    return view


_CONFLICT_SCAN = 5000


def list_conflicts(
    session: Session,
    workspace_id: str,
    *,
    profile_id: str | None = None,
    after: int = 0,
    limit: int = 100,
) -> tuple[list[dict[str, Any]], int | None]:
    """Joins the limits refused, oldest first, and the ``after`` cursor of the next page.

    With ``profile_id``, only those involving that profile (or one merged into it since);
    a page then looks at up to a few thousand conflicts, and the cursor goes on from there.
    """
    scan = limit if profile_id is None else _CONFLICT_SCAN
    rows = session.execute(
        select(IdentityConflict, Event.message_id)
        .outerjoin(Event, Event.id == IdentityConflict.event_id)
        .where(IdentityConflict.workspace_id == workspace_id, IdentityConflict.id > after)
        .order_by(IdentityConflict.id)
        .limit(scan)
    ).all()
    found: list[dict[str, Any]] = []
    last = after
    involved = {pid for conflict, _ in rows for pid in conflict.profile_ids}
    moved = _survivors(session, workspace_id, involved) if involved else {}
    for conflict, message_id in rows:
        last = conflict.id
        current = [moved.get(pid, pid) for pid in conflict.profile_ids]
        if profile_id is not None and profile_id not in current:
            continue
        found.append(
            {
                "id": conflict.id,
                "reason": conflict.reason,
                "kind": conflict.kind,
                "event": message_id,
                "profile_ids": conflict.profile_ids,
                "current_profile_ids": current,
                "detail": conflict.detail,
                "created_at": conflict.created_at.isoformat(),
            }
        )
        if len(found) == limit:
            break
    more = len(found) == limit or len(rows) == scan
    return found, (last if more and rows else None)


def list_shared(session: Session, workspace_id: str) -> list[dict[str, Any]]:
    """Identifiers flagged as shared (or cleared by an operator), with who shares them."""
    rows = session.execute(
        select(
            ProfileIdentifier.kind,
            ProfileIdentifier.value,
            ProfileIdentifier.profile_id,
            ProfileIdentifier.sharing,
        )
        .where(
            ProfileIdentifier.workspace_id == workspace_id,
            ProfileIdentifier.sharing.is_not(None),
        )
        .order_by(ProfileIdentifier.kind, ProfileIdentifier.value)
    ).all()
    found = []
    for kind, value, profile_id, sharing in rows:
        people = {profile_id} | people_sharing(session, workspace_id, f"{kind}:{value}")
        found.append(
            {
                "identifier": f"{kind}:{value}",
                "status": sharing,
                "owner": profile_id,
                "people": len(people),
                "profile_ids": sorted(people),
            }
        )
    return found


def set_sharing(
    session: Session, workspace_id: str, kind: str, value: str, *, shared: bool
) -> bool:
    """An operator's decision: ``shared`` (ignore it) or ``allowed`` (one person's, never
    flagged). False when no profile holds that identifier."""
    result = session.execute(
        update(ProfileIdentifier)
        .where(
            ProfileIdentifier.workspace_id == workspace_id,
            ProfileIdentifier.kind == kind,
            ProfileIdentifier.value == value,
        )
        .values(sharing="shared" if shared else "allowed")
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
