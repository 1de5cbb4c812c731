"""Tables identity owns: unified profiles, the identifiers that point at them, counts.

Why counts per type and channel live in their own table: two workers may add to the same
profile at once; an ``INSERT … ON CONFLICT DO UPDATE SET count = count + n`` is atomic on both
databases, where a JSON counter would need a read-modify-write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.db import Base, BigId, JsonDoc, UTCDateTime


class Profile(Base):
    """A unified customer profile derived from the event log."""

    __tablename__ = "profiles"
    __table_args__ = (
        UniqueConstraint("workspace_id", "id", name="uq_profiles_workspace_id"),
        # the profiles merged into one (an unmerge recomputes them all)
        Index(
            "ix_profiles_merged_into",
            "workspace_id",
            "merged_into",
            sqlite_where=text("merged_into IS NOT NULL"),
            postgresql_where=text("merged_into IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    traits: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    #: per trait, the ``occurred_at`` (ISO) of the event that set it: most recent wins
    trait_times: Mapped[dict[str, str]] = mapped_column(JsonDoc)
    #: per trait, the source of the event that set it (source priority, see identity.traits)
    trait_sources: Mapped[dict[str, str]] = mapped_column(
        JsonDoc, default=dict, server_default=text("'{}'")
    )
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    event_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    merged_into: Mapped[str | None] = mapped_column(String(40), nullable=True)


class ProfileIdentifier(Base):
    """One normalized identifier (kind, value) and the profile it belongs to."""

    __tablename__ = "profile_identifiers"
    __table_args__ = (
        UniqueConstraint("workspace_id", "kind", "value", name="uq_identifiers_value"),
        Index("ix_identifiers_profile", "profile_id"),
        Index(
            "ix_identifiers_sharing",
            "workspace_id",
            "sharing",
            sqlite_where=text("sharing IS NOT NULL"),
            postgresql_where=text("sharing IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: no foreign key to workspaces: see :data:`UNCHECKED_WORKSPACE` (migration 0016)
    workspace_id: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(String(256))
    profile_id: Mapped[str] = mapped_column(String(40), ForeignKey("profiles.id"))
    channel: Mapped[str] = mapped_column(String(16))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: provenance, for ``explain``: the event that attached it, and the identifier of that
    #: event that already belonged to the profile (``kind:value``; none: it founded it)
    source_event_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    linked_by: Mapped[str | None] = mapped_column(String(300), nullable=True)
    #: the profile it was first attached to (``profile_id`` moves with merges; this stays)
    attached_to: Mapped[str | None] = mapped_column(String(40), nullable=True)
    #: ``shared`` (several people use it: resolution ignores it), ``allowed`` (an operator
    #: said it is one person's: never flagged), or none
    sharing: Mapped[str | None] = mapped_column(String(16), nullable=True)


class ProfileMerge(Base):
    """One merge, audited: which profile went into which, because of which event and key.

    ``evidence`` holds what was compared: for a deterministic merge the identifier both
    sides claimed (``{"rule": "shared_identifier", "kind": ..., "value": ...}``); the
    identifiers the merged profile brought are listed so an unmerge can find them.
    """

    __tablename__ = "profile_merges"
    __table_args__ = (
        Index("ix_profile_merges_survivor", "workspace_id", "survivor_id"),
        Index("ix_profile_merges_merged", "workspace_id", "merged_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    survivor_id: Mapped[str] = mapped_column(String(40))
    merged_id: Mapped[str] = mapped_column(String(40))
    event_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    rule: Mapped[str] = mapped_column(String(64))
    evidence: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: the unmerge (``identity_splits.id``) that recomputed this merge's cluster: the audit
    #: stays, but the merge no longer describes the profile (the replay's merges do)
    undone_by: Mapped[int | None] = mapped_column(BigId, nullable=True)


class IdentityConflict(Base):
    """A join that resolution refused (a limit would break), kept for people to look at."""

    __tablename__ = "identity_conflicts"
    __table_args__ = (
        Index("ix_identity_conflicts_workspace", "workspace_id", "id"),
        Index("ix_identity_conflicts_identifier", "workspace_id", "identifier"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    event_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    #: ``merge_refused`` (two profiles), ``distinct_person`` (a new person beside an owner)
    #: or ``identifier_refused`` (one more of a kind than allowed)
    reason: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    #: the profiles involved, the event's profile first
    profile_ids: Mapped[list[str]] = mapped_column(JsonDoc)
    #: ``kind:value`` the people involved share (counted by shared-identifier detection)
    identifier: Mapped[str | None] = mapped_column(String(300), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MatchKey(Base):
    """A blocking key under which probabilistic matching finds a profile again.

    Why a table of keys: candidates for a record are then an index search per key (a
    postcode with a surname, a date of birth), never a scan of every profile's traits.
    """

    __tablename__ = "match_keys"

    workspace_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("workspaces.id"), primary_key=True
    )
    block: Mapped[str] = mapped_column(String(300), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(40), primary_key=True)


class IdentityReview(Base):
    """A probable match a person must decide on (between the two thresholds)."""

    __tablename__ = "identity_reviews"
    __table_args__ = (Index("ix_identity_reviews_status", "workspace_id", "status", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    event_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    #: the record's profile and the candidate it may be
    profile_id: Mapped[str] = mapped_column(String(40))
    candidate_id: Mapped[str] = mapped_column(String(40))
    probability: Mapped[float] = mapped_column(Float)
    evidence: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    #: pending | accepted | rejected
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(120), nullable=True)


class IdentitySplit(Base):
    """An unmerge: two sets of identifiers that must never again be in one profile.

    Why a rule rather than a one-off edit: the next event carrying identifiers of both sides
    would merge them again. Resolution reads the sides (:class:`IdentitySplitMember`) and
    refuses any attachment or merge that would put both in one profile (a ``kept_apart``
    conflict); replaying the log with the rule in place gives the unmerged graph.
    """

    __tablename__ = "identity_splits"
    __table_args__ = (Index("ix_identity_splits_workspace", "workspace_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    #: the profile it was asked on, and what was split off: ``identifier`` or ``source``
    profile_id: Mapped[str] = mapped_column(String(40))
    mode: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    requested_by: Mapped[str | None] = mapped_column(String(120), nullable=True)
    #: what the recomputation produced: profiles, events and identifiers on each side
    result: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IdentitySplitMember(Base):
    """One identifier on one side (``a``: split off, ``b``: kept) of an unmerge."""

    __tablename__ = "identity_split_members"
    __table_args__ = (Index("ix_identity_split_members_key", "workspace_id", "kind", "value"),)

    split_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("identity_splits.id"), primary_key=True, autoincrement=False
    )
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(256), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    side: Mapped[str] = mapped_column(String(1))


class ProfileChange(Base):
    """A change to profiles other systems may want to hear of (``profile.unmerged``, …).

    Why a table: the change is written in the transaction that makes it, so a subscriber
    (downstream webhooks) reading this feed in id order never misses one and never hears
    of one that was rolled back.
    """

    __tablename__ = "profile_changes"
    __table_args__ = (Index("ix_profile_changes_workspace", "workspace_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: no foreign key to workspaces: see :data:`UNCHECKED_WORKSPACE` (migration 0016)
    workspace_id: Mapped[str] = mapped_column(String(63))
    #: past tense, like events: ``profile.unmerged``, ``profile.erased``
    type: Mapped[str] = mapped_column(String(64))
    profile_id: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ProfileTypeCount(Base):
    """How many events a profile has per type and channel, and the latest one's time.

    Why kept: a history condition ("3rd order in 30 days", "no visit for 60 days") needs
    the profile's count of a type before the batch's span. Counting it from
    ``profile_events`` reads the profile's whole history at every batch; this row holds
    the answer for all of it, so only the rows after a moment need reading (see
    :mod:`personalization.rules.history_batch`). The profile's events per channel are
    these rows summed by channel (one table to keep, not two). A batch adds its events,
    a merge hands the merged profile's rows to the survivor, an unmerge rebuilds them by
    replaying the events.
    """

    __tablename__ = "profile_type_counts"

    #: no foreign key to workspaces: see :data:`UNCHECKED_WORKSPACE`
    workspace_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(40), ForeignKey("profiles.id"), primary_key=True)
    type: Mapped[str] = mapped_column(String(64), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ProfileEvent(Base):
    """Which profile an event was counted in: the profile's timeline, in event time.

    Why stored rather than derived from identifiers: an event's identifiers may later belong
    to several profiles (a conflict left unmerged) or move (a merge), while the event was
    counted exactly once, in one profile. A merge re-points these rows to the survivor; a
    history condition ("3rd order in 30 days") and the timeline read them by index.
    """

    __tablename__ = "profile_events"
    __table_args__ = (
        Index(
            "ix_profile_events_timeline", "workspace_id", "profile_id", "occurred_at", "event_id"
        ),
    )

    event_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("events.id"), primary_key=True, autoincrement=False
    )
    #: no foreign key to workspaces: see :data:`UNCHECKED_WORKSPACE` (migration 0016)
    workspace_id: Mapped[str] = mapped_column(String(63))
    profile_id: Mapped[str] = mapped_column(String(40), ForeignKey("profiles.id"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: the event's type, copied: history by type then needs no join with ``events``
    type: Mapped[str] = mapped_column(String(64))


#: Tables whose ``workspace_id`` has no foreign key. Why: they are derived from the event
#: log, written only by resolution in the event's own workspace (workspaces are never
#: deleted), and take a row per event or identifier; the key's check cost PostgreSQL about
#: 4 ms per 500 rows on each, a sixth of a batch's writes. Their keys to profiles and
#: events stay.
UNCHECKED_WORKSPACE = (
    "profile_identifiers",
    "profile_changes",
    "profile_events",
    "profile_type_counts",
)

#: Core tables for bulk statements (typed for mypy).
PROFILES = cast(Table, Profile.__table__)
IDENTIFIERS = cast(Table, ProfileIdentifier.__table__)
PROFILE_EVENTS = cast(Table, ProfileEvent.__table__)
TYPE_COUNTS = cast(Table, ProfileTypeCount.__table__)
MERGES = cast(Table, ProfileMerge.__table__)
CONFLICTS = cast(Table, IdentityConflict.__table__)
MATCH_KEYS = cast(Table, MatchKey.__table__)
REVIEWS = cast(Table, IdentityReview.__table__)
SPLITS = cast(Table, IdentitySplit.__table__)
SPLIT_MEMBERS = cast(Table, IdentitySplitMember.__table__)
CHANGES = cast(Table, ProfileChange.__table__)
