"""The writes of a merge: the merged profile points at its survivor, everything it held moves.

Why moved rather than linked: readers (lookups by identifier, the timeline, history
conditions) then find one profile with one index search, never a chain. The merged
profile's row stays, with ``merged_into``, so its old id redirects and the audit keeps
what it was. Merges are rare, so these are plain statements on both databases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from identity.models import (
    CONFLICTS,
    IDENTIFIERS,
    MATCH_KEYS,
    MERGES,
    PROFILE_EVENTS,
    PROFILES,
    REVIEWS,
    TYPE_COUNTS,
)
from pipeline import ConflictError, dialect_insert


def merge_profiles(session: Session, workspace_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """Point each merged profile at its survivor and move its identifiers, events, counts.

    ``rows``: ``pid`` (merged), ``into`` (survivor), ``seen`` (its ``updated_at`` as read),
    ``now``. The survivor's own row is updated by the plan's profile updates (counts,
    traits); its type counts already include the merged profile's.
    """
    marked = session.execute(
        update(PROFILES)
        .where(
            PROFILES.c.id == bindparam("pid"),
            PROFILES.c.updated_at == bindparam("seen"),
            PROFILES.c.merged_into.is_(None),
        )
        # its events are counted in the survivor now: sums over profiles stay true
        .values(merged_into=bindparam("into"), updated_at=bindparam("now"), event_count=0),
        list(rows),
    )
    if int(marked.rowcount) != len(rows):  # type: ignore[attr-defined]
        raise ConflictError("a merged profile changed while its batch was planned; retrying")
    for row in rows:
        loser, survivor = row["pid"], row["into"]
        session.execute(
            update(IDENTIFIERS)
            .where(IDENTIFIERS.c.workspace_id == workspace_id, IDENTIFIERS.c.profile_id == loser)
            .values(profile_id=survivor)
        )
        session.execute(
            update(PROFILE_EVENTS)
            .where(
                PROFILE_EVENTS.c.workspace_id == workspace_id,
                PROFILE_EVENTS.c.profile_id == loser,
            )
            .values(profile_id=survivor)
        )
        session.execute(  # the survivor's plan adds them to its own
            delete(TYPE_COUNTS).where(
                TYPE_COUNTS.c.workspace_id == workspace_id, TYPE_COUNTS.c.profile_id == loser
            )
        )
        _move_match_keys(session, workspace_id, loser, survivor)


def _move_match_keys(session: Session, workspace_id: str, loser: str, survivor: str) -> None:
    """File the survivor under the merged profile's blocking keys (it may be found by them)."""
    keys = MATCH_KEYS.c
    blocks = session.scalars(
        select(keys.block).where(keys.workspace_id == workspace_id, keys.profile_id == loser)
    ).all()
    if not blocks:
        return
    session.execute(
        dialect_insert(session)(MATCH_KEYS).on_conflict_do_nothing(),
        [{"workspace_id": workspace_id, "block": b, "profile_id": survivor} for b in blocks],
    )
    session.execute(
        delete(MATCH_KEYS).where(keys.workspace_id == workspace_id, keys.profile_id == loser)
    )


def record_matching(
    session: Session, match_keys: Sequence[dict[str, Any]], reviews: Sequence[dict[str, Any]]
) -> None:
    """File profiles under their new blocking keys; queue probable matches for review."""
    if match_keys:
        session.execute(
            dialect_insert(session)(MATCH_KEYS).on_conflict_do_nothing(), list(match_keys)
        )
    if reviews:
        session.execute(REVIEWS.insert(), list(reviews))


def record(
    session: Session, merges: Sequence[dict[str, Any]], conflicts: Sequence[dict[str, Any]]
) -> None:
    """Append the batch's merge audit and refused joins."""
    if merges:
        session.execute(MERGES.insert(), list(merges))
    if conflicts:
        session.execute(CONFLICTS.insert(), list(conflicts))


def flag_shared(session: Session, workspace_id: str, keys: Sequence[tuple[str, str]]) -> None:
    """Mark identifiers as shared by several people (unless an operator decided already)."""
    session.execute(
        update(IDENTIFIERS)
        .where(
            IDENTIFIERS.c.workspace_id == workspace_id,
            IDENTIFIERS.c.kind == bindparam("k"),
            IDENTIFIERS.c.value == bindparam("v"),
            IDENTIFIERS.c.sharing.is_(None),
        )
        .values(sharing="shared"),
        [{"k": kind, "v": value} for kind, value in keys],
    )
