"""Admin routes of the webhook endpoint registry (``/v1/webhooks/endpoints``, admin token).

``POST`` takes ``{"url": ..., "events": [...], "description": ..., "enabled": ...}`` (an
empty or missing ``events`` means every event) and answers 201 with the endpoint and its
``secret``: the only time it is shown. ``POST …/{id}/rotate-secret`` (``{"grace_seconds":
86400}``, optional) answers the new secret and when the old one stops being signed with.
``GET`` (list, one), ``PATCH`` (the same fields, all optional) and ``DELETE`` (204) never
show a secret. Bad input is 422 ``application/problem+json`` naming the field (``url``,
``events[1]``); an unknown id is 404 naming ``endpoint_id``.

The delivery log: ``GET /v1/webhooks/deliveries?endpoint=&status=&profile=&before=&limit=``
(newest first; ``status`` one of pending, retrying, delivered, failed), ``GET …/{id}`` (the
payload and every attempt), ``POST …/{id}/retry`` (send it again now, 202; 409 while its
endpoint is disabled) and ``POST /v1/webhooks/endpoints/{id}/replay`` with ``{"since":
"2h"}`` (or an ISO time): every change since then queued again for that endpoint (202).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from connectors.webhooks.deliveries import (
    DeliveryNotFound,
    EndpointDisabled,
    get_delivery,
    list_deliveries,
    retry_delivery,
)
from connectors.webhooks.endpoints import (
    EndpointNotFound,
    create_endpoint,
    delete_endpoint,
    get_endpoint,
    list_endpoints,
    rotate_secret,
    update_endpoint,
)
from pipeline import ValidationError, utcnow
from workers.auth import admin_workspace
from workers.params import OptionalCursor
from workers.problems import Problem, json_object
from workers.rules_period import period_start
from workers.runtime import Runtime
from workers.webhooks_dispatch import replay

PATH = "/v1/webhooks/endpoints"
DELIVERIES = "/v1/webhooks/deliveries"
#: the fields a body may carry, and their JSON types
FIELDS: dict[str, tuple[type, ...]] = {
    "url": (str,),
    "events": (list,),
    "description": (str,),
    "enabled": (bool,),
}


def webhooks_router(runtime: Runtime, admin_tokens: Mapping[str, str]) -> APIRouter:
    """``/v1/webhooks/endpoints`` routes (admin token)."""
    router = APIRouter()
    db = runtime.db
    allow_private = runtime.settings.webhook_allow_private

    @router.post(PATH, status_code=201)
    async def post_endpoint(request: Request) -> JSONResponse:
        workspace = admin_workspace(request, admin_tokens)
        body = _fields(await json_object(request))
        if "url" not in body:
            raise Problem(422, "Invalid endpoint", "url is required", "url")

        def write() -> dict[str, Any]:
            with _problems(), db.write() as session:
                view, secret = create_endpoint(
                    session,
                    workspace,
                    url=body["url"],
                    events=body.get("events") or (),
                    description=body.get("description", ""),
                    enabled=body.get("enabled", True),
                    allow_private=allow_private,
                    now=utcnow(),
                )
            return {**view, "secret": secret}

        return JSONResponse(await run_in_threadpool(write), status_code=201)

    @router.get(PATH)
    def get_all(request: Request) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        with db.read() as session:
            return {"endpoints": list_endpoints(session, workspace, now=utcnow())}

    @router.get(PATH + "/{endpoint_id}")
    def get_one(endpoint_id: str, request: Request) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        with db.read() as session:
            view = get_endpoint(session, workspace, endpoint_id, now=utcnow())
        if view is None:
            raise _not_found(endpoint_id)
        return view

    @router.patch(PATH + "/{endpoint_id}")
    async def patch_endpoint(endpoint_id: str, request: Request) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        body = _fields(await json_object(request))

        def write() -> dict[str, Any]:
            with _problems(), db.write() as session:
                return update_endpoint(
                    session,
                    workspace,
                    endpoint_id,
                    url=body.get("url"),
                    events=body.get("events"),
                    description=body.get("description"),
                    enabled=body.get("enabled"),
                    allow_private=allow_private,
                    now=utcnow(),
                )

        return await run_in_threadpool(write)

    @router.delete(PATH + "/{endpoint_id}", status_code=204)
    def delete_one(endpoint_id: str, request: Request) -> Response:
        workspace = admin_workspace(request, admin_tokens)
        with _problems(), db.write() as session:
            delete_endpoint(session, workspace, endpoint_id)
        return Response(status_code=204)

    @router.post(PATH + "/{endpoint_id}/rotate-secret")
    async def post_rotate(endpoint_id: str, request: Request) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        raw = await request.body()
        body = await json_object(request) if raw.strip() else {}
        grace = body.get("grace_seconds", 86400)
        if not isinstance(grace, int) or isinstance(grace, bool):
            raise Problem(422, "Invalid rotation", "must be whole seconds", "grace_seconds")

        def write() -> dict[str, Any]:
            now = utcnow()
            with _problems(), db.write() as session:
                secret = rotate_secret(
                    session, workspace, endpoint_id, grace_seconds=grace, now=now
                )
            return {
                "id": endpoint_id,
                "secret": secret,
                "previous_expires_at": (now + timedelta(seconds=grace)).isoformat(),
            }

        return await run_in_threadpool(write)

    @router.get(DELIVERIES)
    def get_deliveries(
        request: Request,
        endpoint: str | None = None,
        status: str | None = None,
        profile: str | None = None,
        before: OptionalCursor = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        with _problems("Invalid query"), db.read() as session:
            items, cursor = list_deliveries(
                session,
                workspace,
                endpoint_id=endpoint,
                status=status,
                profile_id=profile,
                before=before,
                limit=limit,
            )
        return {"deliveries": items, "next_before": cursor}

    @router.get(DELIVERIES + "/{delivery_id}")
    def get_one_delivery(delivery_id: str, request: Request) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        with _problems(), db.read() as session:
            return get_delivery(session, workspace, delivery_id)

    @router.post(DELIVERIES + "/{delivery_id}/retry", status_code=202)
    def post_retry(delivery_id: str, request: Request) -> JSONResponse:
        workspace = admin_workspace(request, admin_tokens)
        with _problems(), db.write() as session:
            view = retry_delivery(session, workspace, delivery_id, now=utcnow())
        return JSONResponse(view, status_code=202)

    @router.post(PATH + "/{endpoint_id}/replay", status_code=202)
    async def post_replay(endpoint_id: str, request: Request) -> JSONResponse:
        workspace = admin_workspace(request, admin_tokens)
        body = await json_object(request)
        since = body.get("since")
        if not isinstance(since, str) or not since.strip():
            raise Problem(422, "Invalid replay", "a period (2h, 7d) or an ISO time", "since")
        try:
            start = period_start(since, "since")
        except ValueError as exc:
            raise Problem(422, "Invalid replay", str(exc), "since") from None

        def write() -> int:
            with _problems():
                return replay(runtime, workspace, endpoint_id, start)

        queued = await run_in_threadpool(write)
        return JSONResponse(
            {"endpoint_id": endpoint_id, "since": start.isoformat(), "queued": queued},
            status_code=202,
        )

    return router


@contextmanager
def _problems(title: str = "Invalid endpoint") -> Iterator[None]:
    """Registry errors as problem+json (raised out of ``db.write()``: nothing is written)."""
    try:
        yield
    except EndpointNotFound as exc:
        raise _not_found(exc.endpoint_id) from None
    except DeliveryNotFound as exc:
        raise Problem(
            404, "Not Found", f"no webhook delivery {exc.message_id!r}", "delivery_id"
        ) from None
    except EndpointDisabled as exc:
        raise Problem(409, "Endpoint disabled", str(exc), "endpoint_id") from None
    except ValidationError as exc:
        status = 400 if title == "Invalid query" else 422
        raise Problem(status, title, exc.message, exc.field) from None


def _not_found(endpoint_id: str) -> Problem:
    return Problem(404, "Not Found", f"no webhook endpoint {endpoint_id!r}", "endpoint_id")


def _fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The known fields of an endpoint body, type-checked; an unknown field is refused."""
    fields: dict[str, Any] = {}
    for name, value in body.items():
        if name not in FIELDS:
            raise Problem(422, "Invalid endpoint", f"unknown field; use {sorted(FIELDS)}", name)
        if value is None and name != "url":
            continue  # null: as if absent
        if not isinstance(value, FIELDS[name]):
            kind = {"url": "text", "events": "a list", "description": "text"}.get(name, "bool")
            raise Problem(422, "Invalid endpoint", f"must be {kind}", name)
        fields[name] = value
    return fields


__all__ = ["webhooks_router"]
