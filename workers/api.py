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
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from connectors.pos.http import TooManyTransactions, read_transactions
from connectors.web import SegmentMessageError, to_touchpoint
from connectors.web.batch import MAX_BATCH_MESSAGES, SEGMENT_BATCH, check_batch, map_batch
from identity.views import decode_cursor, event_views, find_profile_id, timeline
from personalization.rules.firings import firings_of_events
from pipeline import IngestResult, ValidationError, utcnow
from pipeline.events import get_event, list_events
from pipeline.ingest import request_outcome
from pipeline.metrics import IngestMetrics
from pipeline.models import EVENT_STATUSES
from pipeline.schema import ensure_workspaces
from pipeline.spool import SpoolItem
from pipeline.write_keys import KEY_PREFIX, ManagedKeys
from workers.api_actions import actions_router
from workers.api_identity import identity_router
from workers.api_ingest import ingest_router
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
    if settings.ingest_mode == "spool":
        app.add_middleware(SpoolGateway, handle=lambda *args: spool_gateway(*args))
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
        return database_unavailable(exc)

    def database_unavailable(exc: OperationalError) -> Response:
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

    async def read_json(request: Request, limit: int | None = None) -> tuple[bytes, Any]:
        """The body as received (decompressed) and parsed."""
        headers = request.headers
        return await read_body(
            request.stream(),
            headers.get("content-length"),
            headers.get("content-encoding", ""),
            limit or settings.max_request_bytes,
        )

    def basic_write_key(request: Request) -> str | None:
        """The write key from HTTP Basic (Segment's way), checked before the body is read."""
        return basic_key(request.headers.get("authorization", ""))

    def basic_key(header: str) -> str | None:
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

    async def authenticated_json(
        request: Request, limit: int | None = None
    ) -> tuple[str, bytes, Any]:
        """The writing workspace, and the raw and parsed body of an ingestion request."""
        key = basic_write_key(request)
        # A bad Basic key is refused before the body is even read.
        workspace = workspace_for_write(key, None) if key is not None else None
        raw, body = await read_json(request, limit)
        return workspace or workspace_for_write(None, body), raw, body

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

    def spooled(workspace: str, count: int) -> None:
        metrics.spooled.inc(count)
        relay.notify(count)

    writer = GroupWriter(db, settings.default_region, on_commit=committed, on_spooled=spooled)
    store = writer.store

    def tracking_route(message_type: str | None) -> Callable[[Request], Any]:
        async def route(request: Request) -> Response:
            with metrics.request_seconds.time():
                return await handle(request)

        async def handle(request: Request) -> Response:
            single = message_type != "batch"
            limit = min(settings.max_event_bytes, settings.max_request_bytes) if single else None
            workspace, raw, body = await authenticated_json(request, limit)
            received = utcnow()
            if not single:
                return await _batch(workspace, raw, body, received)
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

    def check_batch_body(body: Any) -> Problem:
        """A batch body's own shape (else the 4xx); the 400 for "no message was valid"."""
        if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
            raise Problem(400, "Invalid batch", "body needs a 'batch' array", "batch")
        if len(body["batch"]) > MAX_BATCH_MESSAGES:
            raise Problem(413, "Payload Too Large", f"at most {MAX_BATCH_MESSAGES} messages")
        return Problem(400, "Invalid batch", "no message in the batch was valid", "batch")

    async def _batch(workspace: str, raw: bytes, body: Any, received: datetime) -> Response:
        nothing_valid = check_batch_body(body)
        if settings.ingest_mode == "spool":
            return await _spool(workspace, raw, body, received, nothing_valid)
        mapped = map_batch(
            body,
            received_at=received,
            default_region=settings.default_region,
            max_event_bytes=settings.max_event_bytes,
            body_bytes=len(raw),
        )
        touchpoints = mapped.touchpoints
        results = await store(workspace, touchpoints) if touchpoints else []
        metrics.rejected.inc(len(mapped.rejected))
        outcome = request_outcome(results, mapped.positions, mapped.rejected)
        return batch_answer(*outcome, nothing_valid)

    async def _spool(
        workspace: str, raw: bytes, body: dict[str, Any], received: datetime, nothing_valid: Problem
    ) -> Response:
        """Spool mode: check the messages' shape, store the request, answer (see
        :mod:`pipeline.spool`); the worker maps and validates the rest."""
        count, rejected = check_batch(
            body, max_event_bytes=settings.max_event_bytes, body_bytes=len(raw)
        )
        metrics.rejected.inc(len(rejected))
        if not count:
            nothing_valid.extra["rejected"] = rejected
            raise nothing_valid
        if "writeKey" in body:  # a secret: not kept in the database
            raw = orjson.dumps({k: v for k, v in body.items() if k != "writeKey"})
        skip = [item["index"] for item in rejected]
        await writer.store_raw(workspace, SpoolItem(SEGMENT_BATCH, raw, received, skip, count))
        answer = {"success": True, "accepted": count, "rejected": rejected, "spooled": True}
        return Response(orjson.dumps(answer), media_type="application/json")

    async def spool_gateway(scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/batch`` in spool mode, answered before FastAPI's routing (see
        :class:`SpoolGateway`): the same checks, problems and answer as the route."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        response: Response
        try:
            with metrics.request_seconds.time():
                key = basic_key(headers.get("authorization", ""))
                workspace = workspace_for_write(key, None) if key is not None else None
                raw, body = await read_body(
                    _chunks(receive),
                    headers.get("content-length"),
                    headers.get("content-encoding", ""),
                    settings.max_request_bytes,
                )
                workspace = workspace or workspace_for_write(None, body)
                received = utcnow()
                response = await _spool(workspace, raw, body, received, check_batch_body(body))
        except Problem as exc:
            response = exc.response()
        except OperationalError as exc:
            response = database_unavailable(exc)
        except ClientDisconnect:
            return
        await response(scope, receive, send)

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
            workspace, _, body = await authenticated_json(request)
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
    app.include_router(ingest_router(runtime, admin))
    install_openapi(app)
    return app


#: the routes spool mode answers in :class:`SpoolGateway`
SPOOLED_PATHS = frozenset({"/v1/batch", "/v1/import", "/v1/b"})


class SpoolGateway:
    """ASGI middleware: in spool mode, the batch routes are answered before FastAPI.

    Why: once a batch is only checked and stored, FastAPI's and Starlette's layers
    (routing, the request object, exception middleware) cost about as much as the work
    itself (py-spy on ``ecrm serve`` under wrk). The handler is the app's own, with its
    authentication, limits and problem answers; CORS, added after it, still wraps it.
    """

    def __init__(self, app: ASGIApp, handle: Callable[[Scope, Receive, Send], Any]) -> None:
        self.app, self.handle = app, handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in SPOOLED_PATHS:
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    """The body's chunks from raw ASGI messages."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        yield message.get("body", b"")
        if not message.get("more_body"):
            return


async def read_body(
    chunks: AsyncIterator[bytes], declared: str | None, encoding: str, limit: int
) -> tuple[bytes, Any]:
    """A body read up to ``limit`` bytes (413 past it, after gzip too) and parsed (400)."""
    too_large = Problem(413, "Payload Too Large", f"body over {limit} bytes", "body")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    raw = bytearray()
    async for chunk in chunks:
        raw.extend(chunk)
        if len(raw) > limit:
            raise too_large
    if encoding.lower() == "gzip":
        raw = bytearray(_gunzip(bytes(raw), limit))
    try:
        return bytes(raw), orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "Malformed JSON", f"body is not valid JSON: {exc}", "body") from None


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
