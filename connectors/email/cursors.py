"""A folder's cursor and lease in the database: claim, renew, advance, record errors.

Why compare-and-set everywhere: two scheduler processes may run (a restart overlapping
the old one, or two hosts for availability). A folder is polled only by the holder of its
lease, and every cursor advance is conditional on still holding it *and* on the cursor
being where the poller read it; otherwise the whole chunk's transaction (events included)
rolls back with :class:`LeaseLost`. A crashed poller's lease simply expires
(``ECRM_MAIL_LEASE_SECONDS``) and another process takes over from the committed cursor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Update, or_, select, update
from sqlalchemy.orm import Session

from connectors.email.models import MAIL_CURSORS, MAIL_FAILURES, MailCursor
from pipeline.db import Database, dialect_insert
from pipeline.envelope import utcnow
from pipeline.errors import TransientError

MAX_ERROR_CHARS = 1000


def _changed(session: Session, statement: Update) -> int:
    """Rows an UPDATE changed."""
    return int(cast(CursorResult[Any], session.execute(statement)).rowcount)


class LeaseLost(TransientError):
    """Another process holds this folder's lease now (or moved its cursor)."""


@dataclass(frozen=True)
class Cursor:
    """Where a folder's reading stands (a snapshot)."""

    id: int
    workspace_id: str
    mailbox_id: int
    folder: str
    uidvalidity: int | None
    last_uid: int
    lease_owner: str | None
    lease_until: datetime | None


def ensure_cursor(db: Database, workspace_id: str, mailbox_id: int, folder: str) -> int:
    """The id of the folder's cursor, created (from the start) if missing."""
    with db.write() as session:
        stmt = (
            dialect_insert(session)(MAIL_CURSORS)
            .values(
                workspace_id=workspace_id,
                mailbox_id=mailbox_id,
                folder=folder,
                last_uid=0,
                ingested=0,
                failed=0,
            )
            .on_conflict_do_nothing(index_elements=["workspace_id", "mailbox_id", "folder"])
        )
        session.execute(stmt)
        cursor_id: int = session.scalars(
            select(MailCursor.id).where(
                MailCursor.workspace_id == workspace_id,
                MailCursor.mailbox_id == mailbox_id,
                MailCursor.folder == folder,
            )
        ).one()
    return cursor_id


def load_cursor(session: Session, cursor_id: int) -> Cursor:
    row = session.get(MailCursor, cursor_id)
    if row is None:
        raise LeaseLost(f"cursor {cursor_id} is gone (mailbox removed)")
    return Cursor(
        row.id,
        row.workspace_id,
        row.mailbox_id,
        row.folder,
        row.uidvalidity,
        row.last_uid,
        row.lease_owner,
        row.lease_until,
    )


def acquire_lease(db: Database, cursor_id: int, owner: str, seconds: float) -> Cursor | None:
    """Claim the folder if free, expired or already ours; the cursor, or None if held."""
    now = utcnow()
    with db.write() as session:
        claimed = _changed(
            session,
            update(MailCursor)
            .where(
                MailCursor.id == cursor_id,
                or_(
                    MailCursor.lease_owner.is_(None),
                    MailCursor.lease_owner == owner,
                    MailCursor.lease_until < now,
                ),
            )
            .values(lease_owner=owner, lease_until=now + timedelta(seconds=seconds)),
        )
        cursor = load_cursor(session, cursor_id)
    return cursor if claimed == 1 else None


def renew_lease(db: Database, cursor_id: int, owner: str, seconds: float) -> None:
    """Extend our lease; :class:`LeaseLost` if it is no longer ours."""
    with db.write() as session:
        renewed = _changed(
            session,
            update(MailCursor)
            .where(MailCursor.id == cursor_id, MailCursor.lease_owner == owner)
            .values(lease_until=utcnow() + timedelta(seconds=seconds)),
        )
    if renewed != 1:
        raise LeaseLost("another process took over this folder")


def release_lease(db: Database, cursor_id: int, owner: str) -> None:
    """Give the folder up (clean stop), so another process need not wait for expiry."""
    with db.write() as session:
        _changed(
            session,
            update(MailCursor)
            .where(MailCursor.id == cursor_id, MailCursor.lease_owner == owner)
            .values(lease_owner=None, lease_until=None),
        )


def restart_at(db: Database, cursor: Cursor, owner: str, uidvalidity: int) -> Cursor:
    """Start the folder over under a new UIDVALIDITY (first poll, or the server renumbered)."""
    with db.write() as session:
        moved = _changed(
            session,
            update(MailCursor)
            .where(MailCursor.id == cursor.id, MailCursor.lease_owner == owner)
            .values(uidvalidity=uidvalidity, last_uid=0),
        )
        if moved != 1:
            raise LeaseLost("another process took over this folder")
        return load_cursor(session, cursor.id)


def advance(
    session: Session,
    cursor: Cursor,
    owner: str,
    *,
    last_uid: int,
    ingested: int,
    failed: int,
    lease_seconds: float,
) -> None:
    """Move the cursor past a chunk, in the chunk's transaction; :class:`LeaseLost` if not ours.

    Conditional on the lease and on the cursor still being at ``cursor.last_uid`` under the
    same UIDVALIDITY, so a chunk can never be counted twice.
    """
    now = utcnow()
    moved = _changed(
        session,
        update(MailCursor)
        .where(
            MailCursor.id == cursor.id,
            MailCursor.lease_owner == owner,
            MailCursor.uidvalidity == cursor.uidvalidity,
            MailCursor.last_uid == cursor.last_uid,
        )
        .values(
            last_uid=last_uid,
            ingested=MailCursor.ingested + ingested,
            failed=MailCursor.failed + failed,
            last_polled_at=now,
            last_error=None,
            lease_until=now + timedelta(seconds=lease_seconds),
        ),
    )
    if moved != 1:
        raise LeaseLost("the cursor moved or another process took over this folder")


def add_failures(session: Session, rows: list[dict[str, Any]]) -> None:
    """Failure rows (one per refused message; a message refused before stays one row)."""
    if rows:
        stmt = dialect_insert(session)(MAIL_FAILURES).on_conflict_do_nothing(
            index_elements=["workspace_id", "mailbox_id", "folder", "uidvalidity", "uid"]
        )
        session.execute(stmt, rows)


def mark_polled(db: Database, cursor_id: int, owner: str) -> None:
    """A poll found nothing new: say when, clear the last error."""
    with db.write() as session:
        _changed(
            session,
            update(MailCursor)
            .where(MailCursor.id == cursor_id, MailCursor.lease_owner == owner)
            .values(last_polled_at=utcnow(), last_error=None),
        )


def record_error(db: Database, cursor_id: int, message: str) -> None:
    """Keep why the folder could not be polled, for ``ecrm mailboxes list`` and the API."""
    with db.write() as session:
        _changed(
            session,
            update(MailCursor)
            .where(MailCursor.id == cursor_id)
            .values(last_error=message[:MAX_ERROR_CHARS], last_error_at=utcnow()),
        )
