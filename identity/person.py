"""The person behind a profile id, and the rows of every identity table that involve them.

The person is the surviving profile of the id asked for (a merged-away id stands for its
survivor) together with every profile row merged into it. The finders here are shared by
export (:mod:`identity.export`) and erasure (:mod:`identity.erasure`): what is exported is
exactly what is erased. Each is one query, or one per few hundred ids, never one per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, Table, cast, or_, select
from sqlalchemy.orm import Session

from identity.models import (
    CHANGES,
    CONFLICTS,
    IDENTIFIERS,
    MERGES,
    PROFILE_EVENTS,
    PROFILES,
    REVIEWS,
    SPLIT_MEMBERS,
    SPLITS,
)
from identity.privacy_models import ERASURES
from identity.views import current_profile, merged_members
from pipeline import ConflictError
from pipeline.db import in_list

_CHUNK = 400
_MAX_CLUSTER = 10_000

Key = tuple[str, str]


@dataclass(frozen=True)
class Person:
    """One person: the surviving profile and every profile row merged into it."""

    workspace_id: str
    requested_id: str
    #: the surviving profile (``requested_id`` itself unless it was merged away)
    profile_id: str
    #: the survivor first, then the merged-away rows in id order
    profile_ids: tuple[str, ...]
    #: the identifiers the person's rows hold, as stored (``kind``, ``value``)
    identifiers: tuple[Key, ...]


def find_person(
    session: Session, workspace_id: str, profile_id: str, *, lock: bool = False
) -> Person | None:
    """The person behind ``profile_id`` (a merged-away id leads to its survivor), or None.

    ``lock`` (PostgreSQL) locks every profile row of the person ``FOR UPDATE`` in id order,
    as the worker does, so a batch resolving the same person waits for the caller's
    transaction and then plans again.
    """
    survivor = current_profile(session, workspace_id, profile_id)
    if survivor is None:
        return None
    merged = merged_members(session, workspace_id, [survivor.id], max_rows=_MAX_CLUSTER)
    ids = [survivor.id, *sorted(set(merged) - {survivor.id})]
    if lock and session.get_bind().dialect.name == "postgresql":
        rows = session.execute(
            select(PROFILES.c.id, PROFILES.c.merged_into)
            .where(PROFILES.c.workspace_id == workspace_id, in_list(session, PROFILES.c.id, ids))
            .order_by(PROFILES.c.id)
            .with_for_update()
        ).all()
        if dict(rows).get(survivor.id) is not None:
            raise ConflictError("the profile was merged meanwhile; try again")
    held = session.execute(
        select(IDENTIFIERS.c.kind, IDENTIFIERS.c.value)
        .where(in_list(session, IDENTIFIERS.c.profile_id, ids))
        .order_by(IDENTIFIERS.c.kind, IDENTIFIERS.c.value)
    ).all()
    return Person(workspace_id, profile_id, survivor.id, tuple(ids), tuple((k, v) for k, v in held))


def profile_rows(session: Session, person: Person) -> list[dict[str, Any]]:
    """The person's profile rows (survivor first), with traits and counts."""
    p = PROFILES.c
    rows = session.execute(
        select(
            p.id,
            p.traits,
            p.trait_times,
            p.first_seen_at,
            p.last_seen_at,
            p.event_count,
            p.created_at,
            p.updated_at,
            p.merged_into,
        ).where(
            p.workspace_id == person.workspace_id, in_list(session, p.id, list(person.profile_ids))
        )
    ).all()
    order = {pid: i for i, pid in enumerate(person.profile_ids)}
    return [dict(row._mapping) for row in sorted(rows, key=lambda row: order[row.id])]


def identifier_rows(session: Session, person: Person) -> list[dict[str, Any]]:
    """The person's identifiers with their channel, first/last seen and provenance."""
    i = IDENTIFIERS.c
    rows = session.execute(
        select(
            i.id,
            i.kind,
            i.value,
            i.profile_id,
            i.channel,
            i.first_seen_at,
            i.last_seen_at,
            i.source_event_id,
            i.linked_by,
            i.attached_to,
            i.sharing,
        )
        .where(in_list(session, i.profile_id, list(person.profile_ids)))
        .order_by(i.kind, i.value)
    ).all()
    return [dict(row._mapping) for row in rows]


