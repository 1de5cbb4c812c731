"""Exact-identifier profile resolution (the foundation's stand-in for full identity).

Each event is attached to the profile that already owns the strongest of its identifiers
(``user_id`` before ``email`` before ``anonymous_id``…); if none is known, a new profile is
created and owns them all. Identifiers of an event that no profile owns yet are attached
to the chosen profile, so ``anonymousId`` then ``userId`` on the same event link up.
Two known identifiers owned by *different* profiles are left apart: merging is the
identity issue's work, with limits and audit, and must not be done casually here.

Why it is written per batch, not per event: one lookup of every identifier in the batch,
one bulk insert of new profiles and identifiers, one bulk update of touched profiles.
That keeps the database round trips per batch constant, which is where throughput is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session
from uuid6 import uuid7

from identity import pg_writes, row_writes
from identity.models import (
    IDENTIFIERS,
    PROFILES,
)
from pipeline import StoredEvent, TransientError, dialect_insert, utcnow

#: Which identifier decides the profile when an event carries several.
PRIORITY = ("user_id", "customer_id", "email", "phone", "loyalty_card", "device_id", "anonymous_id")
_RANK = {kind: rank for rank, kind in enumerate(PRIORITY)}
_LOOKUP_CHUNK = 400

Key = tuple[str, str]


def new_profile_id() -> str:
    """Time-ordered profile id (``prof_`` + UUIDv7 hex)."""
    return "prof_" + uuid7().hex


@dataclass
class _Delta:
    """What one batch adds to one profile."""

    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    channels: Counter[str] = field(default_factory=Counter)
    trait_updates: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)

    def add(self, event: StoredEvent) -> None:
        self.count += 1
        self.channels[event.channel] += 1
        self.first = event.occurred_at if self.first is None else min(self.first, event.occurred_at)
        self.last = event.occurred_at if self.last is None else max(self.last, event.occurred_at)
        if event.traits:
            self.trait_updates.append((event.occurred_at, event.traits))


def rank(kind: str) -> int:
    """Position of an identifier kind in :data:`PRIORITY` (unknown kinds come last)."""
    return _RANK.get(kind, len(PRIORITY))


def by_strength(identifiers: Mapping[str, str]) -> list[Key]:
    """An event's identifiers, strongest first: the first one owned decides its profile."""
    return sorted(identifiers.items(), key=lambda item: rank(item[0]))


def merge_traits(
    traits: dict[str, Any],
    trait_times: dict[str, str],
    updates: Iterable[tuple[datetime, dict[str, Any]]],
) -> tuple[dict[str, Any], dict[str, str]]:
    """Most recent wins per trait, judged by when the event happened (not when it arrived)."""
    traits, trait_times = dict(traits), dict(trait_times)
    for occurred_at, values in sorted(updates, key=lambda item: item[0]):
        stamp = occurred_at.isoformat()
        for name, value in values.items():
            if trait_times.get(name, "") <= stamp:
                traits[name] = value
                trait_times[name] = stamp
    return traits, trait_times


class Owner(NamedTuple):
    """Who owns an identifier, when it was last seen, and its row (for cheap updates)."""

    profile_id: str
    last_seen_at: datetime
    row_id: int


def owners_of(session: Session, workspace_id: str, keys: Iterable[Key]) -> dict[Key, Owner]:
    """Who owns each (kind, value), and when it was last seen; unknown keys are left out.

    One query per kind, ``kind = ? AND value IN (…)``: each value is an index search. (A
    row-value ``(kind, value) IN (…)`` made SQLite scan every identifier of the workspace.)
    """
    by_kind: dict[str, list[str]] = {}
    for kind, value in keys:
        by_kind.setdefault(kind, []).append(value)
    ids = IDENTIFIERS.c  # Core columns: plain tuples back, no ORM loading per row
    owners: dict[Key, Owner] = {}
    for kind, values in sorted(by_kind.items()):
        values.sort()
        for start in range(0, len(values), _LOOKUP_CHUNK):
            rows = session.execute(
                select(ids.value, ids.profile_id, ids.last_seen_at, ids.id).where(
                    ids.workspace_id == workspace_id,
                    ids.kind == kind,
                    ids.value.in_(values[start : start + _LOOKUP_CHUNK]),
                )
            )
            for value, profile_id, last_seen, row_id in rows:
                owners[(kind, value)] = Owner(profile_id, last_seen, row_id)
    return owners


