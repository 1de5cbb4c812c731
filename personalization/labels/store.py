"""Writing and reading a profile's tags, segments and rule-set traits.

The state of one (kind, name) of a person is the latest row (highest id) among the rows of
the surviving profile and of every profile merged into it: rows keep the id they were
written to, as loyalty entries do, so a merge needs no copying and an unmerge needs no
special case (the kept part keeps the survivor's id and its rows).

Why in bulk: one batch of 500 events may tag hundreds of profiles. :func:`apply_label_changes`
reads what it needs in a handful of queries (the profiles, the keys already used, the
members of merged profiles, the latest rows of the names involved), decides every change in
memory, in order, and writes all rows and change-feed entries with two executemany
inserts. On PostgreSQL two transactions changing the same profile's labels at once both
decide from what they read; the later row (by id) wins, and a concurrent use of the same
idempotency key raises :class:`pipeline.ConflictError` (retried: planned again).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from identity.changes import NewChange, record_changes
from identity.models import PROFILES
from identity.views import merged_members
from personalization.labels.models import LABELS
from personalization.labels.names import (
    ADD,
    REMOVE,
    SEGMENT,
    SET,
    TAG,
    TRAIT,
    UNSET,
    LabelChange,
    check_change,
)
from pipeline import ConflictError, dialect_insert
from pipeline.db import in_list
from pipeline.errors import ValidationError

#: ids per query (well under the bound-parameter limits)
_CHUNK = 400
_MAX_DEPTH = 16
#: the operations after which a (kind, name) is held
_PRESENT = frozenset({ADD, SET})
_STATUS: Final = {ADD: "added", REMOVE: "removed", SET: "set", UNSET: "unset"}

TAG_ADDED: Final = "profile.tag_added"
TAG_REMOVED: Final = "profile.tag_removed"
SEGMENT_ENTERED: Final = "profile.segment_entered"
SEGMENT_EXITED: Final = "profile.segment_exited"
TRAIT_SET: Final = "profile.trait_set"
TRAIT_UNSET: Final = "profile.trait_unset"
#: the change-feed type of each real change
FEED_TYPES: Final[Mapping[tuple[str, str], str]] = {
    (TAG, ADD): TAG_ADDED,
    (TAG, REMOVE): TAG_REMOVED,
    (SEGMENT, ADD): SEGMENT_ENTERED,
    (SEGMENT, REMOVE): SEGMENT_EXITED,
    (TRAIT, SET): TRAIT_SET,
    (TRAIT, UNSET): TRAIT_UNSET,
}
#: every change-feed type this module writes (privacy scrubs their data on erasure)
CHANGE_TYPES: Final = tuple(FEED_TYPES.values())


class UnknownProfile(ValidationError):
    """No profile with that id in the workspace."""


@dataclass(frozen=True)
class Labels:
    """A person's labels now: tags and segments held (sorted), rule-set traits.

    ``trait_sources`` says who set each trait (``rule:{id}@{version}``, ``api``).
    """

    tags: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    traits: dict[str, Any] = field(default_factory=dict)
    trait_sources: dict[str, str] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        """As JSON: ``tags``, ``segments``, ``traits``, ``trait_sources``."""
        return {
            "tags": list(self.tags),
            "segments": list(self.segments),
            "traits": dict(self.traits),
            "trait_sources": dict(self.trait_sources),
        }


class _Row(NamedTuple):
    id: int
    profile_id: str
    kind: str
    name: str
    op: str
    value: Any
    source: str


#: (survivor, kind, name)
_Slot = tuple[str, str, str]


def _chunks(values: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield list(values[start : start + _CHUNK])


def survivors_of(
    session: Session, workspace_id: str, profile_ids: Collection[str]
) -> dict[str, str]:
    """Each id -> the profile that holds it now (itself unless merged away), following
    ``merged_into``; raises :class:`UnknownProfile` for an id the workspace has no row of.

    One query per chunk of ids, and one more per level of merges met.
    """
    parent: dict[str, str | None] = {}
    frontier = set(profile_ids)
    for _ in range(_MAX_DEPTH + 1):
        ask = sorted(frontier - parent.keys())
        if not ask:
            break
        found: dict[str, str | None] = {}
        for chunk in _chunks(ask):
            rows = session.execute(
                select(PROFILES.c.id, PROFILES.c.merged_into).where(
                    PROFILES.c.workspace_id == workspace_id, in_list(session, PROFILES.c.id, chunk)
                )
            )
            found.update({pid: into for pid, into in rows})
        for pid in ask:
            if pid not in found:
                raise UnknownProfile("profile_id", f"no profile {pid!r}")
        parent.update(found)
        frontier = {into for into in found.values() if into}
    result = {}
    for pid in profile_ids:
        current, hops = pid, 0
        while (step := parent.get(current)) and hops < _MAX_DEPTH:
            current, hops = step, hops + 1
        result[pid] = current
    return result


def survivor_of(session: Session, workspace_id: str, profile_id: str) -> str:
    """The profile that holds ``profile_id`` now (raises :class:`UnknownProfile`)."""
    return survivors_of(session, workspace_id, [profile_id])[profile_id]


def _latest(
    session: Session,
    workspace_id: str,
    owner: Mapping[str, str],
    names: Collection[str] | None = None,
) -> dict[_Slot, _Row]:
    """The latest row of each (survivor, kind, name) among the members' rows.

    Per chunk of members, one query: the rows whose id is the highest of its (profile,
    kind, name), read from ``ix_profile_labels_profile``; the members' latest rows are
    then folded into their survivor's. ``names`` restricts it to those names.
    """
    t = LABELS.c
    latest: dict[_Slot, _Row] = {}
    for chunk in _chunks(sorted(owner)):
        newest = select(func.max(t.id)).where(
            t.workspace_id == workspace_id, in_list(session, t.profile_id, chunk)
        )
        if names is not None:
            newest = newest.where(in_list(session, t.name, sorted(names)))
        rows = session.execute(
            select(t.id, t.profile_id, t.kind, t.name, t.op, t.value, t.source).where(
                t.id.in_(newest.group_by(t.profile_id, t.kind, t.name))
            )
        )
        for row in rows:
            slot = (owner[row.profile_id], row.kind, row.name)
            if slot not in latest or latest[slot].id < row.id:
                latest[slot] = _Row(*row)
    return latest


def _fold(survivors: Sequence[str], latest: Mapping[_Slot, _Row]) -> dict[str, Labels]:
    held: dict[str, dict[str, list[_Row]]] = {
        s: {TAG: [], SEGMENT: [], TRAIT: []} for s in survivors
    }
    for (survivor, kind, _), row in latest.items():
        if row.op in _PRESENT and survivor in held:
            held[survivor][kind].append(row)
    found = {}
    for survivor, kinds in held.items():
        traits = sorted(kinds[TRAIT], key=lambda r: r.name)
        found[survivor] = Labels(
            tags=tuple(sorted(r.name for r in kinds[TAG])),
            segments=tuple(sorted(r.name for r in kinds[SEGMENT])),
            traits={r.name: r.value for r in traits},
            trait_sources={r.name: r.source for r in traits},
        )
    return found


def labels_of(session: Session, workspace_id: str, survivors: Collection[str]) -> dict[str, Labels]:
    """The labels of many live profiles (survivor -> :class:`Labels`, empty ones too).

    Rows of profiles merged into a survivor count for it. A few queries whatever the
    number: one per level of merges, one per chunk of 400 member ids.
    """
    wanted = sorted(set(survivors))
    if not wanted:
        return {}
    owner = merged_members(session, workspace_id, wanted, max_depth=_MAX_DEPTH)
    return _fold(wanted, _latest(session, workspace_id, owner))


def labels_of_profile(session: Session, workspace_id: str, profile_id: str) -> Labels:
    """One profile's labels; a merged-away id answers for its survivor (raises
    :class:`UnknownProfile` for an unknown id)."""
    survivor = survivor_of(session, workspace_id, profile_id)
    return labels_of(session, workspace_id, [survivor])[survivor]


def _used_keys(session: Session, workspace_id: str, keys: Collection[str]) -> set[str]:
    t = LABELS.c
    used: set[str] = set()
    for chunk in _chunks(sorted(set(keys))):
        used.update(
            session.scalars(
                select(t.idempotency_key).where(
                    t.workspace_id == workspace_id, in_list(session, t.idempotency_key, chunk)
                )
            )
        )
    return used


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: ``true`` is not ``1``, but ``2`` and ``2.0`` are one number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def apply_label_changes(
    session: Session,
    workspace_id: str,
    changes: Sequence[LabelChange],
    *,
    now: datetime,
) -> list[dict[str, Any]]:
    """Apply the changes in order in the caller's transaction; one outcome per change.

    Every change is validated first (:class:`ValidationError` naming ``changes[i].field``,
    nothing written; :class:`UnknownProfile` for an id without a profile). An outcome is
    ``{"status", "tag"|"segment"|"trait": name, "profile_id"}`` (``"value"`` too for a
    trait set) with status ``added``/``removed`` (tags and segments), ``set``/``unset``
    (traits), ``unchanged`` (already so: nothing written) or ``duplicate`` (the key was
    written before, or earlier in this call: nothing written). Each real change appends
    one row and one change-feed entry (:data:`FEED_TYPES`).
    """
    checked = [check_change(change, f"changes[{i}]") for i, change in enumerate(changes)]
    if not checked:
        return []
    survivor = survivors_of(session, workspace_id, {c.profile_id for c in checked})
    used = _used_keys(session, workspace_id, [c.key for c in checked])
    live = [c for c in checked if c.key not in used]
    state: dict[_Slot, tuple[bool, Any]] = {}
    if live:
        owner = merged_members(
            session, workspace_id, {survivor[c.profile_id] for c in live}, max_depth=_MAX_DEPTH
        )
        latest = _latest(session, workspace_id, owner, {c.name for c in live})
        state = {slot: (row.op in _PRESENT, row.value) for slot, row in latest.items()}
    outcomes: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    feed: list[NewChange] = []
    for change in checked:
        profile_id = survivor[change.profile_id]
        outcome: dict[str, Any] = {"status": "duplicate", change.kind: change.name}
        outcome["profile_id"] = profile_id
        if change.op == SET:
            outcome["value"] = change.value
        outcomes.append(outcome)
        if change.key in used:
            continue
        used.add(change.key)
        slot = (profile_id, change.kind, change.name)
        present, value = state.get(slot, (False, None))
        if change.op == ADD:
            changed = not present
        elif change.op == SET:
            changed = not present or not _same(value, change.value)
        else:  # remove, unset
            changed = present
        if not changed:
            outcome["status"] = "unchanged"
            continue
        outcome["status"] = _STATUS[change.op]
        state[slot] = (change.op in _PRESENT, change.value)
        rows.append(
            {
                "workspace_id": workspace_id,
                "profile_id": profile_id,
                "kind": change.kind,
                "name": change.name,
                "op": change.op,
                "value": change.value,
                "source": change.source,
                "event_id": change.event_id,
                "idempotency_key": change.key,
                "created_at": now,
            }
        )
        data: dict[str, Any] = {change.kind: change.name}
        if change.kind == TRAIT:
            if change.op == SET:
                data["value"] = change.value
            data["previous"] = value if present else None
        data.update(source=change.source, event_id=change.event_id)
        feed.append((FEED_TYPES[change.kind, change.op], profile_id, data))
    _insert(session, rows)
    record_changes(session, workspace_id, feed, now=now)
    return outcomes


def _insert(session: Session, rows: list[dict[str, Any]]) -> None:
    """Append the rows (one executemany); a key another transaction wrote meanwhile
    raises :class:`ConflictError`, so the caller plans again from what is there now."""
    if not rows:
        return
    inserted = session.execute(
        dialect_insert(session)(LABELS)
        .on_conflict_do_nothing(index_elements=["workspace_id", "idempotency_key"])
        .returning(LABELS.c.id),
        rows,
    ).all()
    if len(inserted) != len(rows):
        raise ConflictError("a label change's idempotency key was used meanwhile; retrying")


__all__ = [
    "CHANGE_TYPES",
    "FEED_TYPES",
    "SEGMENT_ENTERED",
    "SEGMENT_EXITED",
    "TAG_ADDED",
    "TAG_REMOVED",
    "TRAIT_SET",
    "TRAIT_UNSET",
    "Labels",
    "UnknownProfile",
    "apply_label_changes",
    "labels_of",
    "labels_of_profile",
    "survivor_of",
    "survivors_of",
]
