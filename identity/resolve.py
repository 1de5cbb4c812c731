"""Identity resolution of a batch: read what is known, decide (``identity.graph``), write.

Each event joins the profile that owns its identifiers; identifiers nobody owns yet are
attached to it; an event whose identifiers belong to several profiles merges them, within
the limits of :class:`~identity.config.IdentityConfig`. The rules are in
:mod:`identity.graph`; this module reads what they need and turns the decisions into rows.

Why it is written per batch, not per event: one lookup of every identifier in the batch,
one bulk insert of new profiles and identifiers, one bulk update of touched profiles.
That keeps the database round trips per batch constant, which is where throughput is.
Merges are rare, so their writes (:mod:`identity.merge_writes`) are plain statements.

Why every write is guarded: the plan is computed from reads (on SQLite outside the write
lock). Each profile it changes must still carry the ``updated_at`` that was read (on
PostgreSQL they are locked ``FOR UPDATE`` and must not have been merged meanwhile); any
difference raises :class:`ConflictError` and the batch is planned again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session
from uuid6 import uuid7

from identity import merge_writes, pg_writes, row_writes
from identity.announce import batch_changes, changed_traits
from identity.changes import NewChange, record_changes
from identity.config import DEFAULT_PRIORITY, IdentityConfig
from identity.email_rules import NO_RULES, EmailRules
from identity.graph import BatchGraph, Held, key_text
from identity.matching import MAX_BLOCK, CandidatePool, MatchModel, all_blocks, blocking_keys
from identity.models import (
    CONFLICTS,
    IDENTIFIERS,
    MATCH_KEYS,
    PROFILES,
    TYPE_COUNTS,
)
from identity.splits import split_sides
from identity.tombstones import suppress_erased
from identity.traits import TraitUpdate, as_updates, merge_traits
from pipeline import ConflictError, StoredEvent, utcnow
from pipeline.db import in_list

#: Which identifier decides the profile when an event carries several (the default).
PRIORITY = DEFAULT_PRIORITY
_DEFAULT_CONFIG = IdentityConfig()
_LOOKUP_CHUNK = 400
_TICK = timedelta(microseconds=1)
SHARED, ALLOWED = "shared", "allowed"
#: conflicts that show two people sharing an identifier
SHARING_REASONS = ("merge_refused", "distinct_person")

Key = tuple[str, str]


def new_profile_id() -> str:
    """Time-ordered profile id (``prof_`` + UUIDv7 hex): the older profile sorts first."""
    return "prof_" + uuid7().hex


@dataclass
class _Delta:
    """What one batch adds to one profile."""

    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    #: (type, channel) -> (events, first, latest time): the profile's type counts to add
    types: dict[tuple[str, str], tuple[int, datetime, datetime]] = field(default_factory=dict)
    trait_updates: list[TraitUpdate] = field(default_factory=list)

    def add(self, event: StoredEvent) -> None:
        self.count += 1
        self.add_type(event.type, event.channel, 1, event.occurred_at, event.occurred_at)
        self.first = event.occurred_at if self.first is None else min(self.first, event.occurred_at)
        self.last = event.occurred_at if self.last is None else max(self.last, event.occurred_at)
        if event.traits:
            self.trait_updates.append(TraitUpdate(event.occurred_at, event.traits, event.source))

    def add_type(
        self, event_type: str, channel: str, count: int, first: datetime, last: datetime
    ) -> None:
        """Count ``count`` events of a type and channel, between ``first`` and ``last``."""
        key = (event_type, channel)
        had = self.types.get(key)
        self.types[key] = (
            (count, first, last)
            if had is None
            else (had[0] + count, min(had[1], first), max(had[2], last))
        )


#: what a batch adds to a profile it only reads (never written to)
_NO_DELTA = _Delta()


class Owner(NamedTuple):
    """Who owns an identifier, when it was last seen, and its row (for cheap updates)."""

    profile_id: str
    last_seen_at: datetime
    row_id: int
    #: ``shared``, ``allowed`` or None (see :class:`identity.models.ProfileIdentifier`)
    sharing: str | None = None


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
                select(ids.value, ids.profile_id, ids.last_seen_at, ids.id, ids.sharing).where(
                    ids.workspace_id == workspace_id,
                    ids.kind == kind,
                    in_list(session, ids.value, values[start : start + _LOOKUP_CHUNK]),
                )
            )
            for value, profile_id, last_seen, row_id, sharing in rows:
                owners[(kind, value)] = Owner(profile_id, last_seen, row_id, sharing)
    return owners


def identifiers_held(
    session: Session, profile_ids: Iterable[str], versions: dict[str, datetime]
) -> dict[str, Held]:
    """What each profile holds, per kind (for the limits).

    Each profile's ``updated_at`` is read first into ``versions``: the plan's writes then
    check that the profile did not change after it was counted, since every change to a
    profile (an identifier attached or moved to it) moves its ``updated_at``.
    """
    held: dict[str, Held] = {}
    chosen = sorted(set(profile_ids))
    ids = IDENTIFIERS.c
    for start in range(0, len(chosen), _LOOKUP_CHUNK):
        part = chosen[start : start + _LOOKUP_CHUNK]
        stamps = select(PROFILES.c.id, PROFILES.c.updated_at).where(
            in_list(session, PROFILES.c.id, part)
        )
        versions.update({pid: at for pid, at in session.execute(stamps)})
        rows = session.execute(
            select(ids.profile_id, ids.kind, ids.value).where(
                in_list(session, ids.profile_id, part)
            )
        )
        for profile_id, kind, value in rows:
            held.setdefault(profile_id, {}).setdefault(kind, set()).add(value)
    return held


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
    #: per profile, type and channel: events to add and the latest one's time
    type_counts: list[dict[str, Any]] = field(default_factory=list)
    #: one row per event: the profile it is counted in (the timeline)
    profile_events: list[dict[str, Any]] = field(default_factory=list)
    #: existing profiles merged into another: ``pid``, ``into``, ``seen`` (guard), ``now``
    merged_away: list[dict[str, Any]] = field(default_factory=list)
    merge_audit: list[dict[str, Any]] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    #: identifiers now seen on too many distinct people: flagged ``shared``
    flag_shared: list[Key] = field(default_factory=list)
    #: probable matches for a person to decide, and blocking keys of changed traits
    reviews: list[dict[str, Any]] = field(default_factory=list)
    match_keys: list[dict[str, Any]] = field(default_factory=list)
    #: what the profile change feed hears of (:mod:`identity.announce`)
    changes: list[NewChange] = field(default_factory=list)


def plan_events(
    session: Session,
    workspace_id: str,
    events: Sequence[StoredEvent],
    *,
    lock: bool = False,
    now: datetime | None = None,
    config: IdentityConfig | None = None,
    id_source: Callable[[], str] | None = None,
    shared_keys: Collection[Key] = (),
) -> Plan:
    """Attach each event to a profile and compute the profiles' new state (reads only).

    ``lock`` takes row locks on the existing profiles (PostgreSQL ``FOR UPDATE``), for
    callers that plan and write in one transaction. An unmerge replays with the ids its
    profiles had (``id_source``) and the identifiers flagged shared before
    (``shared_keys``), whose rows it recreates.
    """
    plan = Plan(workspace_id, now or utcnow())
    config = config or _DEFAULT_CONFIG
    if config.email_rules.by_domain:  # the graph compares addresses in canonical form
        events = [
            replace(event, identifiers=config.email_rules.identifiers(event.identifiers))
            for event in events
        ]
    # erasure: events carrying an erased person's identifiers join no one (when configured)
    events, suppressed = suppress_erased(session, workspace_id, events, config)
    keys = {(kind, value) for event in events for kind, value in event.identifiers.items()}
    keys |= {key for event in events for key in link_keys(event, config.email_rules)}
    known = owners_of(session, workspace_id, keys)
    locking = lock and session.get_bind().dialect.name == "postgresql"
    locked = {found.profile_id for found in known.values()} if locking else set()
    if locking:  # what the owners hold cannot change under us from here on
        _lock_profiles(session, workspace_id, locked)
    # what other profiles held when counted is checked at write time (their updated_at)
    versions: dict[str, datetime] = {}
    graph = BatchGraph(
        config,
        owner={key: found.profile_id for key, found in known.items()},
        load_held=lambda ids: identifiers_held(session, ids, versions),
        new_profile_id=id_source or new_profile_id,
        shared={key for key, found in known.items() if found.sharing == SHARED} | set(shared_keys),
        apart=split_sides(session, workspace_id),
    )
    graph.conflicts.extend(suppressed)  # erasure: listed, never dropped silently
    if config.matching is not None:
        graph.pool = _candidate_pool(session, workspace_id, config.matching, events, known)
        graph.ensure_held(graph.pool.values)  # one read for every candidate, not one each
    graph.preload((event.id, event.identifiers) for event in events)
    assigned: list[tuple[StoredEvent, str]] = []
    latest: dict[Key, datetime] = {}
    for event in events:
        links = link_keys(event, config.email_rules)
        profile_id = graph.resolve(event.id, event.identifiers, event.traits, links)
        for key in [*event.identifiers.items(), *links]:
            if event.occurred_at > latest.get(key, event.occurred_at - _TICK):
                latest[key] = event.occurred_at
        if profile_id is None:
            continue  # only blocked identifiers: counted in no profile
        assigned.append((event, profile_id))

    find = graph.find
    by_id = {event.id: event for event in events}
    born = {pid: by_id[event_id].occurred_at for pid, event_id in graph.founders.items()}
    deltas: dict[str, _Delta] = {}
    for event, profile_id in assigned:
        final = find(profile_id)
        delta = deltas.get(final)
        if delta is None:
            delta = deltas[final] = _Delta()
        delta.add(event)
        plan.profile_events.append(
            {
                "event_id": event.id,
                "workspace_id": workspace_id,
                "profile_id": final,
                "occurred_at": event.occurred_at,
                "type": event.type,
            }
        )
    new = set(graph.new_profiles)
    existing_losers = {
        m.merged_id: find(m.merged_id) for m in graph.merges if m.merged_id not in new
    }
    _plan_new_profiles(plan, graph.new_profiles, deltas, born, find, config.source_rank)
    _plan_identifiers(plan, graph, by_id, known, latest, find)
    for into, event_type, channel, n, first, last in _absorbed_types(session, existing_losers):
        deltas.setdefault(into, _Delta()).add_type(event_type, channel, n, first, last)
    for profile_id in locked:
        versions.pop(profile_id, None)  # locked since before they were counted
    traits_changed: dict[str, list[str]] = {}
    plan.profile_updates, plan.merged_away = _profile_updates(
        session,
        workspace_id,
        (set(deltas) - new) | set(existing_losers.values()),
        deltas,
        existing_losers,
        versions,
        lock=lock,
        now=plan.now,
        rank=config.source_rank,
        traits_changed=traits_changed,
    )
    plan.type_counts = [
        {
            "workspace_id": workspace_id,
            "profile_id": pid,
            "type": event_type,
            "channel": channel,
            "count": count,
            "first_at": first,
            "last_at": last,
        }
        for pid, delta in sorted(deltas.items())
        for (event_type, channel), (count, first, last) in sorted(delta.types.items())
    ]
    plan.merge_audit = [
        {
            "workspace_id": workspace_id,
            "survivor_id": m.survivor_id,
            "merged_id": m.merged_id,
            "event_id": m.event_id,
            "rule": "probabilistic" if m.match else "shared_identifier",
            "evidence": dict(m.match)
            if m.match
            else {
                "merged_identifier": key_text(m.merged_key) if m.merged_key else None,
                "survivor_identifier": key_text(m.survivor_key) if m.survivor_key else None,
            },
            "created_at": plan.now,
        }
        for m in graph.merges
    ]
    plan.reviews = [
        {
            "workspace_id": workspace_id,
            "event_id": r.event_id,
            "profile_id": find(r.profile_id),
            "candidate_id": find(r.candidate_id),
            "probability": r.probability,
            "evidence": dict(r.evidence),
            "status": "pending",
            "created_at": plan.now,
        }
        for r in graph.reviews
        if find(r.profile_id) != find(r.candidate_id)
    ]
    if graph.pool is not None:
        plan.match_keys = _new_match_keys(plan, graph.pool.model)
    plan.conflicts = [
        {
            "workspace_id": workspace_id,
            "event_id": c.event_id,
            "reason": c.reason,
            "kind": c.kind,
            "profile_ids": [find(p) for p in c.profile_ids],
            "identifier": key_text(c.shared) if c.shared else None,
            "detail": dict(c.detail),
            "created_at": plan.now,
        }
        for c in graph.conflicts
    ]
    plan.flag_shared = _newly_shared(session, plan, known, graph.config)
    plan.changes = batch_changes(
        plan.new_profiles, plan.merge_audit, plan.new_identifiers, traits_changed, find
    )
    return plan


def link_keys(event: StoredEvent, rules: EmailRules = NO_RULES) -> list[Key]:
    """Identifiers an ``identity.linked`` event names beside its own (``kind:value``)."""
    if event.type != "identity.linked":
        return []
    named = event.properties.get("link_identifiers")
    if not isinstance(named, list):
        return []
    keys = []
    for text in named[:50]:
        kind, sep, value = str(text).partition(":")
        if sep and kind and value:
            keys.append((kind, rules.canonical(value) if kind == "email" else value))
    return keys


def _candidate_pool(
    session: Session,
    workspace_id: str,
    model: MatchModel,
    events: Sequence[StoredEvent],
    known: Mapping[Key, Owner],
) -> CandidatePool:
    """Profiles that blocking finds for the batch's records that no identifier places."""
    pool = CandidatePool(model)
    records = []
    for event in events:
        if event.traits and not any(key in known for key in event.identifiers.items()):
            values = model.normalize(event.traits)
            if model.matchable(values):
                records.append(values)
    blocks = sorted(all_blocks(records))
    if not blocks:
        return pool
    keys = MATCH_KEYS.c
    for start in range(0, len(blocks), _LOOKUP_CHUNK):
        rows = session.execute(
            select(keys.block, keys.profile_id).where(
                keys.workspace_id == workspace_id,
                in_list(session, keys.block, blocks[start : start + _LOOKUP_CHUNK]),
            )
        )
        for block, profile_id in rows:
            pool.blocks.setdefault(block, set()).add(profile_id)
    wanted = sorted(
        {pid for members in pool.blocks.values() if len(members) <= MAX_BLOCK for pid in members}
    )
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        rows = session.execute(
            select(PROFILES.c.id, PROFILES.c.traits).where(
                in_list(session, PROFILES.c.id, wanted[start : start + _LOOKUP_CHUNK])
            )
        )
        for profile_id, traits in rows:
            pool.values[profile_id] = model.normalize(traits)
    return pool


