"""The profile change feed: ``profile.unmerged``, ``profile.erased``, … (see ``ProfileChange``).

Written in the caller's transaction, next to the change itself; downstream subscribers read
it in id order (:func:`changes_after`), so none is missed and none is heard of twice.
"""

from __future__ import annotations

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


__all__ = ["changes_after", "record_change"]
