"""The profile change feed: ``profile.unmerged``, ``profile.erased``, … (see ``ProfileChange``).

Written in the caller's transaction, next to the change itself; downstream subscribers read
it in id order (:func:`changes_after`), so none is missed and none is heard of twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from identity.models import CHANGES
from pipeline import utcnow


def record_change(
    session: Session, workspace_id: str, type_: str, profile_id: str, data: dict[str, Any]
) -> int:
    """Append one change; its id (the feed's cursor)."""
    inserted = session.execute(
        CHANGES.insert().returning(CHANGES.c.id),
        {
            "workspace_id": workspace_id,
            "type": type_,
            "profile_id": profile_id,
            "data": data,
            "created_at": utcnow(),
        },
    )
    return int(inserted.scalar_one())


#: one entry of :func:`record_changes`: (type, profile id, data)
NewChange = tuple[str, str, dict[str, Any]]


def record_changes(
    session: Session,
    workspace_id: str,
    changes: Sequence[NewChange],
    *,
    now: datetime | None = None,
) -> None:
    """Append many changes in one statement (an executemany), in the order given.

    Why beside :func:`record_change`: a batch of events may change hundreds of profiles'
    tags at once, and one ``INSERT … RETURNING`` per change would cost a round trip each.
    The ids are not returned; subscribers read them with :func:`changes_after`.
    """
    if not changes:
        return
    stamp = now or utcnow()
    session.execute(
        CHANGES.insert(),
        [
            {
                "workspace_id": workspace_id,
                "type": type_,
                "profile_id": profile_id,
                "data": data,
                "created_at": stamp,
            }
            for type_, profile_id, data in changes
        ],
    )


def changes_after(
    session: Session, workspace_id: str, after: int = 0, *, limit: int = 100
) -> list[dict[str, Any]]:
    """Changes with an id above ``after``, oldest first."""
    c = CHANGES.c
    rows = session.execute(
        select(c.id, c.type, c.profile_id, c.data, c.created_at)
        .where(c.workspace_id == workspace_id, c.id > after)
        .order_by(c.id)
        .limit(limit)
    )
    return [
        {
            "id": row.id,
            "type": row.type,
            "profile_id": row.profile_id,
            "data": row.data,
            "created_at": row.created_at.isoformat(),
        }
        for row in rows
    ]


__all__ = ["NewChange", "changes_after", "record_change", "record_changes"]