def _new_match_keys(plan: Plan, model: MatchModel) -> list[dict[str, Any]]:
    """Blocking keys of every profile whose traits the batch set or changed."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    changed = [(p["id"], p["traits"]) for p in plan.new_profiles if p["merged_into"] is None]
    changed += [(u["pid"], u["traits"]) for u in plan.profile_updates if "traits" in u]
    for profile_id, traits in changed:
        values = model.normalize(traits)
        if model.matchable(values):
            for block in blocking_keys(values):
                rows[(block, profile_id)] = {
                    "workspace_id": plan.workspace_id,
                    "block": block,
                    "profile_id": profile_id,
                }
    return [rows[key] for key in sorted(rows)]


def _lock_profiles(session: Session, workspace_id: str, profile_ids: set[str]) -> None:
    """Lock the owners' rows (in id order: two workers never deadlock on them).

    Identifiers only move with a merge, which marks the profile they leave: an owner found
    merged once locked was read just before that merge, and the batch is planned again.
    """
    if not profile_ids:
        return
    rows = session.execute(
        select(PROFILES.c.id, PROFILES.c.merged_into)
        .where(
            PROFILES.c.workspace_id == workspace_id,
            in_list(session, PROFILES.c.id, sorted(profile_ids)),
        )
        .order_by(PROFILES.c.id)
        .with_for_update()
    ).all()
    if len(rows) != len(profile_ids) or any(merged for _, merged in rows):
        raise ConflictError("an owner was merged while its batch was read; retrying")


def _newly_shared(
    session: Session, plan: Plan, known: Mapping[Key, Owner], config: IdentityConfig
) -> list[Key]:
    """Identifiers of this batch's conflicts now seen on more people than allowed."""
    people: dict[str, set[str]] = {}
    for conflict in plan.conflicts:
        if conflict["identifier"] and conflict["reason"] in SHARING_REASONS:
            people.setdefault(conflict["identifier"], set()).update(conflict["profile_ids"])
    flagged = []
    for text, profiles in sorted(people.items()):
        kind, _, value = text.partition(":")
        owner = known.get((kind, value))
        if owner is None or owner.sharing is not None:
            continue  # already flagged, or an operator said it is one person's
        profiles |= people_sharing(session, plan.workspace_id, text)
        if len(profiles | {owner.profile_id}) > config.shared_after:
            flagged.append((kind, value))
    return flagged


