"""GDPR routes: ``DELETE /v1/profiles/{id}`` erases a person, ``GET …/export`` exports one.

Why the wiring lives here: erasure and export belong to identity (:mod:`identity.erasure`,
:mod:`identity.export`), but personalization (consent, actions) and the email connector
(refused mail) hold personal data too, and identity may not import them. This module hands
their parts to identity's extension points; the CLI (:mod:`workers.privacy_cli`) calls the
same :func:`erase` and :func:`export_stream`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from connectors.email.privacy import erase_refused_mail, refused_mail
from connectors.webhooks.privacy import erase_deliveries, export_deliveries
from identity.erasure import Eraser, ErasureResult, ProfileNotFound, Scrubber, erase_profile
from identity.export import Person, Section, consistent_read, export_chunks, find_person
from identity.tombstones import tombstone_key
from personalization.labels.privacy import erase_labels, export_labels
from personalization.loyalty.privacy import erase_loyalty, export_loyalty
from personalization.privacy import erase_outbound, export_outbound
from pipeline import ConflictError, utcnow
from workers.auth import admin_workspace
from workers.problems import Problem
from workers.runtime import Runtime

_ATTEMPTS = 3


def _erase_mail(session: Session, person: Person, scrub: Scrubber) -> dict[str, int]:
    addresses = scrub.originals("email")
    return {"mail_failures": erase_refused_mail(session, person.workspace_id, addresses)}


def _erase_webhooks(session: Session, person: Person, scrub: Scrubber) -> dict[str, int]:
    return erase_deliveries(session, person.workspace_id, person.profile_ids, now=utcnow())


def _webhooks_section(session: Session, person: Person) -> dict[str, Any]:
    return {
        "webhook_deliveries": export_deliveries(session, person.workspace_id, person.profile_ids)
    }


def _mail_section(session: Session, person: Person) -> dict[str, Any]:
    addresses = [value for kind, value in person.identifiers if kind == "email"]
    return {"refused_mail": refused_mail(session, person.workspace_id, addresses)}


#: what other packages hold about a person, erased and exported with identity's rows
#: (labels first: it notes rule-set trait values, which the later ones scrub too)
ERASERS: tuple[Eraser, ...] = (
    erase_labels,
    erase_outbound,
    _erase_mail,
    erase_loyalty,
    _erase_webhooks,
)
SECTIONS: tuple[Section, ...] = (
    export_outbound,
    _mail_section,
    export_loyalty,
    export_labels,
    _webhooks_section,
)


def erase(
    runtime: Runtime,
    workspace_id: str,
    profile_id: str,
    *,
    requested_by: str,
    reason: str | None = None,
) -> dict[str, Any]:
    """Erase a person (raises :class:`ProfileNotFound`); the summary of what was erased.

    On PostgreSQL a worker that read the person's identifiers just before the erasure
    committed may still count one more event in the profile once it gets the lock; a
    second pass (erasure is idempotent) takes its lock after that worker and erases it.
    """
    first = _erase_once(runtime, workspace_id, profile_id, requested_by, reason)
    view = first.view()
    if runtime.db.dialect == "postgresql":
        again = _erase_once(runtime, workspace_id, first.person.profile_id, requested_by, reason)
        for name, count in again.counts.items():  # part of this erasure
            view["counts"][name] = view["counts"].get(name, 0) + count
    return view


def _erase_once(
    runtime: Runtime, workspace_id: str, profile_id: str, requested_by: str, reason: str | None
) -> ErasureResult:
    """One erasure transaction, again when the profile was merged meanwhile."""
    key = tombstone_key(runtime.settings)
    for attempt in range(_ATTEMPTS):
        try:
            with runtime.db.write() as session:
                return erase_profile(
                    session,
                    workspace_id,
                    profile_id,
                    key=key,
                    config=runtime.identity,
                    requested_by=requested_by,
                    reason=reason,
                    also=ERASERS,
                )
        except ConflictError:  # merged meanwhile: the survivor is found again
            if attempt == _ATTEMPTS - 1:
                raise
    raise ConflictError("the profile kept changing; try again")


def export_stream(runtime: Runtime, workspace_id: str, profile_id: str) -> Iterator[bytes] | None:
    """The export of a person as JSON chunks (None for an unknown profile).

    The chunks are read in one read transaction (one snapshot) opened when the first is
    asked for, so the caller can answer 404 before it starts streaming.
    """
    with runtime.db.read() as session:
        if find_person(session, workspace_id, profile_id) is None:
            return None

    def chunks() -> Iterator[bytes]:
        with runtime.db.read() as session:
            consistent_read(session)
            person = find_person(session, workspace_id, profile_id)
            if person is None:  # gone in between (an unmerge rebuilt it): try again
                raise ProfileNotFound("profile_id", f"no profile {profile_id!r}")
            yield from export_chunks(session, person, SECTIONS)

    return chunks()


def privacy_router(runtime: Runtime, admin_tokens: Mapping[str, str]) -> APIRouter:
    """Erasure and export of a profile (admin token)."""
    router = APIRouter()

    @router.delete("/v1/profiles/{profile_id}")
    def delete_profile(profile_id: str, request: Request, reason: str | None = None) -> Any:
        workspace = admin_workspace(request, admin_tokens)
        if reason is not None and len(reason) > 500:
            raise Problem(400, "Invalid query", "reason: at most 500 characters", "reason")
        try:
            return erase(runtime, workspace, profile_id, requested_by="api", reason=reason)
        except ProfileNotFound:
            raise Problem(404, "Not Found", f"no profile {profile_id!r}", "profile_id") from None

    @router.get("/v1/profiles/{profile_id}/export")
    def get_export(profile_id: str, request: Request) -> StreamingResponse:
        workspace = admin_workspace(request, admin_tokens)
        chunks = export_stream(runtime, workspace, profile_id)
        if chunks is None:
            raise Problem(404, "Not Found", f"no profile {profile_id!r}", "profile_id")
        return StreamingResponse(
            chunks,
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{profile_id}.json"'},
        )

    return router


__all__ = ["ERASERS", "SECTIONS", "erase", "export_stream", "privacy_router"]