def event_ids(session: Session, person: Person) -> list[int]:
    """Every event counted in the person's profiles, in the order they happened."""
    pe = PROFILE_EVENTS.c
    return list(
        session.scalars(
            select(pe.event_id)
            .where(
                pe.workspace_id == person.workspace_id,
                in_list(session, pe.profile_id, list(person.profile_ids)),
            )
            .order_by(pe.occurred_at, pe.event_id)
        )
    )


def merges_of(session: Session, person: Person) -> list[dict[str, Any]]:
    """Merges into or out of any of the person's profile rows (the audit)."""
    m = MERGES.c
    ids = list(person.profile_ids)
    found: dict[int, dict[str, Any]] = {}
    for column in (m.survivor_id, m.merged_id):  # each an index search
        rows = session.execute(
            select(MERGES).where(
                m.workspace_id == person.workspace_id, in_list(session, column, ids)
            )
        )
        found.update({row.id: dict(row._mapping) for row in rows})
    return [found[key] for key in sorted(found)]


def conflicts_of(session: Session, person: Person, identifiers: Sequence[Key] = ()) -> list[Any]:
    """Conflicts naming one of the person's profiles or identifiers (rows, oldest first).

    By identifier it is an index search; by profile the JSON list is searched as text (a
    scan of the workspace's conflicts, which are few) and every candidate checked exactly.
    """
    c = CONFLICTS.c
    ids = set(person.profile_ids)
    texts = sorted({f"{kind}:{value}" for kind, value in (*person.identifiers, *identifiers)})
    found: dict[int, Any] = {}
    for start in range(0, len(texts), _CHUNK):
        rows = session.execute(
            select(CONFLICTS).where(
                c.workspace_id == person.workspace_id,
                in_list(session, c.identifier, texts[start : start + _CHUNK]),
            )
        )
        found.update({row.id: row for row in rows})
    as_text = cast(c.profile_ids, String)
    named = or_(*(as_text.contains(f'"{pid}"', autoescape=True) for pid in sorted(ids)))
    for row in session.execute(
        select(CONFLICTS).where(c.workspace_id == person.workspace_id, named)
    ):
        if ids & set(row.profile_ids):
            found[row.id] = row
    return [found[key] for key in sorted(found)]


def reviews_of(session: Session, person: Person) -> list[dict[str, Any]]:
    """Probable matches (reviews) where the person is the record or the candidate."""
    r = REVIEWS.c
    ids = list(person.profile_ids)
    rows = session.execute(
        select(REVIEWS)
        .where(
            r.workspace_id == person.workspace_id,
            or_(in_list(session, r.profile_id, ids), in_list(session, r.candidate_id, ids)),
        )
        .order_by(r.id)
    )
    return [dict(row._mapping) for row in rows]


def splits_of(session: Session, person: Person) -> list[dict[str, Any]]:
    """Unmerges asked on the person's profiles, with the identifiers each keeps apart."""
    s, sm = SPLITS.c, SPLIT_MEMBERS.c
    rows = [
        dict(row._mapping)
        for row in session.execute(
            select(SPLITS)
            .where(
                s.workspace_id == person.workspace_id,
                in_list(session, s.profile_id, list(person.profile_ids)),
            )
            .order_by(s.id)
        )
    ]
    for split in rows:
        split["members"] = [
            dict(member._mapping)
            for member in session.execute(
                select(sm.kind, sm.value, sm.side)
                .where(sm.split_id == split["id"])
                .order_by(sm.side, sm.kind, sm.value)
            )
        ]
    return rows


def changes_of(session: Session, person: Person) -> list[dict[str, Any]]:
    """The change feed's entries about the person's profiles (``profile.unmerged`` …)."""
    return _rows_about(session, CHANGES, person)


def erasures_of(session: Session, person: Person) -> list[dict[str, Any]]:
    """Earlier erasures of the person (their audit rows, which hold nothing personal)."""
    return _rows_about(session, ERASURES, person)


def _rows_about(session: Session, table: Table, person: Person) -> list[dict[str, Any]]:
    """Every row of ``table`` whose ``profile_id`` is one of the person's, in id order."""
    rows = session.execute(
        select(table)
        .where(
            table.c.workspace_id == person.workspace_id,
            in_list(session, table.c.profile_id, list(person.profile_ids)),
        )
        .order_by(table.c.id)
    )
    return [dict(row._mapping) for row in rows]


__all__ = [
    "Person",
    "changes_of",
    "conflicts_of",
    "erasures_of",
    "event_ids",
    "find_person",
    "identifier_rows",
    "merges_of",
    "profile_rows",
    "reviews_of",
    "splits_of",
]
