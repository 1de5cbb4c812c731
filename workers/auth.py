"""Secrets presented by callers: write keys and admin bearer tokens, compared in constant time.

Why every secret is compared: stopping at the first match would leak, through timing, which
configured secret a guess is close to.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from fastapi import Request

from workers.problems import Problem


def match_secret(candidate: str, secrets: Mapping[str, str]) -> str | None:
    """The owner (workspace) of ``candidate`` among ``secrets``, compared in constant time."""
    found = None
    for secret, owner in secrets.items():
        if hmac.compare_digest(candidate.encode(), secret.encode()):
            found = owner
    return found


def admin_workspace(request: Request, admin_tokens: Mapping[str, str]) -> str:
    """The workspace of the request's ``Authorization: Bearer`` admin token, or 401."""
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else ""
    workspace = match_secret(token, admin_tokens) if token else None
    if workspace is None:
        raise Problem(401, "Unauthorized", "admin bearer token missing or wrong")
    return workspace


__all__ = ["admin_workspace", "match_secret"]