def people_sharing(session: Session, workspace_id: str, identifier: str) -> set[str]:
    """The profiles earlier conflicts found sharing ``kind:value`` (as recorded then)."""
    earlier = session.execute(
        select(CONFLICTS.c.profile_ids).where(
            CONFLICTS.c.workspace_id == workspace_id,
            CONFLICTS.c.identifier == identifier,
            CONFLICTS.c.reason.in_(SHARING_REASONS),
        )
    )
    return {pid for (ids,) in earlier for pid in ids}


def _plan_new_profiles(
    plan: Plan,
    new_ids: Sequence[str],
    deltas: Mapping[str, _Delta],
    born: Mapping[str, datetime],
    find: Any,
    rank: Callable[[str], int],
) -> None:
    """Rows for the batch's new profiles; one merged within the batch is born merged."""
    for profile_id in new_ids:
        final = find(profile_id)
        delta = deltas.get(profile_id) if final == profile_id else None
        traits, times, sources = merge_traits(
            {}, {}, delta.trait_updates if delta else (), rank=rank
        )
        plan.new_profiles.append(
            {
                "id": profile_id,
                "workspace_id": plan.workspace_id,
                "traits": traits,
                "trait_times": times,
                "trait_sources": sources,
                "first_seen_at": delta.first if delta else born[profile_id],
                "last_seen_at": delta.last if delta else born[profile_id],
                "event_count": delta.count if delta else 0,
                "created_at": plan.now,
                "updated_at": plan.now,
                "merged_into": None if final == profile_id else final,
            }
        )


