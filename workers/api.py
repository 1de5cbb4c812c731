"""The HTTP API (FastAPI): tracking routes, admin routes for events and profiles, health.

Why it lives in ``workers``: this module only wires routes to domain functions and maps
errors to ``application/problem+json``; the logic sits in ``pipeline``, ``identity`` and
``connectors``.
"""

from __future__ import annotations

import base64
import gzip
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from http import HTTPStatus
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from connectors.pos.http import TooManyTransactions, read_transactions
from connectors.web import SegmentMessageError, to_touchpoint
from identity.views import decode_cursor, event_views, find_profile_id, timeline
from personalization.rules.firings import firings_of_events
from pipeline import IngestResult, ValidationError, utcnow
from pipeline.events import get_event, list_events
from pipeline.ingest import request_outcome
from pipeline.metrics import IngestMetrics
from pipeline.models import EVENT_STATUSES
from pipeline.schema import ensure_workspaces
from pipeline.write_keys import KEY_PREFIX, ManagedKeys
from workers.api_actions import actions_router
from workers.api_identity import identity_router
from workers.api_keys import keys_router
from workers.api_labels import labels_router
from workers.api_loyalty import loyalty_router
from workers.api_mailboxes import mailbox_router
from workers.api_privacy import privacy_router
from workers.api_rules import rules_router
from workers.api_twilio import twilio_router
from workers.api_webhooks import webhooks_router
from workers.auth import admin_workspace, match_secret
from workers.celery_app import configure
from workers.group_writer import GroupWriter
from workers.openapi import install as install_openapi
from workers.params import Cursor
from workers.problems import Problem
from workers.profile_view import full_profile
from workers.rate_limit import RateLimiter
from workers.relay_trigger import RelayTrigger
from workers.runtime import Runtime

MAX_BATCH_MESSAGES = 2500
#: what a 503 for an unavailable database tells clients to wait
DATABASE_RETRY_AFTER_SECONDS = 5
log = structlog.get_logger(__name__)
SHORT_PATHS = {
    "t": "track",
    "i": "identify",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
    "b": "batch",
}


