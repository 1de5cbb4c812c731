"""HTTP routes of profile labels, and the labels in the profile's JSON.

``GET /v1/profiles/{id}/labels`` shows the tags, segments and rule-set traits (with who
set each); ``PUT``/``DELETE /v1/profiles/{id}/tags/{tag}`` (and ``…/segments/{segment}``)
add or remove one by hand, with source ``api``. An ``Idempotency-Key`` header makes a
retried request write nothing twice; without one every request is its own change. An id
merged away answers for the surviving profile.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from personalization.labels import (
    LabelChange,
    UnknownProfile,
    apply_label_changes,
    labels_of,
    labels_of_profile,
    survivor_of,
)
from personalization.labels.names import ADD, REMOVE, SEGMENT, TAG
from pipeline import ValidationError, utcnow
from workers.auth import admin_workspace
from workers.problems import Problem
from workers.runtime import Runtime

MAX_IDEMPOTENCY_KEY = 200


def profile_labels(
    session: Session, workspace_id: str, view: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The profile's JSON with ``tags``, ``segments`` and ``label_traits`` added, and the
    rule-set traits merged into ``traits`` (a rule-set value wins over an event's): an
    extension of ``identity.views.profile_view``, which knows nothing of labels.

    ``label_traits`` names who set each trait that came from labels (``rule:{id}@{v}``,
    ``api``); every other trait is the event-derived one. ``None`` stays ``None``.
    """
    if view is None:
        return None
    labels = labels_of(session, workspace_id, [view["id"]])[view["id"]]
    view["traits"] = {**view["traits"], **labels.traits}
    view["tags"] = list(labels.tags)
    view["segments"] = list(labels.segments)
    view["label_traits"] = dict(labels.trait_sources)
    return view


def labels_router(runtime: Runtime, admin_tokens: Mapping[str, str]) -> APIRouter:
    """``/v1/profiles/{id}/labels``, ``…/tags/{tag}`` and ``…/segments/{segment}`` (admin)."""
    router = APIRouter()
    db = runtime.db

    @router.get("/v1/profiles/{profile_id}/labels")
    def get_labels(profile_id: str, request: Request) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        with db.read() as session:
            try:
                survivor = survivor_of(session, workspace, profile_id)
            except UnknownProfile:
                raise Problem(
                    404, "Not Found", f"no profile {profile_id!r}", "profile_id"
                ) from None
            return _view(session, workspace, survivor, profile_id)

    def change(request: Request, profile_id: str, kind: str, name: str, op: str) -> Any:
        """Add or remove one tag or segment (sync: FastAPI runs it in its thread pool)."""
        workspace = admin_workspace(request, admin_tokens)
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
            raise Problem(
                400,
                "Invalid header",
                f"Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY} characters",
                "idempotency_key",
            )
        with db.write() as session:
            try:
                survivor = survivor_of(session, workspace, profile_id)
                [outcome] = apply_label_changes(
                    session,
                    workspace,
                    [
                        LabelChange(
                            profile_id=survivor,
                            kind=kind,
                            name=name,
                            op=op,
                            source="api",
                            key=f"api:{key}" if key else f"api:{uuid.uuid4()}",
                        )
                    ],
                    now=utcnow(),
                )
            except UnknownProfile:
                raise Problem(
                    404, "Not Found", f"no profile {profile_id!r}", "profile_id"
                ) from None
            except ValidationError as exc:
                field = exc.field.rpartition(".")[2]
                raise Problem(400, f"Invalid {kind}", exc.message, field) from None
            return {"outcome": outcome, **_view(session, workspace, survivor, profile_id)}

    @router.put("/v1/profiles/{profile_id}/tags/{tag}")
    def put_tag(profile_id: str, tag: str, request: Request) -> Any:
        return change(request, profile_id, TAG, tag, ADD)

    @router.delete("/v1/profiles/{profile_id}/tags/{tag}")
    def delete_tag(profile_id: str, tag: str, request: Request) -> Any:
        return change(request, profile_id, TAG, tag, REMOVE)

    @router.put("/v1/profiles/{profile_id}/segments/{segment}")
    def put_segment(profile_id: str, segment: str, request: Request) -> Any:
        return change(request, profile_id, SEGMENT, segment, ADD)

    @router.delete("/v1/profiles/{profile_id}/segments/{segment}")
    def delete_segment(profile_id: str, segment: str, request: Request) -> Any:
        return change(request, profile_id, SEGMENT, segment, REMOVE)

    return router


def _view(session: Session, workspace: str, survivor: str, requested: str) -> dict[str, Any]:
    view: dict[str, Any] = {
        "profile_id": survivor,
        **labels_of_profile(session, workspace, survivor).view(),
    }
    if requested != survivor:
        view["requested_id"] = requested
    return view


__all__ = ["labels_router", "profile_labels"]
