"""HTTP route of spool mode's later refusals (admin token): ``GET /v1/ingest/rejections``.

In spool mode (``ECRM_INGEST_MODE=spool``) a batch is answered after a check of its
messages' shape; a message refused when the worker maps it (an unreadable timestamp, an
id over 255 characters) is listed here with the request's batch, its index in the
request and the reason, newest first, with the spool's backlog. See :mod:`pipeline.spool`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from pipeline.spool import backlog, rejections
from workers.auth import admin_workspace
from workers.params import OptionalCursor
from workers.runtime import Runtime


def ingest_router(runtime: Runtime, admin_tokens: Mapping[str, str]) -> APIRouter:
    router = APIRouter()
    db = runtime.db

    @router.get("/v1/ingest/rejections")
    def get_rejections(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before: OptionalCursor = None,
    ) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        with db.read() as session:
            found = rejections(session, workspace, limit=limit, before=before)
            spool = backlog(session, workspace)
        return {"rejections": found, "spooled": spool, "mode": runtime.settings.ingest_mode}

    return router


__all__ = ["ingest_router"]