@dataclass
class Plan:
    """Everything one batch will write, computed from what was read.

    Why a plan: on SQLite the reads and the computing can then happen outside the single
    write lock (other processes keep writing meanwhile), and :func:`write_plan` applies
    it with conditional statements that detect anything that changed in between.
    """

    workspace_id: str
    now: datetime
    new_profiles: list[dict[str, Any]] = field(default_factory=list)
    new_identifiers: list[dict[str, Any]] = field(default_factory=list)
    profile_updates: list[dict[str, Any]] = field(default_factory=list)
    identifier_touches: list[dict[str, Any]] = field(default_factory=list)
    channel_counts: list[dict[str, Any]] = field(default_factory=list)
    #: one row per event: the profile it is counted in (the timeline)
    profile_events: list[dict[str, Any]] = field(default_factory=list)


def plan_events(
    session: Session,
    workspace_id: str,
    events: Sequence[StoredEvent],
    *,
    lock: bool = False,
    now: datetime | None = None,
) -> Plan:
    """Attach each event to a profile and compute the profiles' new state (reads only).

    ``lock`` takes row locks on the existing profiles (PostgreSQL ``FOR UPDATE``), for
    callers that plan and write in one transaction.
    """
    plan = Plan(workspace_id, now or utcnow())
    keys = {(kind, value) for event in events for kind, value in event.identifiers.items()}
    known = owners_of(session, workspace_id, keys)
    owner: dict[Key, str] = {key: found.profile_id for key, found in known.items()}
    new_keys: dict[Key, dict[str, Any]] = {}
    seen_again: dict[Key, datetime] = {}
    new_profiles: set[str] = set()
    deltas: dict[str, _Delta] = {}

    for event in events:
        ranked = by_strength(event.identifiers)
        profile_id = next((owner[k] for k in ranked if k in owner), None)
        if profile_id is None:
            profile_id = new_profile_id()
            new_profiles.add(profile_id)
        for key in ranked:
            if key not in owner:
                owner[key] = profile_id
                new_keys[key] = {
                    "profile_id": profile_id,
                    "channel": event.channel,
                    "first_seen_at": event.occurred_at,
                    "last_seen_at": event.occurred_at,
                }
            elif key in new_keys:
                row = new_keys[key]
                row["last_seen_at"] = max(row["last_seen_at"], event.occurred_at)
            elif event.occurred_at > seen_again.get(key, known[key].last_seen_at):
                seen_again[key] = event.occurred_at
        deltas.setdefault(profile_id, _Delta()).add(event)
        plan.profile_events.append(
            {
                "event_id": event.id,
                "workspace_id": workspace_id,
                "profile_id": profile_id,
                "occurred_at": event.occurred_at,
            }
        )

    for profile_id in sorted(new_profiles):
        delta = deltas[profile_id]
        traits, times = merge_traits({}, {}, delta.trait_updates)
        plan.new_profiles.append(
            {
                "id": profile_id,
                "workspace_id": workspace_id,
                "traits": traits,
                "trait_times": times,
                "first_seen_at": delta.first,
                "last_seen_at": delta.last,
                "event_count": delta.count,
                "created_at": plan.now,
                "updated_at": plan.now,
            }
        )
    plan.new_identifiers = [
        {"workspace_id": workspace_id, "kind": kind, "value": value, **data}
        for (kind, value), data in sorted(new_keys.items())
    ]
    plan.profile_updates = _profile_updates(
        session, workspace_id, set(deltas) - new_profiles, deltas, lock=lock, now=plan.now
    )
    plan.identifier_touches = [
        {"rid": known[key].row_id, "seen": at} for key, at in sorted(seen_again.items())
    ]
    plan.channel_counts = [
        {"workspace_id": workspace_id, "profile_id": pid, "channel": channel, "count": n}
        for pid in sorted(deltas)
        for channel, n in sorted(deltas[pid].channels.items())
    ]
    return plan