def _plan_identifiers(
    plan: Plan,
    graph: BatchGraph,
    events: Mapping[int, StoredEvent],
    known: Mapping[Key, Owner],
    latest: Mapping[Key, datetime],
    find: Any,
) -> None:
    """New identifier rows (with their provenance) and last-seen moves of known ones."""
    plan.new_identifiers = [
        {
            "workspace_id": plan.workspace_id,
            "kind": a.key[0],
            "value": a.key[1],
            "profile_id": find(a.profile_id),
            "channel": events[a.event_id].channel,
            "first_seen_at": events[a.event_id].occurred_at,
            "last_seen_at": latest[a.key],
            "source_event_id": a.event_id,
            "linked_by": key_text(a.linked_by) if a.linked_by else None,
            "attached_to": a.profile_id,
        }
        for a in sorted(graph.attachments, key=lambda a: a.key)
    ]
    plan.identifier_touches = [
        {"rid": owner.row_id, "seen": latest[key]}
        for key, owner in sorted(known.items())
        if latest[key] > owner.last_seen_at
    ]


def _absorbed_types(
    session: Session, losers: Mapping[str, str]
) -> list[tuple[str, str, str, int, datetime, datetime]]:
    """The type counts merged-away profiles hand to their survivors.

    Rows of (survivor, type, channel, count, first time, latest time).
    """
    if not losers:
        return []
    c = TYPE_COUNTS.c
    rows = session.execute(
        select(c.profile_id, c.type, c.channel, c.count, c.first_at, c.last_at).where(
            in_list(session, c.profile_id, sorted(losers))
        )
    )
    return [(losers[pid], kind, channel, n, a, b) for pid, kind, channel, n, a, b in rows]


