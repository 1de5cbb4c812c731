"""The hub's OpenAPI document: what FastAPI derives from the routes, plus what it cannot see.

Why completed here rather than on each route: the ingest and admin routes read their JSON
bodies themselves (a fast path for ingest, and one problem+json answer naming the field for
every mistake), so FastAPI sees no request body; and it documents its own 422 for a bad
query parameter, which the hub answers as 400 problem+json. This module adds, in one place,
the request bodies clients send, the problem+json answer every client error gets, and the
503 any route answers while the database is unavailable (and the Twilio webhooks while
they are not configured), with ``Retry-After``. ``tests/e2e/test_openapi.py`` runs Schemathesis
against a live hub with this document: no 5xx, and every answer as documented.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from connectors.pos.transactions import Transaction
from personalization.rules.schema import RuleModel

JSON = "application/json"
PROBLEM_MEDIA = "application/problem+json"
_REF = "#/components/schemas/{model}"

#: RFC 9457 problem details, as :class:`workers.problems.Problem` writes them
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "field": {"type": "string", "description": "the request field at fault"},
    },
    "additionalProperties": True,
}

_TEXT = {"type": "string"}
_OBJECT = {"type": "object", "additionalProperties": True}
_TIME = {"type": "string", "description": "ISO 8601 time (with an offset, or UTC)"}
_ID = {"oneOf": [{"type": "string"}, {"type": "number"}]}

#: fields every Segment message may carry (Segment's HTTP Tracking API names)
_SEGMENT_COMMON: dict[str, Any] = {
    "userId": _ID,
    "anonymousId": _ID,
    "messageId": _TEXT,
    "timestamp": _TIME,
    "sentAt": _TIME,
    "originalTimestamp": _TIME,
    "context": _OBJECT,
    "integrations": _OBJECT,
    "writeKey": _TEXT,
}
#: per call: its own fields, and those it requires
_SEGMENT_CALLS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "track": ({"event": _TEXT, "properties": _OBJECT}, ["event"]),
    "identify": ({"traits": _OBJECT}, []),
    "page": ({"name": _TEXT, "category": _TEXT, "properties": _OBJECT}, []),
    "screen": ({"name": _TEXT, "category": _TEXT, "properties": _OBJECT}, []),
    "group": ({"groupId": _ID, "traits": _OBJECT}, ["groupId"]),
    "alias": ({"previousId": _ID}, ["previousId", "userId"]),
}


def _segment_message(call: str, *, typed: bool) -> dict[str, Any]:
    own, required = _SEGMENT_CALLS[call]
    properties: dict[str, Any] = {**_SEGMENT_COMMON, **own}
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if typed:
        properties["type"] = {"type": "string", "enum": [call]}
        schema["required"] = ["type", *required]
    if call != "alias":  # someone: a user id or an anonymous id
        schema["anyOf"] = [{"required": ["userId"]}, {"required": ["anonymousId"]}]
    return schema


def _batch() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["batch"],
        "properties": {
            "batch": {
                "type": "array",
                "items": {"oneOf": [_segment_message(c, typed=True) for c in _SEGMENT_CALLS]},
            },
            "context": _OBJECT,
            "integrations": _OBJECT,
            "writeKey": _TEXT,
            "sentAt": _TIME,
        },
    }


def _pos_body() -> dict[str, Any]:
    one = {"$ref": _REF.format(model="Transaction")}
    return {
        "oneOf": [
            one,
            {"type": "array", "items": one},
            {
                "type": "object",
                "required": ["transactions"],
                "properties": {"transactions": {"type": "array", "items": one}},
            },
        ]
    }


def _webhook_endpoint(*, create: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "url": {"type": "string", "format": "uri"},
            "events": {"type": "array", "items": _TEXT},
            "description": _TEXT,
            "enabled": {"type": "boolean"},
        },
    }
    if create:
        schema["required"] = ["url"]
    return schema


_IDEMPOTENCY = {"type": "string", "minLength": 1, "maxLength": 200}
_REASON = {"type": "string", "maxLength": 500}

#: (method, path) -> the JSON body the route reads (``None``: YAML or JSON, see the route)
REQUEST_BODIES: dict[tuple[str, str], Callable[[], dict[str, Any]]] = {
    **{
        ("post", f"/v1/{call}"): partial(_segment_message, call, typed=False)
        for call in _SEGMENT_CALLS
    },
    ("post", "/v1/batch"): _batch,
    ("post", "/v1/import"): _batch,
    ("post", "/v1/pos/transactions"): _pos_body,
    ("post", "/v1/write-keys"): lambda: {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 100}},
        "additionalProperties": False,
    },
    ("post", "/v1/webhooks/endpoints"): lambda: _webhook_endpoint(create=True),
    ("patch", "/v1/webhooks/endpoints/{endpoint_id}"): lambda: _webhook_endpoint(create=False),
    ("post", "/v1/profiles/{profile_id}/loyalty/entries"): lambda: {
        "type": "object",
        "required": ["points", "reason"],
        "properties": {
            "kind": {"type": "string", "enum": ["earn", "adjust", "redeem"]},
            "points": {"type": "integer"},
            "reason": _TEXT,
            "idempotency_key": _IDEMPOTENCY,
        },
    },
    ("post", "/v1/profiles/{profile_id}/loyalty/redemptions"): lambda: {
        "type": "object",
        "required": ["reward"],
        "properties": {"reward": _TEXT, "idempotency_key": _IDEMPOTENCY},
    },
    ("post", "/v1/profiles/{profile_id}/unmerge"): lambda: {
        "type": "object",
        "properties": {
            "identifier": {"type": "string", "description": "KIND:VALUE"},
            "source": {"type": "string", "minLength": 1, "maxLength": 64},
            "reason": _REASON,
            "by": _TEXT,
        },
    },
    ("put", "/v1/identity/shared/{identifier}"): lambda: {
        "type": "object",
        "required": ["shared"],
        "properties": {"shared": {"type": "boolean"}},
    },
    ("post", "/v1/identity/links"): lambda: {
        "type": "object",
        "required": ["identifiers"],
        "properties": {
            "identifiers": {"type": "object", "minProperties": 2, "additionalProperties": _TEXT},
            "idempotency_key": _IDEMPOTENCY,
            "reason": _REASON,
            "channel": _TEXT,
        },
    },
    ("post", "/v1/actions"): lambda: {
        "type": "object",
        "required": ["kind"],
        "properties": {"kind": _TEXT},
        "additionalProperties": True,
    },
}


def _rule_set_body(components: dict[str, Any]) -> dict[str, Any]:
    """``PUT /v1/rules`` and ``POST /v1/rules/test``: a rule set, JSON or YAML."""
    schema = RuleModel.model_json_schema(ref_template=_REF)
    components.update(schema.pop("$defs", {}))
    components["Rule"] = schema
    rule_set = {
        "type": "object",
        "required": ["rules"],
        "properties": {"rules": {"type": "array", "items": {"$ref": _REF.format(model="Rule")}}},
    }
    return {
        "required": True,
        "content": {
            JSON: {"schema": rule_set},
            "application/yaml": {"schema": {"type": "string", "description": "the same, in YAML"}},
        },
    }


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Add bodies, problem answers and contract 503s to a FastAPI document (in place)."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    transaction = Transaction.model_json_schema(ref_template=_REF)
    components.update(transaction.pop("$defs", {}))
    components["Transaction"] = transaction
    problem = {
        "description": "a client error, named in problem+json (RFC 9457)",
        "content": {PROBLEM_MEDIA: {"schema": {"$ref": _REF.format(model="Problem")}}},
    }
    unavailable = {
        "description": "not available: the database or broker is down, or not configured",
        "content": {PROBLEM_MEDIA: {"schema": {"$ref": _REF.format(model="Problem")}}},
    }
    rule_set: dict[str, Any] | None = None
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # a bad query parameter is a 400 problem, see above
            responses["4XX"] = deepcopy(problem)
            responses["503"] = deepcopy(unavailable)
            if path == "/metrics":  # Prometheus' text exposition format
                responses["200"] = {
                    "description": "the hub's metrics, for Prometheus",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            elif path == "/healthz":  # its own body, not a problem
                responses["503"] = {"description": "the database or the broker is unreachable"}
            body = REQUEST_BODIES.get((method, path))
            if body is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {JSON: {"schema": body()}},
                }
            elif (method, path) in (("put", "/v1/rules"), ("post", "/v1/rules/test")):
                rule_set = rule_set or _rule_set_body(components)
                operation["requestBody"] = deepcopy(rule_set)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return document


def install(app: FastAPI) -> None:
    """Serve the completed document at ``/openapi.json`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = ["PROBLEM_SCHEMA", "REQUEST_BODIES", "complete", "install"]