def apply_events(
    session: Session,
    workspace_id: str,
    events: Sequence[StoredEvent],
    *,
    now: datetime | None = None,
) -> None:
    """Plan and write in the caller's transaction."""
    plan = plan_events(session, workspace_id, events, lock=True, now=now)
    write_plan(session, plan)


def write_plan(session: Session, plan: Plan) -> None:
    """Apply a plan; raises :class:`TransientError` if what it was computed from changed.

    New identifiers must still be unclaimed and every updated profile must still carry
    the ``updated_at`` that was read: otherwise nothing is written (the caller rolls back)
    and the batch is planned again from fresh reads.
    """
    if plan.new_profiles:
        session.execute(PROFILES.insert(), plan.new_profiles)
    if plan.new_identifiers:
        stmt = (
            dialect_insert(session)(IDENTIFIERS)
            .on_conflict_do_nothing(index_elements=["workspace_id", "kind", "value"])
            .returning(IDENTIFIERS.c.kind)
        )
        if len(session.execute(stmt, plan.new_identifiers).all()) != len(plan.new_identifiers):
            raise TransientError("identifier claimed by a concurrent batch; retrying")
    writes = pg_writes if session.get_bind().dialect.name == "postgresql" else row_writes
    for traits in (True, False):
        rows = [row for row in plan.profile_updates if ("traits" in row) == traits]
        if rows and writes.update_profiles(session, rows, traits=traits) != len(rows):
            raise TransientError("a profile changed while its batch was planned; retrying")
    if plan.identifier_touches:
        writes.touch_identifiers(session, plan.identifier_touches)
    if plan.channel_counts:
        writes.add_channel_counts(session, plan.channel_counts)
    if plan.profile_events:
        writes.add_profile_events(session, plan.profile_events)


def _profile_updates(
    session: Session,
    workspace_id: str,
    ids: set[str],
    deltas: dict[str, _Delta],
    *,
    lock: bool,
    now: datetime,
) -> list[dict[str, Any]]:
    if not ids:
        return []
    profiles = PROFILES.c
    locking = lock and session.get_bind().dialect.name == "postgresql"
    with_traits = {pid for pid in ids if deltas[pid].trait_updates}
    # Most events carry no traits: their profiles' JSON is neither read nor written. Rows
    # to lock are locked by one query in id order, so two workers never deadlock.
    groups = [(sorted(ids), True)] if locking else [(sorted(ids - with_traits), False)]
    if not locking:
        groups.append((sorted(with_traits), True))
    updates = []
    for chosen, read_traits in groups:
        if not chosen:
            continue
        columns = [profiles.id, profiles.first_seen_at, profiles.last_seen_at, profiles.updated_at]
        if read_traits:
            columns += [profiles.traits, profiles.trait_times]
        query = (
            select(*columns)
            .where(profiles.workspace_id == workspace_id, profiles.id.in_(chosen))
            .order_by(profiles.id)
        )
        if locking:
            query = query.with_for_update()
        for profile_id, first, last, updated, *json_columns in session.execute(query):
            delta = deltas[profile_id]
            row = {
                "pid": profile_id,
                "seen": updated,
                "n": delta.count,
                "first": min(first, delta.first) if delta.first else first,
                "last": max(last, delta.last) if delta.last else last,
                "now": max(now, updated + timedelta(microseconds=1)),
            }
            if delta.trait_updates:
                traits, times = json_columns
                row["traits"], row["times"] = merge_traits(traits, times, delta.trait_updates)
            updates.append(row)
    return updates
