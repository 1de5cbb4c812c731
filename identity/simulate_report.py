"""What a dry run reports: two partitions of the log into profiles, compared, with examples.

Both partitions (event -> profile) meet in the scratch database of the new configuration's
replay (:mod:`identity.simulate`): today's (``sim_current``, copied from the hub) and, with
a replayed baseline, the baseline replay's (``sim_base``). The comparison is then a few
grouped joins there:

* a **merge** is a new profile whose events were in several baseline profiles;
* a **split** is a baseline profile whose events land in several new ones;
* an event **changes profile** unless its baseline profile and its new one are paired
  in a one-to-one pairing of profiles by most events shared (largest pairs first), so a
  profile split in two moves the smaller part's events, not all of them;
* events the hub has not processed yet (``sim_skip``) are replayed but not compared.

Examples name today's profile ids and the identifiers on each side, and say why: for a
merge, the joins (an identifier attached beside another, a merge by a shared identifier or
a match) whose two sides were different baseline profiles; for a split, the conflicts the
new configuration recorded at the parts' events and the identifiers no part holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.orm import Session

from identity.config import IdentityConfig
from identity.graph import Key, key_text
from identity.models import CONFLICTS, IDENTIFIERS, MERGES, PROFILE_EVENTS, PROFILES, REVIEWS
from identity.resolve import SHARED
from pipeline import Database
from pipeline.db import in_list
from pipeline.models import EVENTS

#: owner, in a scratch database, of the identifiers an operator flagged shared: like the
#: hub's own rows, they are then known, flagged, and ignored by resolution
PINNED_OWNER = "prof_simulation_operator_flags"
_CHUNK = 400
_LINKS_SHOWN = 3

SCRATCH_TABLES = MetaData()
#: in the scratch database: today's partition, the baseline's, the events not compared
CURRENT = Table(
    "sim_current",
    SCRATCH_TABLES,
    Column("event_id", Integer, primary_key=True),
    Column("profile_id", String),
)
BASE = Table(
    "sim_base",
    SCRATCH_TABLES,
    Column("event_id", Integer, primary_key=True),
    Column("profile_id", String),
)
SKIP = Table("sim_skip", SCRATCH_TABLES, Column("event_id", Integer, primary_key=True))


@dataclass(frozen=True)
class Cluster:
    """One profile on one side: its id there, today's profiles of its events, what it holds."""

    profile_id: str
    now: tuple[str, ...]
    events: int
    identifiers: tuple[str, ...]


@dataclass(frozen=True)
class MergeExample:
    """Baseline profiles that become one: ``links`` are the joins across them."""

    profiles: tuple[Cluster, ...]
    into: Cluster
    links: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class SplitExample:
    """A baseline profile whose events go to several profiles, and why."""

    profile: Cluster
    parts: tuple[Cluster, ...]
    conflicts: tuple[dict[str, Any], ...]
    #: identifiers it held that no part holds (``kind:value (blocked)``, ``(shared)``, …)
    dropped: tuple[str, ...]


@dataclass(frozen=True)
class SimulationReport:
    """What the new configuration would change; ``*_before`` is the baseline's side."""

    workspace_id: str
    baseline: str
    batch_size: int
    events: int
    seconds: float
    #: events the hub has not processed yet (pending, failed): replayed, not compared
    unprocessed: int
    failed: int
    failed_baseline: int
    profiles_before: int
    profiles_after: int
    merges: int
    merged_profiles: int
    splits: int
    split_parts: int
    moved_events: int
    joined_events: int
    left_events: int
    conflicts_before: dict[str, int]
    conflicts_after: dict[str, int]
    reviews_before: int
    reviews_after: int
    shared_before: int
    shared_after: int
    newly_shared: tuple[str, ...]
    no_longer_shared: tuple[str, ...]
    #: operator decisions carried into the replay: allowed, shared, shared_detected, splits
    seeded: dict[str, int]
    merge_examples: tuple[MergeExample, ...] = ()
    split_examples: tuple[SplitExample, ...] = ()
    first_failure: str | None = None

    @property
    def events_per_second(self) -> float:
        replays = 2 if self.baseline == "replay" else 1
        return self.events * replays / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "events_per_second": round(self.events_per_second, 1)}


