"""Admin routes of identity resolution: why a profile is what it is, refused joins, links.

Why an explicit link is an event: the event log is the truth, so ``POST /v1/identity/links``
appends an ``identity.linked`` touchpoint carrying the identifiers to join, and the worker
resolves it like any other event: under the same limits and blocked values as an event
from a connector, audited the same way. The answer is 202 with the event's message id;
``GET /v1/events/{message_id}`` then shows the profile it landed in.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from identity.explain import explain
from identity.reviews import STATUSES as REVIEW_STATUSES
from identity.reviews import ReviewNotFound, decide, list_reviews
from identity.unmerge import ProfileNotFound
from identity.views import list_conflicts, list_shared, set_sharing
from pipeline import IngestResult, ValidationError, ingest, utcnow
from pipeline.identifiers import normalize_identifier
from workers.auth import admin_workspace
from workers.params import Cursor, RowId
from workers.problems import Problem
from workers.runtime import Runtime
from workers.unmerge_flow import unmerge_profile

Store = Callable[[str, list[dict[str, Any]]], Awaitable[list[IngestResult]]]
MAX_LINK_IDENTIFIERS = 20


def identity_router(runtime: Runtime, admin_tokens: Mapping[str, str], store: Store) -> APIRouter:
    """Explain, conflicts, shared identifiers and links (admin token); ``store`` appends."""
    router = APIRouter()
    db, region = runtime.db, runtime.settings.default_region

    @router.get("/v1/profiles/{profile_id}/explain")
    def get_explain(profile_id: str, request: Request, events: int = 50) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        if not 0 <= events <= 500:
            raise Problem(400, "Invalid query", "events must be 0..500", "events")
        with db.read() as session:
            view = explain(
                session, workspace, profile_id, config=runtime.identity, event_limit=events
            )
        if view is None:
            raise Problem(404, "Not Found", f"no profile {profile_id!r}", "profile_id")
        return view

    @router.post("/v1/profiles/{profile_id}/unmerge")
    async def post_unmerge(profile_id: str, request: Request) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        try:
            body = await request.json()
        except ValueError:
            raise Problem(400, "Invalid JSON", "the body is not JSON", "body") from None
        identifier, source, reason = _unmerge_request(body, region)
        with db.write() as session:
            try:
                return unmerge_profile(
                    runtime,
                    session,
                    workspace,
                    profile_id,
                    identifier=identifier,
                    source=source,
                    reason=reason,
                    requested_by=str(body.get("by") or "api")[:120],
                )
            except ProfileNotFound as exc:
                raise Problem(404, "Not Found", exc.message, "profile_id") from None
            except ValidationError as exc:
                raise Problem(422, "Nothing to unmerge", exc.message, exc.field) from None

    @router.get("/v1/identity/conflicts")
    def get_conflicts(
        request: Request, profile_id: str | None = None, after: Cursor = 0, limit: int = 100
    ) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        if not 1 <= limit <= 1000:
            raise Problem(400, "Invalid query", "limit must be 1..1000", "limit")
        with db.read() as session:
            items, cursor = list_conflicts(
                session, workspace, profile_id=profile_id or None, after=after, limit=limit
            )
        return {"conflicts": items, "next_after": cursor}

    @router.get("/v1/identity/shared")
    def get_shared(request: Request) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        with db.read() as session:
            return {"shared": list_shared(session, workspace)}

    @router.put("/v1/identity/shared/{identifier:path}")
    async def put_shared(identifier: str, request: Request) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        try:
            body = await request.json()
        except ValueError:
            raise Problem(400, "Invalid JSON", "the body is not JSON", "body") from None
        if not isinstance(body, dict) or not isinstance(body.get("shared"), bool):
            raise Problem(400, "Invalid body", 'send {"shared": true|false}', "shared")
        kind, value = _identifier(identifier, runtime.settings.default_region)
        value = runtime.identity.canonical(kind, value)
        with db.write() as session:
            found = set_sharing(session, workspace, kind, value, shared=body["shared"])
        if not found:
            raise Problem(404, "Not Found", f"no profile holds {kind}:{value}", "identifier")
        return {
            "identifier": f"{kind}:{value}",
            "status": "shared" if body["shared"] else "allowed",
        }

    @router.get("/v1/identity/reviews")
    def get_reviews(
        request: Request, status: str = "pending", after: Cursor = 0, limit: int = 100
    ) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        if status not in REVIEW_STATUSES:
            raise Problem(
                400, "Invalid query", f"status must be one of {REVIEW_STATUSES}", "status"
            )
        if not 1 <= limit <= 1000:
            raise Problem(400, "Invalid query", "limit must be 1..1000", "limit")
        with db.read() as session:
            items = list_reviews(session, workspace, status=status, after=after, limit=limit)
        return {"reviews": items, "next_after": items[-1]["id"] if len(items) == limit else None}

    @router.post("/v1/identity/reviews/{review_id}")
    def post_review(review_id: RowId, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        decision = body.get("decision")
        if decision not in ("accept", "reject"):
            raise Problem(400, "Invalid decision", "decision must be accept or reject", "decision")
        with db.write() as session:
            try:
                view, link = decide(
                    session,
                    workspace,
                    review_id,
                    accept=decision == "accept",
                    by=str(body.get("by") or "api")[:120],
                    config=runtime.identity,
                )
            except ReviewNotFound as exc:
                raise Problem(404, "Not Found", exc.message, "review_id") from None
            except ValidationError as exc:
                raise Problem(409, "Conflict", exc.message, exc.field) from None
            if link is not None:  # the worker merges them, like any link
                ingest(session, [link], workspace_id=workspace, default_region=region)
        return {**view, "link_message_id": link["message_id"] if link else None}

    @router.post("/v1/identity/links", status_code=202)
    async def post_link(request: Request) -> JSONResponse:
        workspace = admin_workspace(request, admin_tokens)
        try:
            body = await request.json()
        except ValueError:
            raise Problem(400, "Invalid JSON", "the body is not JSON", "body") from None
        touchpoint = _link_touchpoint(body)
        [result] = await store(workspace, [touchpoint])
        if result.status == "rejected":
            raise Problem(400, "Invalid link", result.reason or "invalid", result.field)
        return JSONResponse(
            {"message_id": touchpoint["message_id"], "status": result.status}, status_code=202
        )

    return router


def _identifier(text: str, default_region: str) -> tuple[str, str]:
    """``KIND:VALUE`` from a path, normalized as ingest does (raises :class:`Problem`)."""
    kind, sep, value = text.partition(":")
    if not sep or not kind or not value:
        raise Problem(400, "Invalid identifier", "use KIND:VALUE", "identifier")
    try:
        return kind, normalize_identifier(kind, value, default_region)
    except ValueError as exc:
        raise Problem(400, "Invalid identifier", str(exc), "identifier") from None


def _unmerge_request(
    body: Any, region: str
) -> tuple[tuple[str, str] | None, str | None, str | None]:
    """``identifier`` (``KIND:VALUE``) or ``source``, and ``reason`` (raises :class:`Problem`)."""
    if not isinstance(body, dict):
        raise Problem(400, "Invalid unmerge", "the body must be a JSON object", "body")
    identifier, source, reason = body.get("identifier"), body.get("source"), body.get("reason")
    if (identifier is None) == (source is None):
        raise Problem(
            400, "Invalid unmerge", "send either identifier (KIND:VALUE) or source", "identifier"
        )
    if source is not None and (not isinstance(source, str) or not 1 <= len(source) <= 64):
        raise Problem(400, "Invalid unmerge", "a string of 1 to 64 characters", "source")
    if identifier is not None and not isinstance(identifier, str):
        raise Problem(400, "Invalid unmerge", "KIND:VALUE as a string", "identifier")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
        raise Problem(400, "Invalid unmerge", "a string of up to 500 characters", "reason")
    key = _identifier(identifier, region) if identifier is not None else None
    return key, source, reason


def _link_touchpoint(body: Any) -> dict[str, Any]:
    """The ``identity.linked`` touchpoint of a link request (raises :class:`Problem`)."""
    if not isinstance(body, dict):
        raise Problem(400, "Invalid link", "the body must be a JSON object", "body")
    identifiers = body.get("identifiers")
    if not isinstance(identifiers, dict) or len(identifiers) < 2:
        raise Problem(
            400, "Invalid link", "identifiers: an object of at least two kind: value", "identifiers"
        )
    if len(identifiers) > MAX_LINK_IDENTIFIERS:
        raise Problem(
            400, "Invalid link", f"at most {MAX_LINK_IDENTIFIERS} identifiers", "identifiers"
        )
    key = body.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 200):
        raise Problem(400, "Invalid link", "a string of 1 to 200 characters", "idempotency_key")
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
        raise Problem(400, "Invalid link", "a string of up to 500 characters", "reason")
    now = utcnow()
    return {
        "message_id": f"link:{key}" if key else f"link:{uuid.uuid4()}",
        "channel": body.get("channel") or "web",
        "type": "identity.linked",
        "occurred_at": now,
        "received_at": now,
        "source": "api.link",
        "identifiers": identifiers,
        "properties": {"reason": reason} if reason else {},
    }


__all__ = ["identity_router"]