def apply_events(
    session: Session,
    workspace_id: str,
    events: Sequence[StoredEvent],
    *,
    now: datetime | None = None,
    config: IdentityConfig | None = None,
) -> Plan:
    """Plan and write in the caller's transaction; the plan written."""
    plan = plan_events(session, workspace_id, events, lock=True, now=now, config=config)
    write_plan(session, plan)
    return plan


def write_plan(session: Session, plan: Plan) -> None:
    """Apply a plan; raises :class:`ConflictError` if what it was computed from changed.

    New identifiers must still be unclaimed and every updated profile must still carry
    the ``updated_at`` that was read: otherwise nothing is written (the caller rolls back)
    and the batch is planned again from fresh reads.
    """
    writes = pg_writes if session.get_bind().dialect.name == "postgresql" else row_writes
    if plan.new_profiles:
        writes.add_profiles(session, plan.new_profiles)
    if plan.merged_away:
        merge_writes.merge_profiles(session, plan.workspace_id, plan.merged_away)
    rows = plan.new_identifiers
    if rows and writes.add_identifiers(session, rows) != len(rows):
        raise ConflictError("identifier claimed by a concurrent batch; retrying")
    for traits in (True, False):
        rows = [row for row in plan.profile_updates if ("traits" in row) == traits]
        if rows and writes.update_profiles(session, rows, traits=traits) != len(rows):
            raise ConflictError("a profile changed while its batch was planned; retrying")
    if plan.identifier_touches:
        writes.touch_identifiers(session, plan.identifier_touches)
    if plan.type_counts:
        writes.add_type_counts(session, plan.type_counts)
    if plan.profile_events:
        writes.add_profile_events(session, plan.profile_events)
    if plan.merge_audit or plan.conflicts:
        merge_writes.record(session, plan.merge_audit, plan.conflicts)
    if plan.flag_shared:
        merge_writes.flag_shared(session, plan.workspace_id, plan.flag_shared)
    if plan.match_keys or plan.reviews:
        merge_writes.record_matching(session, plan.match_keys, plan.reviews)
    record_changes(session, plan.workspace_id, plan.changes, now=plan.now)


