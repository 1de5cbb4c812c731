"""HTTP routes of the action outbox: queue a message, see where it stands, retry a failure.

Why ``POST /v1/actions`` answers 202: the message is queued (committed) and its delivery
task published right away, but sending happens in a worker; ``GET /v1/actions/{id}``
follows it to ``sent``, ``failed`` (with the reason) or ``suppressed`` (consent).
All routes need the admin bearer token; the actions are the token's workspace's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from personalization import (
    STATUSES,
    IdempotencyConflict,
    NotRetryable,
    action_view,
    enqueue,
    get_action,
    list_actions,
    parse_request,
    retry,
)
from personalization.actions import CHANNEL_OF
from pipeline import Settings, ValidationError
from workers.auth import admin_workspace
from workers.delivery import wake
from workers.problems import Problem
from workers.runtime import Runtime

MAX_BODY_BYTES = 2 * 1024 * 1024


def missing_settings(settings: Settings, kind: Any) -> list[str]:
    """The ``ECRM_*`` settings a kind of action needs and this hub lacks."""
    channel = CHANNEL_OF.get(kind) if isinstance(kind, str) else None
    if channel == "email":
        needed = {"ECRM_SMTP_HOST": settings.smtp_host, "ECRM_EMAIL_FROM": settings.email_from}
    elif channel == "sms":
        needed = {
            "ECRM_TWILIO_ACCOUNT_SID": settings.twilio_account_sid,
            "ECRM_TWILIO_AUTH_TOKEN": settings.twilio_auth_token,
            "ECRM_TWILIO_FROM": settings.twilio_from,
        }
    else:
        return []
    return [name for name, value in needed.items() if not value]


def actions_router(runtime: Runtime, admin_tokens: Mapping[str, str]) -> APIRouter:
    """``/v1/actions`` routes for one runtime."""
    settings, db = runtime.settings, runtime.db
    router = APIRouter()

    def create(workspace: str, body: Any) -> tuple[dict[str, Any], bool]:
        kind = body.get("kind") if isinstance(body, dict) else None
        missing = missing_settings(settings, kind)
        if missing:
            raise Problem(
                409,
                "Channel not configured",
                f"{kind} needs {', '.join(missing)} set on the hub",
                "kind",
            )
        try:
            with db.write() as session:
                new = parse_request(
                    session, workspace, body, default_region=settings.default_region
                )
                queued = enqueue(
                    session,
                    workspace,
                    new,
                    publish_lease_seconds=settings.batch_lease_seconds,
                )
                answer = {**action_view(queued.action), "duplicate": not queued.created}
        except ValidationError as exc:
            raise Problem(400, "Invalid action", exc.message, exc.field) from None
        except IdempotencyConflict as exc:
            raise Problem(409, "Conflict", str(exc), "idempotency_key") from None
        if queued.created:
            wake(queued.action.id)
        return answer, queued.created

    @router.post("/v1/actions", status_code=202)
    async def post_action(request: Request) -> JSONResponse:
        """Queue an ``email.send``, ``email.reply`` or ``sms.send``; delivery starts at once."""
        workspace = admin_workspace(request, admin_tokens)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise Problem(413, "Payload Too Large", f"body over {MAX_BODY_BYTES} bytes", "body")
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise Problem(413, "Payload Too Large", f"body over {MAX_BODY_BYTES} bytes", "body")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Problem(400, "Malformed JSON", f"body is not valid JSON: {exc}", "body") from None
        if not isinstance(body, dict):
            raise Problem(400, "Invalid action", "body must be a JSON object", "body")
        answer, _ = await run_in_threadpool(create, workspace, body)
        return JSONResponse(answer, status_code=202)

    @router.get("/v1/actions/{action_id}")
    def get_one(action_id: str, request: Request) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        with db.read() as session:
            action = get_action(session, workspace, action_id)
            if action is None:
                raise Problem(404, "Not Found", f"no action {action_id!r}", "action_id")
            return action_view(action)

    @router.get("/v1/actions")
    def get_many(
        request: Request, status: str | None = None, after: str | None = None, limit: int = 100
    ) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        if status is not None and status not in STATUSES:
            raise Problem(400, "Invalid query", f"status must be one of {STATUSES}", "status")
        if not 1 <= limit <= 1000:
            raise Problem(400, "Invalid query", "limit must be 1..1000", "limit")
        with db.read() as session:
            found = list_actions(session, workspace, status=status, after=after, limit=limit)
            items = [action_view(action) for action in found]
        return {"actions": items, "next_after": found[-1].id if len(found) == limit else None}

    @router.post("/v1/actions/{action_id}/retry", status_code=202)
    def post_retry(action_id: str, request: Request) -> JSONResponse:
        """Queue a ``failed`` action again (a fresh budget of attempts)."""
        workspace = admin_workspace(request, admin_tokens)
        try:
            with db.write() as session:
                view = action_view(retry(session, workspace, action_id))
        except ValidationError as exc:
            raise Problem(404, "Not Found", exc.message, "action_id") from None
        except NotRetryable as exc:
            raise Problem(409, "Conflict", str(exc), "action_id") from None
        wake(action_id)
        return JSONResponse(view, status_code=202)

    return router


__all__ = ["actions_router", "missing_settings"]
