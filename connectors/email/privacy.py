"""Refused mail that names a person's address, for GDPR export and erasure.

A refused message (``mail_failures``) keeps its headers, and so the sender's and the
recipients' addresses. Erasing a person clears the headers and Message-ID of every
refused message whose headers name one of the person's addresses; the mailbox, folder,
UID, size, reason and time stay (the count of refusals is not personal). The caller passes
plain addresses: connectors know nothing of profiles.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from connectors.email.models import MAIL_FAILURES


def _naming(session: Session, workspace_id: str, addresses: Iterable[str]) -> list[Any]:
    """Refused messages whose headers hold one of ``addresses`` (a workspace's refusals are
    few: they are scanned, and matched without regard to case)."""
    wanted = [address.casefold() for address in addresses if address]
    if not wanted:
        return []
    f = MAIL_FAILURES.c
    rows = session.execute(
        select(MAIL_FAILURES)
        .where(f.workspace_id == workspace_id, f.raw_headers.is_not(None))
        .order_by(f.id)
    )
    return [row for row in rows if any(a in (row.raw_headers or "").casefold() for a in wanted)]


def refused_mail(
    session: Session, workspace_id: str, addresses: Iterable[str]
) -> list[dict[str, Any]]:
    """The refused messages naming these addresses (for an export)."""
    return [dict(row._mapping) for row in _naming(session, workspace_id, addresses)]


def erase_refused_mail(session: Session, workspace_id: str, addresses: Iterable[str]) -> int:
    """Clear the headers and Message-ID of refused messages naming these addresses."""
    rows = _naming(session, workspace_id, addresses)
    if rows:
        f = MAIL_FAILURES.c
        session.execute(
            update(MAIL_FAILURES)
            .where(f.id == bindparam("fid"))
            .values(raw_headers=None, message_id=None),
            [{"fid": row.id} for row in rows],
        )
    return len(rows)


__all__ = ["erase_refused_mail", "refused_mail"]
