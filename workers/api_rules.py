"""Admin routes of the marketing rules: the rule set, one rule's versions, the vocabulary.

``PUT /v1/rules`` takes the workspace's *whole* rule set, as JSON (``{"rules": [...]}``) or
as YAML (``Content-Type: application/yaml``, the same text as a rule file), and applies it
atomically; a rule left out is disabled. An invalid set changes nothing and is answered
422 ``application/problem+json``: ``field`` and ``detail`` name the first problem,
``errors`` lists every one (with its ``line`` for YAML).

``GET /v1/rules/{id}/firings?after=&limit=`` pages through a rule's firings, oldest first:
the trace of its conditions and each action's outcome.

``POST /v1/rules/test?since=30d&until=&sample=5`` takes a rule set like ``PUT`` and answers
what it would have done over that period of the event log, writing nothing
(:mod:`personalization.rules.rehearse`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Request

from personalization.loyalty import LoyaltyConfig
from personalization.rules import (
    RuleSet,
    RuleSetInvalid,
    apply_rule_set,
    check_rule_set,
    export_vocabulary,
    get_rule,
    list_rules,
    parse_yaml,
)
from personalization.rules.firings import list_firings
from personalization.rules.rehearse import rehearse
from pipeline import ValidationError
from workers.auth import admin_workspace
from workers.params import OptionalCursor
from workers.problems import Problem
from workers.rules_period import period_start
from workers.runtime import Runtime

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def rules_router(runtime: Runtime, admin_tokens: Mapping[str, str]) -> APIRouter:
    """``/v1/rules`` (admin token)."""
    router = APIRouter()
    db, limit = runtime.db, runtime.settings.max_request_bytes

    @router.get("/v1/rules/vocabulary")
    def get_vocabulary(request: Request) -> dict[str, Any]:
        admin_workspace(request, admin_tokens)
        return export_vocabulary()

    @router.get("/v1/rules")
    def get_rules(request: Request) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        with db.read() as session:
            return {"rules": list_rules(session, workspace)}

    async def rule_set_of(request: Request) -> RuleSet:
        """The body's rule set (YAML or JSON, as ``PUT /v1/rules`` takes it), checked."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise Problem(413, "Payload Too Large", f"body over {limit} bytes", "body")
        body = await request.body()
        if len(body) > limit:
            raise Problem(413, "Payload Too Large", f"body over {limit} bytes", "body")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if media in YAML_TYPES:
                return parse_yaml(_text(body), source="body")
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise Problem(
                    400, "Malformed JSON", f"body is not valid JSON: {exc}", "body"
                ) from None
            return check_rule_set(data)
        except RuleSetInvalid as exc:
            raise _invalid(exc) from None

    @router.put("/v1/rules")
    async def put_rules(request: Request) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        rule_set = await rule_set_of(request)
        with db.write() as session:
            try:
                result = apply_rule_set(session, workspace, rule_set, source="api")
            except ValidationError as exc:
                raise Problem(422, "Invalid rules", exc.message, exc.field) from None
            rules = list_rules(session, workspace)
        return {**result.view(), "rules": rules}

    @router.post("/v1/rules/test")
    async def test_rules(
        request: Request, since: str = "30d", until: str | None = None, sample: int = 5
    ) -> dict[str, Any]:
        """``ecrm rules test`` over HTTP: the body's rules rehearsed, nothing written."""
        workspace = admin_workspace(request, admin_tokens)
        rule_set = await rule_set_of(request)
        if not 0 <= sample <= 100:
            raise Problem(422, "Invalid query", "sample must be between 0 and 100", "sample")
        try:
            start, end = period_start(since, "since"), period_start(until, "until")
        except ValueError as exc:
            field = str(exc).split(":", 1)[0]
            raise Problem(422, "Invalid query", str(exc), field) from None
        settings = runtime.settings
        with db.read() as session:
            report = rehearse(
                session,
                workspace,
                [rule for rule in rule_set.rules if rule.enabled],
                since=start,
                until=end,
                sample=sample,
                loyalty_config=LoyaltyConfig.load(settings.loyalty_config),
                default_region=settings.default_region,
                channel_caps=dict(settings.channel_caps),
            )
        return report.view()

    @router.get("/v1/rules/{rule_id}")
    def get_one(rule_id: str, request: Request) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        with db.read() as session:
            view = get_rule(session, workspace, rule_id)
        if view is None:
            raise Problem(404, "Not Found", f"no rule {rule_id!r}", "rule_id")
        return view

    @router.get("/v1/rules/{rule_id}/firings")
    def get_firings(
        rule_id: str, request: Request, after: OptionalCursor = None, limit: int = 50
    ) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        if not 1 <= limit <= 500:
            raise Problem(422, "Invalid query", "limit must be between 1 and 500", "limit")
        with db.read() as session:
            if get_rule(session, workspace, rule_id) is None:
                raise Problem(404, "Not Found", f"no rule {rule_id!r}", "rule_id")
            firings = list_firings(session, workspace, rule_id, after=after, limit=limit)
        more = len(firings) == limit
        return {"firings": firings, "next_after": firings[-1]["id"] if more else None}

    return router


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(400, "Malformed YAML", "body is not UTF-8 text", "body") from None


def _invalid(exc: RuleSetInvalid) -> Problem:
    first = exc.issues[0]
    where = f" (line {first.line})" if first.line else ""
    problem = Problem(422, "Invalid rules", f"{first.message}{where}", first.path)
    problem.extra["errors"] = [issue.view() for issue in exc.issues]
    return problem


__all__ = ["rules_router"]