def create_app(runtime: Runtime) -> FastAPI:
    """Build the API for one runtime (one process)."""
    settings, db = runtime.settings, runtime.db
    metrics = IngestMetrics(db)
    relay = RelayTrigger(runtime)
    celery = configure(settings)
    admin = {settings.admin_token: "default"} if settings.admin_token else {}
    limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
    managed_keys = ManagedKeys(db, settings.key_refresh_seconds)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ensure_workspaces(db, set(settings.write_keys.values()))
        relay.start()
        writer.start()
        yield
        writer.stop()
        relay.stop()

    app = FastAPI(title="ecrm-hub", version="0.1.0", lifespan=lifespan)
    if settings.cors_origins:
        # Browsers (analytics.js) call the tracking API from the shop's own origin.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["POST", "OPTIONS"],
            # analytics.js adds X-Retry-Count when it resends after an error
            allow_headers=["Authorization", "Content-Type", "Content-Encoding", "X-Retry-Count"],
            max_age=3600,
        )

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    @app.exception_handler(OperationalError)
    async def _database_unavailable(_: Request, exc: OperationalError) -> Response:
        """The database is down, unreachable or busy: a 503 the client retries, not a 500."""
        log.warning("database_unavailable", error=str(exc.orig)[:300])
        detail = (
            "the database is unavailable; send the request again later (a messageId makes "
            "that safe: an event stored before the failure is not counted twice)"
        )
        problem = Problem(503, "Service Unavailable", detail)
        problem.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return problem.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        """FastAPI's own errors (no such route, wrong method, an unreadable declared body)
        in the same problem+json form as the hub's."""
        title = HTTPStatus(exc.status_code).phrase
        response = Problem(exc.status_code, title, str(exc.detail)).response()
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid_query(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":  # a declared body that is not JSON
            return Problem(400, "Malformed JSON", "body is not valid JSON", "body").response()
        field = str(first["loc"][-1]) if first.get("loc") else "query"
        return Problem(400, "Invalid request", str(first.get("msg", "invalid")), field).response()

    async def read_json(request: Request, limit: int | None = None) -> Any:
        limit = limit or settings.max_request_bytes
        too_large = Problem(413, "Payload Too Large", f"body over {limit} bytes", "body")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_large
        raw = bytearray()
        async for chunk in request.stream():
            raw.extend(chunk)
            if len(raw) > limit:
                raise too_large
        if request.headers.get("content-encoding", "").lower() == "gzip":
            raw = bytearray(_gunzip(bytes(raw), limit))
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Problem(400, "Malformed JSON", f"body is not valid JSON: {exc}", "body") from None

    def basic_write_key(request: Request) -> str | None:
        """The write key from HTTP Basic (Segment's way), checked before the body is read."""
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            raise Problem(401, "Unauthorized", "malformed Basic credentials") from None
        return decoded.partition(":")[0]

    def workspace_for_write(candidate: str | None, body: Any) -> str:
        if candidate is None and isinstance(body, dict) and isinstance(body.get("writeKey"), str):
            candidate = body["writeKey"]
        if not candidate:
            raise Problem(401, "Unauthorized", "write key missing (HTTP Basic username)")
        workspace = match_secret(candidate, settings.write_keys)
        if workspace is None and candidate.startswith(KEY_PREFIX):
            workspace = managed_keys.workspace_of(candidate)
        if workspace is None:
            raise Problem(401, "Unauthorized", "unknown write key")
        wait = limiter.retry_after(candidate)
        if wait is not None:
            detail = f"over {settings.rate_limit:g} requests/s for this write key (ECRM_RATE_LIMIT)"
            problem = Problem(429, "Too Many Requests", detail, "writeKey")
            problem.headers["Retry-After"] = str(wait)
            raise problem
        return workspace

    async def authenticated_json(request: Request, limit: int | None = None) -> tuple[str, Any]:
        """The writing workspace and the parsed body of an ingestion request."""
        key = basic_write_key(request)
        # A bad Basic key is refused before the body is even read.
        workspace = workspace_for_write(key, None) if key is not None else None
        body = await read_json(request, limit)
        return workspace or workspace_for_write(None, body), body

    def workspace_for_admin(request: Request) -> str:
        return admin_workspace(request, admin)

    def committed(
        workspace: str, touchpoints: Sequence[dict[str, Any]], results: Sequence[IngestResult]
    ) -> None:
        """After a request's events committed: count them and wake the relay."""
        accepted: dict[str, int] = {}
        duplicates = rejected = 0
        for result, touchpoint in zip(results, touchpoints, strict=True):
            status = result.status
            if status == "accepted":
                channel = str(touchpoint.get("channel", "?"))
                accepted[channel] = accepted.get(channel, 0) + 1
            elif status == "duplicate":
                duplicates += 1
            elif status == "rejected":
                rejected += 1
        for channel, count in accepted.items():
            metrics.accepted.labels(channel).inc(count)
        metrics.duplicates.inc(duplicates)
        metrics.rejected.inc(rejected)
        if accepted:
            relay.notify(sum(accepted.values()))

    writer = GroupWriter(db, settings.default_region, on_commit=committed)
    store = writer.store

    def tracking_route(message_type: str | None) -> Callable[[Request], Any]:
        async def route(request: Request) -> JSONResponse:
            with metrics.request_seconds.time():
                return await handle(request)

        async def handle(request: Request) -> JSONResponse:
            single = message_type != "batch"
            limit = min(settings.max_event_bytes, settings.max_request_bytes) if single else None
            workspace, body = await authenticated_json(request, limit)
            received = utcnow()
            if not single:
                return await _batch(workspace, body, received)
            try:
                touchpoint = to_touchpoint(
                    body,
                    received_at=received,
                    default_region=settings.default_region,
                    message_type=message_type,
                )
            except SegmentMessageError as exc:
                raise Problem(400, "Invalid event", exc.reason, exc.field) from None
            [result] = await store(workspace, [touchpoint])
            if result.status == "rejected":
                raise Problem(400, "Invalid event", result.reason or "", result.field)
            return JSONResponse({"success": True, "status": result.status})

        return route

    async def _batch(workspace: str, body: Any, received: datetime) -> JSONResponse:
        if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
            raise Problem(400, "Invalid batch", "body needs a 'batch' array", "batch")
        messages = body["batch"]
        if len(messages) > MAX_BATCH_MESSAGES:
            raise Problem(413, "Payload Too Large", f"at most {MAX_BATCH_MESSAGES} messages")
        shared_context = body.get("context") if isinstance(body.get("context"), dict) else {}
        touchpoints: list[dict[str, Any]] = []
        positions: list[int] = []
        rejected: list[dict[str, Any]] = []
        max_bytes, region, dumps = settings.max_event_bytes, settings.default_region, orjson.dumps
        for index, message in enumerate(messages):
            size = len(dumps(message))
            if size > max_bytes:
                reason = f"message is {size} bytes; the limit is {max_bytes}"
                rejected.append({"index": index, "field": "message", "reason": reason})
                continue
            if shared_context and isinstance(message, dict):
                own_context = message.get("context")
                if own_context is None or isinstance(own_context, dict):
                    message = {**message, "context": {**shared_context, **(own_context or {})}}
            try:
                touchpoints.append(
                    to_touchpoint(message, received_at=received, default_region=region)
                )
                positions.append(index)
            except SegmentMessageError as exc:
                rejected.append({"index": index, "field": exc.field, "reason": exc.reason})
        results = await store(workspace, touchpoints) if touchpoints else []
        metrics.rejected.inc(len(rejected))
        outcome = request_outcome(results, positions, rejected)
        return batch_answer(
            *outcome, Problem(400, "Invalid batch", "no message in the batch was valid", "batch")
        )

    def batch_answer(
        accepted: int, duplicates: int, rejected: list[dict[str, Any]], nothing_valid: Problem
    ) -> JSONResponse:
        """Segment's answer to a many-item request; ``nothing_valid`` (400) if none was."""
        if rejected and accepted + duplicates == 0:
            nothing_valid.extra["rejected"] = rejected
            raise nothing_valid
        return JSONResponse(
            {"success": True, "accepted": accepted, "duplicates": duplicates, "rejected": rejected}
        )

    for name in ("track", "identify", "page", "screen", "group", "alias", "batch"):
        app.add_api_route(f"/v1/{name}", tracking_route(name), methods=["POST"], name=name)
    app.add_api_route("/v1/import", tracking_route("batch"), methods=["POST"], name="import")
    # analytics.js (analytics-next) posts to the first letter of the type, `/v1/b` batched.
    for short, name in SHORT_PATHS.items():
        app.add_api_route(
            f"/v1/{short}",
            tracking_route(name),
            methods=["POST"],
            name=f"{name}-short",
            include_in_schema=False,
        )

    @app.post("/v1/pos/transactions")
    async def pos_transactions(request: Request) -> JSONResponse:
        """POS transactions (one, a list, or ``{"transactions": [...]}``); see connectors.pos."""
        with metrics.request_seconds.time():
            workspace, body = await authenticated_json(request)
            try:
                batch = read_transactions(
                    body, received_at=utcnow(), default_region=settings.default_region
                )
            except TooManyTransactions as exc:
                raise Problem(413, "Payload Too Large", exc.message, exc.field) from None
            except ValidationError as exc:
                raise Problem(400, "Invalid transactions", exc.message, exc.field) from None
            touchpoints = batch.touchpoints
            results = await store(workspace, touchpoints) if touchpoints else []
            metrics.rejected.inc(len(batch.rejected))
            accepted, duplicates, rejected = batch.outcome(results)
            first = rejected[0] if rejected else {"reason": "", "field": None}
            detail = first["reason"] if batch.single else "no transaction in the body was valid"
            invalid = Problem(400, "Invalid transaction", detail or "invalid", first["field"])
            return batch_answer(accepted, duplicates, rejected, invalid)

    @app.get("/v1/events/{message_id:path}")  # ids may hold "/"
    def get_one_event(message_id: str, request: Request) -> dict[str, Any]:
        workspace = workspace_for_admin(request)
        with db.read() as session:
            event = get_event(session, workspace, message_id)
            if event is None:
                raise Problem(404, "Not Found", f"no event {message_id!r}", "message_id")
            return event_views(session, workspace, [event])[0]

    @app.get("/v1/events")
    def get_events(
        request: Request, status: str | None = None, after: Cursor = 0, limit: int = 100
    ) -> dict[str, Any]:
        workspace = workspace_for_admin(request)
        if status is not None and status not in EVENT_STATUSES:
            raise Problem(400, "Invalid query", f"status must be one of {EVENT_STATUSES}", "status")
        if not 1 <= limit <= 1000:
            raise Problem(400, "Invalid query", "limit must be 1..1000", "limit")
        with db.read() as session:
            events = list_events(session, workspace, status=status, after_id=after, limit=limit)
            items = event_views(session, workspace, events)
            cursor = events[-1].event.id if len(events) == limit else None
        return {"events": items, "next_after": cursor}

    @app.get("/v1/profiles/{profile_id}")
    def get_profile(profile_id: str, request: Request) -> dict[str, Any]:
        workspace = workspace_for_admin(request)
        with db.read() as session:
            view = full_profile(session, workspace, profile_id)
        if view is None:
            raise Problem(404, "Not Found", f"no profile {profile_id!r}", "profile_id")
        return view

    @app.get("/v1/profiles/{profile_id}/timeline")
    def get_timeline(
        profile_id: str, request: Request, limit: int = 50, before: str | None = None
    ) -> dict[str, Any]:
        workspace = workspace_for_admin(request)
        if not 1 <= limit <= 500:
            raise Problem(400, "Invalid query", "limit must be 1..500", "limit")
        try:
            cursor = decode_cursor(before) if before else None
        except ValueError as exc:
            raise Problem(400, "Invalid query", str(exc), "before") from None
        with db.read() as session:
            view = timeline(session, workspace, profile_id, limit=limit, before=cursor)
            if view is not None:  # what the rules did with each event
                ids = [event["event_id"] for event in view["events"]]
                fired = firings_of_events(session, workspace, ids)
                for event in view["events"]:
                    event["rules"] = fired.get(event["event_id"], [])
        if view is None:
            raise Problem(404, "Not Found", f"no profile {profile_id!r}", "profile_id")
        return view

    @app.get("/v1/profiles")
    def find_profile(request: Request, identifier: str = "") -> dict[str, Any]:
        workspace = workspace_for_admin(request)
        kind, sep, value = identifier.partition(":")
        if not sep or not kind or not value:
            raise Problem(400, "Invalid query", "use identifier=KIND:VALUE", "identifier")
        with db.read() as session:
            try:
                found = find_profile_id(
                    session, workspace, kind, value, settings.default_region, runtime.identity
                )
            except ValueError as exc:
                raise Problem(400, "Invalid query", str(exc), "identifier") from None
            view = full_profile(session, workspace, found) if found else None
        if view is None:
            raise Problem(404, "Not Found", f"no profile with {kind}:{value}", "identifier")
        return view

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        checks = {"database": "ok", "broker": "ok"}
        try:
            with db.read() as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        try:
            with celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=3)
        except Exception as exc:
            checks["broker"] = f"error: {type(exc).__name__}"
        healthy = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if healthy else "unavailable", **checks},
            status_code=200 if healthy else 503,
        )

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(twilio_router(settings, store))
    app.include_router(actions_router(runtime, admin))
    app.include_router(mailbox_router(runtime, admin))
    app.include_router(identity_router(runtime, admin, store))
    app.include_router(privacy_router(runtime, admin))
    app.include_router(rules_router(runtime, admin))
    app.include_router(loyalty_router(runtime, admin))
    app.include_router(labels_router(runtime, admin))
    app.include_router(webhooks_router(runtime, admin))
    app.include_router(keys_router(runtime, admin, managed_keys))
    install_openapi(app)
    return app


def _gunzip(raw: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing one that inflates past ``limit`` (zip bombs)."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(raw, limit + 1)
    except zlib.error:
        raise Problem(400, "Malformed body", "body is not valid gzip", "body") from None
    if len(out) > limit or decompressor.unconsumed_tail:
        raise Problem(413, "Payload Too Large", f"decompressed body over {limit} bytes")
    return out


__all__ = ["create_app", "gzip"]