class Side:
    """The identity tables of one side (the hub's, or a replay's), read for the report."""

    def __init__(self, session: Session, workspace_id: str) -> None:
        self.session, self.workspace_id = session, workspace_id
        p = PROFILES.c
        rows = session.execute(
            select(p.id, p.merged_into).where(
                p.workspace_id == workspace_id, p.merged_into.is_not(None)
            )
        )
        self.merged_into: dict[str, str] = {pid: into for pid, into in rows}

    def final(self, profile_id: str) -> str:
        for _ in range(len(self.merged_into) + 1):
            if profile_id not in self.merged_into:
                break
            profile_id = self.merged_into[profile_id]
        return profile_id

    def family(self, profile_id: str) -> list[str]:
        """The profile and every profile merged into it."""
        return [profile_id, *(p for p in self.merged_into if self.final(p) == profile_id)]

    def identifiers(self, profile_ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
        held: dict[str, list[str]] = {}
        chosen = sorted(set(profile_ids))
        ids = IDENTIFIERS.c
        for start in range(0, len(chosen), _CHUNK):
            rows = self.session.execute(
                select(ids.profile_id, ids.kind, ids.value).where(
                    ids.workspace_id == self.workspace_id,
                    in_list(self.session, ids.profile_id, chosen[start : start + _CHUNK]),
                )
            )
            for profile_id, kind, value in rows:
                held.setdefault(profile_id, []).append(key_text((kind, value)))
        return {pid: tuple(sorted(held.get(pid, ()))) for pid in chosen}

    def owners(self, keys: Iterable[Key]) -> dict[Key, str]:
        ids = IDENTIFIERS.c
        found: dict[Key, str] = {}
        for kind, value in sorted(set(keys)):
            owner = self.session.scalar(
                select(ids.profile_id).where(
                    ids.workspace_id == self.workspace_id, ids.kind == kind, ids.value == value
                )
            )
            if owner is not None and owner != PINNED_OWNER:
                found[(kind, value)] = self.final(owner)
        return found

    def conflicts(self) -> dict[str, int]:
        c = CONFLICTS.c
        query = select(c.reason, func.count()).where(c.workspace_id == self.workspace_id)
        rows = self.session.execute(query.group_by(c.reason))
        return {reason: int(n) for reason, n in sorted(rows)}

    def reviews(self) -> int:
        r = REVIEWS.c
        return int(
            self.session.scalar(select(func.count()).where(r.workspace_id == self.workspace_id))
            or 0
        )

    def shared(self) -> set[str]:
        ids = IDENTIFIERS.c
        rows = self.session.execute(
            select(ids.kind, ids.value).where(
                ids.workspace_id == self.workspace_id, ids.sharing == SHARED
            )
        )
        return {key_text((kind, value)) for kind, value in rows}


def compare(
    real: Session,
    base: Side,
    new_db: Database,
    workspace_id: str,
    new_config: IdentityConfig,
    *,
    seeded: dict[str, int],
    failures: Sequence[Sequence[str]],
    examples: int,
    **given: Any,
) -> SimulationReport:
    """Compare the baseline (``base``) with the new replay in ``new_db``; ``given``: the
    report's replay figures (``baseline``, ``batch_size``, ``events``, ``seconds``)."""
    base_table = CURRENT if given["baseline"] == "current" else BASE
    with new_db.read() as scratch:
        new = Side(scratch, workspace_id)
        pairs = _pairs(scratch, base_table)
        by_base: dict[str, dict[str, int]] = {}
        by_new: dict[str, dict[str, int]] = {}
        for a, b, n in pairs:
            by_base.setdefault(a, {})[b] = n
            by_new.setdefault(b, {})[a] = n
        merges = {b: parts for b, parts in by_new.items() if len(parts) > 1}
        splits = {a: parts for a, parts in by_base.items() if len(parts) > 1}
        ex = _Examples(real, scratch, base, new, base_table, new_config)
        base_shared, new_shared = base.shared(), new.shared()
        return SimulationReport(
            workspace_id=workspace_id,
            **given,
            unprocessed=_count(scratch, select(func.count()).select_from(SKIP)),
            failed=len(failures[0]),
            failed_baseline=len(failures[1]) if len(failures) > 1 else 0,
            profiles_before=_distinct(scratch, base_table),
            profiles_after=_distinct(scratch, PROFILE_EVENTS),
            merges=len(merges),
            merged_profiles=sum(len(parts) for parts in merges.values()),
            splits=len(splits),
            split_parts=sum(len(parts) for parts in splits.values()),
            moved_events=sum(n for *_, n in pairs) - _paired(pairs),
            joined_events=_only_in(scratch, PROFILE_EVENTS, base_table),
            left_events=_only_in(scratch, base_table, PROFILE_EVENTS),
            conflicts_before=base.conflicts(),
            conflicts_after=new.conflicts(),
            reviews_before=base.reviews(),
            reviews_after=new.reviews(),
            shared_before=len(base_shared),
            shared_after=len(new_shared),
            newly_shared=tuple(sorted(new_shared - base_shared)[:examples]),
            no_longer_shared=tuple(sorted(base_shared - new_shared)[:examples]),
            seeded=seeded,
            merge_examples=tuple(ex.merge(b, merges[b]) for b in _largest(merges, examples)),
            split_examples=tuple(ex.split(a, splits[a]) for a in _largest(splits, examples)),
            first_failure=next((found[0] for found in failures if found), None),
        )


def _largest(groups: dict[str, dict[str, int]], count: int) -> list[str]:
    """The groups with most parts, then most events (ties: by id)."""
    ranked = sorted(groups, key=lambda g: (-len(groups[g]), -sum(groups[g].values()), g))
    return ranked[:count]


def _not_skipped(query: Any, table: Table) -> Any:
    return query.outerjoin(SKIP, SKIP.c.event_id == table.c.event_id).where(
        SKIP.c.event_id.is_(None)
    )


def _count(session: Session, query: Any) -> int:
    return int(session.scalar(query) or 0)


def _distinct(session: Session, table: Table) -> int:
    query = select(func.count(func.distinct(table.c.profile_id))).select_from(table)
    return _count(session, _not_skipped(query, table))


def _only_in(session: Session, table: Table, other: Table) -> int:
    """Events counted in a profile on ``table``'s side, in none on the other (compared ones)."""
    joined = table.outerjoin(other, other.c.event_id == table.c.event_id)
    query = select(func.count()).select_from(joined).where(other.c.event_id.is_(None))
    return _count(session, _not_skipped(query, table))


def _pairs(session: Session, base_table: Table) -> list[tuple[str, str, int]]:
    """(baseline profile, new profile, events they share) for every pair that shares any."""
    pe = PROFILE_EVENTS.c
    query = select(base_table.c.profile_id, pe.profile_id, func.count()).select_from(
        base_table.join(PROFILE_EVENTS, pe.event_id == base_table.c.event_id)
    )
    query = _not_skipped(query, base_table).group_by(base_table.c.profile_id, pe.profile_id)
    return [(a, b, int(n)) for a, b, n in session.execute(query)]


def _paired(pairs: Sequence[tuple[str, str, int]]) -> int:
    """Events kept together by a one-to-one pairing of profiles, most shared events first."""
    used_a: set[str] = set()
    used_b: set[str] = set()
    kept = 0
    for a, b, n in sorted(pairs, key=lambda p: (-p[2], p[0], p[1])):
        if a not in used_a and b not in used_b:
            used_a.add(a)
            used_b.add(b)
            kept += n
    return kept


class _Examples:
    """Concrete merges and splits, with the identifiers and events that explain them."""

    def __init__(
        self,
        real: Session,
        scratch: Session,
        base: Side,
        new: Side,
        base_table: Table,
        config: IdentityConfig,
    ) -> None:
        self.real, self.scratch, self.base, self.new = real, scratch, base, new
        self.base_table, self.config = base_table, config

    def _now(self, table: Table, profile_id: str) -> tuple[str, ...]:
        """Today's profiles of the events ``profile_id`` holds on ``table``'s side."""
        if table is CURRENT:
            return (profile_id,)
        query = (
            select(CURRENT.c.profile_id)
            .distinct()
            .select_from(table.join(CURRENT, CURRENT.c.event_id == table.c.event_id))
            .where(table.c.profile_id == profile_id)
            .order_by(CURRENT.c.profile_id)
        )
        return tuple(self.scratch.scalars(query))

    def _clusters(self, side: Side, table: Table, events: dict[str, int]) -> tuple[Cluster, ...]:
        held = side.identifiers(events)
        found = [Cluster(pid, self._now(table, pid), n, held[pid]) for pid, n in events.items()]
        return tuple(sorted(found, key=lambda c: (-c.events, c.identifiers, c.profile_id)))

    def _messages(self, event_ids: Iterable[int]) -> dict[int, str]:
        ids = sorted(set(event_ids))
        query = select(EVENTS.c.id, EVENTS.c.message_id).where(in_list(self.real, EVENTS.c.id, ids))
        return {eid: msg for eid, msg in self.real.execute(query)} if ids else {}

    def _base_of_event(self, event_id: int | None) -> str | None:
        table = self.base_table
        if event_id is None:
            return None
        return self.scratch.scalar(select(table.c.profile_id).where(table.c.event_id == event_id))

    def merge(self, into: str, parts: dict[str, int]) -> MergeExample:
        [cluster] = self._clusters(self.new, PROFILE_EVENTS, {into: sum(parts.values())})
        links = self._links(into, set(parts))
        messages = self._messages(link["event"] for link in links)
        for link in links:
            link["event"] = messages.get(link["event"], link["event"])
        return MergeExample(
            self._clusters(self.base, self.base_table, parts), cluster, tuple(links)
        )

    def _links(self, into: str, parts: set[str]) -> list[dict[str, Any]]:
        """The attachments and merges of ``into`` that join two baseline profiles."""
        ids, m = IDENTIFIERS.c, MERGES.c
        #: event, rule, identifiers, the event that founded the other side (a match), extra
        raw: list[tuple[int | None, str, list[Key], int | None, dict[str, Any]]] = []
        attached = self.scratch.execute(
            select(ids.source_event_id, ids.kind, ids.value, ids.linked_by).where(
                ids.profile_id == into, ids.linked_by.is_not(None)
            )
        )
        for event_id, kind, value, linked_by in attached:
            raw.append((event_id, "attached", [(kind, value), _key(linked_by)], None, {}))
        merged = self.scratch.execute(
            select(m.event_id, m.rule, m.evidence, m.survivor_id).where(
                in_list(self.scratch, m.merged_id, self.new.family(into)[1:])
            )
        )
        for event_id, rule, evidence, survivor in merged:
            texts = [evidence.get(n) for n in ("merged_identifier", "survivor_identifier")]
            keys = [_key(text) for text in texts if text]
            if keys:
                raw.append((event_id, rule, keys, None, {}))
            else:  # a match: the record's new profile went into the candidate
                extra = {"probability": evidence.get("probability")}
                raw.append((event_id, rule, [], self._founder(survivor), extra))
        owners = self.base.owners(key for _, _, keys, _, _ in raw for key in keys)
        links = []
        for event_id, rule, keys, founder, extra in sorted(raw, key=lambda r: (r[0] or 0, r[1])):
            at_event = self._base_of_event(event_id)
            sides = {owners.get(key, at_event) for key in keys} or {at_event}
            if founder is not None:
                sides.add(self._base_of_event(founder))
            if len(sides) > 1 and sides <= parts:
                texts = [key_text(key) for key in keys]
                links.append({"event": event_id, "rule": rule, "identifiers": texts, **extra})
        return links[:_LINKS_SHOWN]

    def _founder(self, profile_id: str) -> int | None:
        """The event that founded a profile of the replay (its first identifiers')."""
        ids = IDENTIFIERS.c
        found = self.scratch.scalar(
            select(func.min(ids.source_event_id)).where(
                ids.attached_to == profile_id, ids.linked_by.is_(None)
            )
        )
        return None if found is None else int(found)

    def split(self, profile_id: str, parts: dict[str, int]) -> SplitExample:
        [cluster] = self._clusters(self.base, self.base_table, {profile_id: sum(parts.values())})
        pieces = self._clusters(self.new, PROFILE_EVENTS, parts)
        c, pe = CONFLICTS.c, PROFILE_EVENTS.c
        rows = self.scratch.execute(
            select(c.event_id, c.reason, c.kind, c.identifier, c.detail)
            .select_from(CONFLICTS.join(PROFILE_EVENTS, pe.event_id == c.event_id))
            .where(in_list(self.scratch, pe.profile_id, sorted(parts)))
            .order_by(c.id)
            .limit(_LINKS_SHOWN)
        ).all()
        messages = self._messages(row[0] for row in rows)
        conflicts = tuple(
            {
                "event": messages.get(event_id, event_id),
                "reason": reason,
                "kind": kind,
                "identifiers": detail.get("identifiers")
                or [detail.get("identifier") or identifier],
                **{k: detail[k] for k in ("limit", "would_hold", "split") if k in detail},
            }
            for event_id, reason, kind, identifier, detail in rows
        )
        kept = {i for piece in pieces for i in piece.identifiers}
        shared = self.new.shared()
        dropped = tuple(
            f"{text} ({self._why_dropped(text, shared)})"
            for text in cluster.identifiers
            if text not in kept
        )
        return SplitExample(cluster, pieces, conflicts, dropped)

    def _why_dropped(self, text: str, shared: set[str]) -> str:
        if self.config.is_blocked(*_key(text)):
            return "blocked"
        return "shared" if text in shared else "held elsewhere"


def _key(text: str) -> Key:
    kind, _, value = text.partition(":")
    return kind, value


__all__ = [
    "BASE",
    "CURRENT",
    "PINNED_OWNER",
    "SCRATCH_TABLES",
    "SKIP",
    "Cluster",
    "MergeExample",
    "Side",
    "SimulationReport",
    "SplitExample",
    "compare",
]
