"""HTTP routes of the loyalty ledger: a profile's points, tier, history and rewards.

``GET /v1/profiles/{id}/loyalty`` shows the balance, tier, a page of the ledger and the
rewards; ``POST …/loyalty/entries`` awards, deducts or adjusts points; ``POST
…/loyalty/redemptions`` redeems a catalogue reward. An id merged away answers for the
surviving profile. A debit over the balance is 409 naming the field (``points`` or
``reward``) with ``balance`` and ``needed``; nothing is written then.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from personalization.loyalty import (
    IdempotencyConflict,
    InsufficientPoints,
    LoyaltyConfig,
    Posted,
    ProfileNotFound,
    UnknownReward,
    adjust,
    award,
    brief,
    deduct,
    redeem_reward,
    summary,
)
from pipeline import ValidationError
from workers.auth import admin_workspace
from workers.params import OptionalCursor
from workers.problems import Problem, json_object
from workers.runtime import Runtime

ENTRY_KINDS = {"earn": award, "redeem": deduct, "adjust": adjust}
#: an entry or redemption sent again with its idempotency key: the first one, 200
_ALREADY: dict[int | str, dict[str, Any]] = {
    200: {"description": "already recorded under this idempotency key"}
}


def profile_loyalty(
    session: Session, workspace_id: str, view: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The profile's JSON with ``loyalty: {balance, tier}`` added: an extension of
    ``identity.views.profile_view``, which knows nothing of loyalty (``None`` stays)."""
    if view is not None:
        try:
            view["loyalty"] = brief(session, workspace_id, view["id"])
        except ProfileNotFound:
            view["loyalty"] = {"balance": 0, "tier": None}
    return view


def loyalty_router(runtime: Runtime, admin_tokens: Mapping[str, str]) -> APIRouter:
    """``/v1/profiles/{id}/loyalty`` routes (admin token)."""
    router = APIRouter()
    db = runtime.db
    config = LoyaltyConfig.load(runtime.settings.loyalty_config)  # a bad file: one line

    @router.get("/v1/profiles/{profile_id}/loyalty")
    def get_loyalty(
        profile_id: str, request: Request, limit: int = 50, before: OptionalCursor = None
    ) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        if not 1 <= limit <= 500:
            raise Problem(400, "Invalid query", "limit must be 1..500", "limit")
        with _problems(), db.read() as session:
            return summary(
                session, workspace, profile_id, config=config, limit=limit, before=before
            )

    @router.post("/v1/profiles/{profile_id}/loyalty/entries", status_code=201, responses=_ALREADY)
    async def post_entry(profile_id: str, request: Request) -> JSONResponse:
        workspace = admin_workspace(request, admin_tokens)
        body = await json_object(request)
        kind = body.get("kind", "earn")
        if kind not in ENTRY_KINDS:
            raise Problem(
                400, "Invalid entry", f"kind must be one of {sorted(ENTRY_KINDS)}", "kind"
            )
        points, reason = body.get("points"), body.get("reason")
        if not isinstance(points, int) or isinstance(points, bool):
            raise Problem(400, "Invalid entry", "points must be a whole number", "points")
        if not isinstance(reason, str):
            raise Problem(400, "Invalid entry", "reason is required (text)", "reason")
        key = _key(body)
        change = ENTRY_KINDS[kind]

        def write() -> Posted:
            with _problems(), db.write() as session:
                return change(
                    session,
                    workspace,
                    profile_id,
                    points,
                    reason=reason,
                    source="api",
                    key=key,
                    config=config,
                )

        return _posted(await run_in_threadpool(write))

    @router.post(
        "/v1/profiles/{profile_id}/loyalty/redemptions", status_code=201, responses=_ALREADY
    )
    async def post_redemption(profile_id: str, request: Request) -> JSONResponse:
        workspace = admin_workspace(request, admin_tokens)
        body = await json_object(request)
        reward = body.get("reward")
        if not isinstance(reward, str) or not reward:
            raise Problem(400, "Invalid redemption", "reward is required (a reward id)", "reward")
        key = _key(body)

        def write() -> Posted:
            with _problems(), db.write() as session:
                return redeem_reward(
                    session, workspace, profile_id, reward, source="api", key=key, config=config
                )

        return _posted(await run_in_threadpool(write))

    return router


@contextmanager
def _problems() -> Iterator[None]:
    """Ledger errors as problem+json (raised out of ``db.write()``: nothing is written)."""
    try:
        yield
    except ProfileNotFound as exc:
        raise Problem(404, "Not Found", str(exc), "profile_id") from None
    except InsufficientPoints as exc:
        problem = Problem(409, "Insufficient points", str(exc), exc.field)
        problem.extra.update(balance=exc.balance, needed=exc.needed)
        raise problem from None
    except IdempotencyConflict as exc:
        raise Problem(409, "Idempotency conflict", str(exc), exc.field) from None
    except UnknownReward as exc:
        raise Problem(422, "Unknown reward", exc.message, exc.field) from None
    except ValidationError as exc:
        raise Problem(400, "Invalid entry", exc.message, exc.field) from None


def _key(body: Mapping[str, Any]) -> str | None:
    key = body.get("idempotency_key")
    if key is not None and not isinstance(key, str):
        raise Problem(400, "Invalid body", "idempotency_key must be text", "idempotency_key")
    return key


def _posted(posted: Posted) -> JSONResponse:
    """201 with the new entry, or 200 with the one its idempotency key already named."""
    content = {
        "entry": posted.entry,
        "created": posted.created,
        "balance": posted.balance,
        "tier": posted.tier,
    }
    return JSONResponse(content, status_code=201 if posted.created else 200)


__all__ = ["loyalty_router", "profile_loyalty"]
