"""The profile change feed: ``profile.unmerged``, ``profile.erased``, … (see ``ProfileChange``).

Written in the caller's transaction, next to the change itself; downstream subscribers read
it in id order (:func:`changes_after`), so none is missed and none is heard of twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, select, text
from sqlalchemy.orm import Session

from identity.models import CHANGES
from pipeline import utcnow
from pipeline.db import deleted, in_list, json_text


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
    rows = [
        {
            "workspace_id": workspace_id,
            "type": type_,
            "profile_id": profile_id,
            "data": data,
            "created_at": stamp,
        }
        for type_, profile_id, data in changes
    ]
    if session.get_bind().dialect.name == "postgresql":  # one statement, not one per row
        session.execute(_PG_INSERT, {"rows": json_text(rows)})
    else:
        session.execute(CHANGES.insert(), rows)


#: the rows travel as one JSON document, in order (``WITH ORDINALITY``: ids follow it)
_PG_INSERT = text(
    "INSERT INTO profile_changes (workspace_id, type, profile_id, data, created_at)"
    " SELECT u.workspace_id, u.type, u.profile_id, u.data, u.created_at"
    " FROM ROWS FROM (jsonb_to_recordset(CAST(:rows AS jsonb)) AS (workspace_id text,"
    " type text, profile_id text, data jsonb, created_at timestamptz)) WITH ORDINALITY"
    " AS u(workspace_id, type, profile_id, data, created_at, n)"
    " ORDER BY u.n"
)


def change_rows(session: Session, workspace_id: str, after: int, limit: int) -> list[Row[Any]]:
    """Changes with an id above ``after``, oldest first, as rows (``created_at`` a datetime)."""
    c = CHANGES.c
    return list(
        session.execute(
            select(c.id, c.type, c.profile_id, c.data, c.created_at)
            .where(c.workspace_id == workspace_id, c.id > after)
            .order_by(c.id)
            .limit(limit)
        )
    )


def changes_after(
    session: Session, workspace_id: str, after: int = 0, *, limit: int = 100
) -> list[dict[str, Any]]:
    """Changes with an id above ``after``, oldest first, JSON-ready."""
    return [
        {
            "id": row.id,
            "type": row.type,
            "profile_id": row.profile_id,
            "data": row.data,
            "created_at": row.created_at.isoformat(),
        }
        for row in change_rows(session, workspace_id, after, limit)
    ]


def delete_changes_before(session: Session, workspace_id: str, below: int, limit: int) -> int:
    """Delete up to ``limit`` of the workspace's oldest changes with an id below ``below``.

    Retention (``ECRM_WEBHOOK_RETENTION_DAYS``): the caller passes a bound its subscribers
    have already read past. Returns how many went.
    """
    c = CHANGES.c
    ids = list(
        session.scalars(
            select(c.id)
            .where(c.workspace_id == workspace_id, c.id < below)
            .order_by(c.id)
            .limit(limit)
        )
    )
    if not ids:
        return 0
    return deleted(session, delete(CHANGES).where(in_list(session, c.id, ids)))


__all__ = [
    "NewChange",
    "change_rows",
    "changes_after",
    "delete_changes_before",
    "record_change",
    "record_changes",
]
