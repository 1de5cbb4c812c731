"""Admin routes of inbound email: mailboxes with their cursors, and refused messages.

Why read-only: mailboxes are configured with ``ecrm mailboxes add`` on the hub's host,
where the password's environment variable or secrets file lives; the API shows how
polling goes (cursor, last error) and what was refused, and never a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request

from connectors.email import list_failures, list_mailboxes, mailbox_cursors, mailbox_view
from pipeline import ValidationError
from workers.auth import admin_workspace
from workers.problems import Problem
from workers.runtime import Runtime


def mailbox_router(runtime: Runtime, admin_tokens: Mapping[str, str]) -> APIRouter:
    """``GET /v1/mailboxes`` and ``GET /v1/mailboxes/failures`` (admin bearer token)."""
    router = APIRouter()
    db = runtime.db

    @router.get("/v1/mailboxes")
    def get_mailboxes(request: Request) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        with db.read() as session:
            items = [
                mailbox_view(mailbox, mailbox_cursors(session, mailbox))
                for mailbox in list_mailboxes(session, workspace)
            ]
        return {"mailboxes": items}

    @router.get("/v1/mailboxes/failures")
    def get_failures(
        request: Request, mailbox: str | None = None, limit: int = 100
    ) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        if not 1 <= limit <= 1000:
            raise Problem(400, "Invalid query", "limit must be 1..1000", "limit")
        with db.read() as session:
            try:
                rows = list_failures(session, workspace, mailbox=mailbox or None, limit=limit)
            except ValidationError as exc:
                raise Problem(404, "Not Found", exc.message, exc.field) from None
        return {"failures": [row.as_dict() for row in rows]}

    return router


__all__ = ["mailbox_router"]