def _profile_updates(
    session: Session,
    workspace_id: str,
    ids: set[str],
    deltas: dict[str, _Delta],
    losers: Mapping[str, str],
    versions: Mapping[str, datetime],
    *,
    lock: bool,
    now: datetime,
    rank: Callable[[str], int],
    traits_changed: dict[str, list[str]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Guarded updates of the existing profiles a batch touches, and of those it merges away.

    A survivor takes its merged profiles' events, first/last seen and traits (by the
    policy of :mod:`identity.traits`, as for events). ``traits_changed`` receives the
    names of the traits whose value changed, per profile.
    """
    ids = ids | set(losers)
    if not ids:
        return [], []
    profiles = PROFILES.c
    locking = lock and session.get_bind().dialect.name == "postgresql"
    absorbing = set(losers.values())
    with_traits = {pid for pid in ids if pid in deltas and deltas[pid].trait_updates}
    with_traits |= absorbing | set(losers)
    # Most events carry no traits: their profiles' JSON is neither read nor written. Rows
    # to lock are locked by one query in id order, so two workers never deadlock.
    groups = [(sorted(ids), True)] if locking else [(sorted(ids - with_traits), False)]
    if not locking:
        groups.append((sorted(with_traits), True))
    read: dict[str, tuple[Any, ...]] = {}
    for chosen, read_traits in groups:
        if not chosen:
            continue
        columns = [
            profiles.id,
            profiles.first_seen_at,
            profiles.last_seen_at,
            profiles.updated_at,
            profiles.merged_into,
            profiles.event_count,
        ]
        if read_traits:
            columns += [profiles.traits, profiles.trait_times, profiles.trait_sources]
        query = (
            select(*columns)
            .where(profiles.workspace_id == workspace_id, in_list(session, profiles.id, chosen))
            .order_by(profiles.id)
        )
        if locking:
            query = query.with_for_update()
        for found in session.execute(query):
            read[found[0]] = tuple(found)
    if len(read) != len(ids) or any(row[4] is not None for row in read.values()):
        raise ConflictError("a profile was merged while its batch was planned; retrying")
    if any(read[pid][3] != at for pid, at in versions.items() if pid in read):
        raise ConflictError("a profile changed while its limits were checked; retrying")

    stamp = max([now, *(row[3] + timedelta(microseconds=1) for row in read.values())])
    merged_away = [
        {"pid": loser, "into": into, "seen": read[loser][3], "now": stamp}
        for loser, into in sorted(losers.items())
    ]
    updates: list[dict[str, Any]] = []
    for profile_id in sorted(ids - set(losers)):
        _, first, last, updated, _, _, *json_columns = read[profile_id]
        delta = deltas.get(profile_id) or _NO_DELTA
        count = delta.count
        firsts = [first] + ([delta.first] if delta.first else [])
        lasts = [last] + ([delta.last] if delta.last else [])
        trait_updates = list(delta.trait_updates)
        for loser, into in losers.items():
            if into == profile_id:
                _, l_first, l_last, _, _, l_count, l_traits, l_times, l_sources = read[loser]
                count += l_count
                firsts.append(l_first)
                lasts.append(l_last)
                trait_updates += as_updates(l_traits, l_times, l_sources)
        row = {
            "pid": profile_id,
            "seen": updated,
            "n": count,
            "first": min(firsts),
            "last": max(lasts),
            "now": max(now, updated + timedelta(microseconds=1)),
        }
        if trait_updates:
            traits, times, sources = json_columns
            row["traits"], row["times"], row["sources"] = merge_traits(
                traits, times, trait_updates, sources, rank
            )
            if names := changed_traits(traits, row["traits"]):
                traits_changed[profile_id] = names
        updates.append(row)
    return updates, merged_away
