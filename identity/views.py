"""Read models of profiles for the API: one profile with its identifiers and counts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from identity.models import Profile, ProfileChannelCount, ProfileIdentifier
from pipeline.identifiers import normalize_identifier

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
