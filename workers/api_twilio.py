"""Twilio's webhooks: ``POST /v1/twilio/sms``, ``/v1/twilio/voice`` and ``/v1/twilio/status``.

Why a router of its own: the routes only check that Twilio sent the request, turn the form
into a touchpoint (:mod:`connectors.twilio.webhooks`), store it and answer TwiML
(:mod:`connectors.twilio.twiml`); nothing here decides what an event means.

Every request, before anything is stored:

1. no ``ECRM_TWILIO_AUTH_TOKEN`` -> 503: the routes are never open;
2. a body that is not ``application/x-www-form-urlencoded`` -> 415, over 64 KB -> 413;
3. ``X-Twilio-Signature`` missing or not Twilio's for the URL Twilio called (``ECRM_PUBLIC_URL``
   + path + query behind a proxy, else the request's own URL) and the body -> 403;
4. an ``AccountSid`` other than ``ECRM_TWILIO_ACCOUNT_SID`` (when set) -> 403;
5. a form without the fields its event needs (``MessageSid``, ``From``…) -> 400 naming it.

Events go to the default workspace. A retried webhook (Twilio retries when its connection
overrides or Webhook Settings ask it to) stores nothing new and is answered like the first.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import APIRouter, Request, Response

from connectors.twilio import twiml
from connectors.twilio.signature import SIGNATURE_HEADER, is_genuine, parse_form, signed_url
from connectors.twilio.webhooks import call_started, sms_received, status_callback
from pipeline import DEFAULT_WORKSPACE, IngestResult, Settings, ValidationError, utcnow
from workers.problems import Problem

log = structlog.get_logger(__name__)

#: ``GroupWriter.store``: append touchpoints to a workspace, return once committed
Store = Callable[[str, list[dict[str, Any]]], Awaitable[list[IngestResult]]]
#: Twilio's forms are a few KB (an SMS body is at most 1,600 characters)
MAX_BODY_BYTES = 64 * 1024
TWIML = "text/xml"
FORM = "application/x-www-form-urlencoded"


def twilio_router(settings: Settings, store: Store) -> APIRouter:
    """The Twilio webhook routes of one hub process."""
    router = APIRouter(prefix="/v1/twilio", tags=["twilio"])

    async def verified_form(request: Request) -> dict[str, str]:
        """The form of a request Twilio really sent (steps 1-4 of the module doc)."""
        token = settings.twilio_auth_token
        if not token:
            raise Problem(
                503,
                "Service Unavailable",
                "Twilio webhooks are off: set ECRM_TWILIO_AUTH_TOKEN to the account's Auth Token",
            )
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not signature:
            log.warning("twilio_webhook_refused", path=request.url.path, reason="no signature")
            raise Problem(403, "Forbidden", f"{SIGNATURE_HEADER} header missing")
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != FORM:
            raise Problem(415, "Unsupported Media Type", f"send {FORM}", "content-type")
        try:
            params = parse_form(await _read_body(request))
        except ValidationError as exc:
            raise Problem(400, "Malformed body", exc.message, exc.field) from None
        url = signed_url(settings.public_url, str(request.url), _raw_path(request), _query(request))
        if not is_genuine(token, url, params, signature):
            log.warning("twilio_webhook_refused", path=request.url.path, reason="bad signature")
            raise Problem(
                403,
                "Forbidden",
                f"{SIGNATURE_HEADER} does not match this body and URL (is ECRM_PUBLIC_URL the "
                "base URL configured in Twilio, and ECRM_TWILIO_AUTH_TOKEN the account's?)",
            )
        form = params.first()
        expected = settings.twilio_account_sid
        if expected and not hmac.compare_digest(
            form.get("AccountSid", "").encode(), expected.encode()
        ):
            log.warning("twilio_webhook_refused", path=request.url.path, reason="other account")
            raise Problem(
                403, "Forbidden", "AccountSid is not ECRM_TWILIO_ACCOUNT_SID", "AccountSid"
            )
        return form

    async def save(touchpoint: dict[str, Any]) -> None:
        """Store one event; a duplicate (Twilio retried) is answered like the original."""
        [result] = await store(DEFAULT_WORKSPACE, [touchpoint])
        if result.status == "rejected":
            raise Problem(400, "Invalid webhook", result.reason or "invalid", result.field)

    def invalid(exc: ValidationError) -> Problem:
        return Problem(400, "Invalid webhook", exc.message, exc.field)

    @router.post("/sms")
    async def incoming_sms(request: Request) -> Response:
        """An incoming SMS/MMS -> ``sms.received``; no reply (Twilio answers STOP/HELP)."""
        form = await verified_form(request)
        try:
            touchpoint = sms_received(
                form, received_at=utcnow(), default_region=settings.default_region
            )
        except ValidationError as exc:
            raise invalid(exc) from None
        await save(touchpoint)
        return Response(twiml.empty_messaging(), media_type=TWIML)

    @router.post("/voice")
    async def incoming_call(request: Request) -> Response:
        """An incoming call -> ``call.started``; answered with a greeting and a forward."""
        form = await verified_form(request)
        try:
            touchpoint = call_started(
                form, received_at=utcnow(), default_region=settings.default_region
            )
        except ValidationError as exc:
            raise invalid(exc) from None
        try:
            await save(touchpoint)
        except Problem:
            raise
        except Exception as exc:
            # A customer is on the line: the call is answered even when the database is
            # down (the writer logged why). Its status callback, a separate request, may
            # still record the call as call.completed once the database is back.
            call_sid = touchpoint["properties"]["call_sid"]
            log.error("twilio_call_not_stored", call_sid=call_sid, error=type(exc).__name__)
        answer = twiml.answer_call(
            settings.twilio_greeting,
            settings.twilio_forward_to,
            record=settings.twilio_record_calls,
        )
        return Response(answer, media_type=TWIML)

    @router.post("/status")
    async def status(request: Request) -> Response:
        """Call and message status callbacks and the Dial action: outcomes only."""
        form = await verified_form(request)
        try:
            touchpoint = status_callback(
                form,
                received_at=utcnow(),
                default_region=settings.default_region,
                agent=request.query_params.get("agent"),
            )
        except ValidationError as exc:
            raise invalid(exc) from None
        if touchpoint is not None:
            await save(touchpoint)
        return Response(twiml.empty_voice(), media_type=TWIML)

    return router


async def _read_body(request: Request) -> bytes:
    too_large = Problem(413, "Payload Too Large", f"body over {MAX_BODY_BYTES} bytes", "body")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > MAX_BODY_BYTES:
            raise too_large
    return bytes(raw)


def _raw_path(request: Request) -> str:
    """The path as sent (percent-encoding kept: Twilio signed it that way)."""
    raw = request.scope.get("raw_path")
    return raw.decode("latin-1") if isinstance(raw, bytes) and raw else request.url.path


def _query(request: Request) -> str:
    raw = request.scope.get("query_string", b"")
    return raw.decode("latin-1") if isinstance(raw, bytes) else ""


__all__ = ["MAX_BODY_BYTES", "Store", "twilio_router"]
