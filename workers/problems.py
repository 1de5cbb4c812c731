"""HTTP errors answered as ``application/problem+json`` (RFC 9457), naming the offending field.

Why a module of its own: every router (tracking, POS, Twilio, mailboxes, actions) raises the
same error type and the app maps it once.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

PROBLEM = "application/problem+json"


class Problem(Exception):
    """An HTTP error answered as problem+json, naming the offending field."""

    def __init__(self, status: int, title: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.field = status, title, detail, field
        self.extra: dict[str, Any] = {}
        #: response headers (``Retry-After`` of a 429)
        self.headers: dict[str, str] = {}

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"type": "about:blank", "title": self.title}
        body.update(status=self.status, detail=self.detail)
        if self.field:
            body["field"] = self.field
        body.update(self.extra)
        headers = {"WWW-Authenticate": "Basic"} if self.status == 401 else {}
        headers.update(self.headers)
        return JSONResponse(body, status_code=self.status, media_type=PROBLEM, headers=headers)


async def json_object(request: Request) -> dict[str, Any]:
    """The request's body as a JSON object, or a 400 naming ``body``."""
    try:
        body = await request.json()
    except ValueError:
        raise Problem(400, "Malformed JSON", "the body is not JSON", "body") from None
    if not isinstance(body, dict):
        raise Problem(400, "Invalid body", "the body must be a JSON object", "body")
    return body


__all__ = ["PROBLEM", "Problem", "json_object"]
