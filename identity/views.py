"""Read models of profiles for the API: one profile with its identifiers and counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from identity.models import Profile, ProfileChannelCount, ProfileIdentifier
from identity.resolve import by_strength, owners_of
from pipeline.events import EventRecord, event_view
from pipeline.identifiers import normalize_identifier
from pipeline.models import EVENT_PROCESSED

_MAX_REDIRECTS = 16


def find_profile_id(
    session: Session, workspace_id: str, kind: str, value: str, default_region: str
) -> str | None:
    """The profile owning identifier ``kind:value`` (normalized first); raises ValueError."""
    normalized = normalize_identifier(kind, value, default_region)
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
    processed = [r for r in records if r.status == EVENT_PROCESSED]
    owners = profiles_of_events(session, workspace_id, [r.event.identifiers for r in processed])
    profile_of = {r.event.id: owner for r, owner in zip(processed, owners, strict=True)}
    return [{**event_view(r), "profile_id": profile_of.get(r.event.id)} for r in records]


def profiles_of_events(
    session: Session, workspace_id: str, identifier_sets: Sequence[Mapping[str, str]]
) -> list[str | None]:
    """For each event's identifiers, the profile it belongs to now (after any merge).

    An event belongs to the owner of its strongest identifier: resolution attaches every
    identifier of an event that nobody owned to the profile it chose, so that owner is the
    profile the event was counted in, and following ``merged_into`` gives where it is now.
    """
    keys = {(kind, value) for ids in identifier_sets for kind, value in ids.items()}
    if not keys:
        return [None] * len(identifier_sets)
    owners = {
        key: found.profile_id for key, found in owners_of(session, workspace_id, keys).items()
    }
    survivors = _survivors(session, workspace_id, set(owners.values()))
    found: list[str | None] = []
    for ids in identifier_sets:
        owner = next((owners[key] for key in by_strength(ids) if key in owners), None)
        found.append(survivors.get(owner, owner) if owner else None)
    return found


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


def profile_view(session: Session, workspace_id: str, profile_id: str) -> dict[str, Any] | None:
    """A profile as the API shows it; an id that was merged away redirects to the survivor."""
    requested = profile_id
    profile = None
    for _ in range(_MAX_REDIRECTS):
        profile = session.scalars(
            select(Profile).where(Profile.workspace_id == workspace_id, Profile.id == profile_id)
        ).first()
        if profile is None or profile.merged_into is None:
            break
        profile_id = profile.merged_into
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
        select(ProfileChannelCount.channel, ProfileChannelCount.count).where(
            ProfileChannelCount.profile_id == profile.id
        )
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
