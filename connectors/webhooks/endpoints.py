"""The webhook endpoint registry: where profile events go, which ones, signed with what.

Domain functions in the hub's style: a session and plain data in, plain data (dicts) out,
the caller owns the transaction. A view never carries a secret: the secret of a new
endpoint is returned once by :func:`create_endpoint`, a new one once by
:func:`rotate_secret`, and the sender asks :func:`active_secrets` for what to sign with.

Why the URL is checked on every create *and* update: an endpoint URL is where the hub
will send profile data, so one that resolves to a private, loopback or link-local address
(the hub's own network) is refused unless the operator allowed it
(``ECRM_WEBHOOK_ALLOW_PRIVATE=1``); :func:`connectors.webhooks.targets.check_url` decides.

The event-type filter is a list of exact types (:data:`EVENT_TYPES`, or ``custom.<name>``
for the events rules emit) and patterns (``*``, ``profile.*``); an empty list means every
event. :func:`endpoint_wants` applies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session
from uuid6 import uuid7

from connectors.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)
from connectors.webhooks.signing import new_secret
from connectors.webhooks.targets import check_url
from pipeline.errors import HubError, ValidationError

#: the event types the hub sends (rules add ``custom.<name>``)
EVENT_TYPES = (
    "profile.created",
    "profile.updated",
    "profile.merged",
    "profile.unmerged",
    "profile.erased",
    "loyalty.points_changed",
    "loyalty.tier_changed",
    "rule.fired",
    "message.sent",
    "message.failed",
)
#: what may stand before ``.*`` in a pattern
EVENT_PREFIXES = frozenset({"profile", "loyalty", "rule", "message", "custom"})
MAX_EVENTS = 50
MAX_EVENT_LENGTH = 120
MAX_DESCRIPTION = 500
#: the longest grace a rotated-out secret may keep (30 days)
MAX_GRACE_SECONDS = 30 * 86400


class EndpointNotFound(HubError):
    """No endpoint with this id in the workspace (HTTP 404, CLI exit 2)."""

    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"no webhook endpoint {endpoint_id!r}")
        self.endpoint_id = endpoint_id


def check_events(events: Sequence[str] | None, field: str = "events") -> list[str]:
    """The event-type filter, checked and deduplicated (order kept); empty means all.

    Raises :class:`ValidationError` naming ``events[i]`` for the first bad item.
    """
    if events is None:
        return []
    if isinstance(events, str) or not isinstance(events, Sequence):
        raise ValidationError(field, "must be a list of event types")
    if len(events) > MAX_EVENTS:
        raise ValidationError(field, f"at most {MAX_EVENTS} event types")
    checked: list[str] = []
    for index, item in enumerate(events):
        where = f"{field}[{index}]"
        if not isinstance(item, str):
            raise ValidationError(where, "must be an event type (text)")
        event = item.strip()
        reason = _event_problem(event)
        if reason:
            raise ValidationError(where, reason)
        if event not in checked:
            checked.append(event)
    return checked


def _event_problem(event: str) -> str | None:
    """Why ``event`` is not a valid filter item, or ``None``."""
    if not event or len(event) > MAX_EVENT_LENGTH:
        return f"an event type is 1 to {MAX_EVENT_LENGTH} characters"
    if event == "*" or event in EVENT_TYPES:
        return None
    if event.endswith(".*") and event[:-2] in EVENT_PREFIXES:
        return None
    if event.startswith("custom.") and len(event) > len("custom."):
        name = event[len("custom.") :]
        if name.isprintable() and not any(ch.isspace() for ch in name) and "*" not in name:
            return None
        return "a custom event name has no spaces, control characters or '*'"
    known = ", ".join(EVENT_TYPES)
    return f"unknown event type {event!r}: use one of {known}, custom.<name>, prefix.* or *"


def endpoint_wants(events_filter: Sequence[str], event_type: str) -> bool:
    """True when an endpoint with this filter is to receive ``event_type``."""
    if not events_filter:
        return True
    for pattern in events_filter:
        if pattern in ("*", event_type):
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def create_endpoint(
    session: Session,
    workspace_id: str,
    *,
    url: str,
    events: Sequence[str] | None = (),
    description: str = "",
    enabled: bool = True,
    allow_private: bool,
    now: datetime,
) -> tuple[dict[str, Any], str]:
    """Register an endpoint; returns its view and its signing secret (shown only now)."""
    checked_url = check_url(url, allow_private=allow_private)
    filter_ = check_events(events)
    text = _description(description)
    endpoint = WebhookEndpoint(
        id="whe_" + uuid7().hex,
        workspace_id=workspace_id,
        url=checked_url,
        description=text,
        events=filter_,
        enabled=bool(enabled),
        disabled_reason=None,
        created_at=now,
        updated_at=now,
    )
    session.add(endpoint)
    session.flush()  # the secret's foreign key needs the endpoint row first
    secret = _add_secret(session, workspace_id, endpoint.id, now)
    session.flush()
    return endpoint_view(session, endpoint, now=now), secret


def list_endpoints(session: Session, workspace_id: str, *, now: datetime) -> list[dict[str, Any]]:
    """The workspace's endpoints, oldest first (ids are time-ordered); no secrets."""
    rows = session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.workspace_id == workspace_id)
        .order_by(WebhookEndpoint.id)
    )
    return [endpoint_view(session, row, now=now) for row in rows]


def get_endpoint(
    session: Session, workspace_id: str, endpoint_id: str, *, now: datetime
) -> dict[str, Any] | None:
    """One endpoint's view, or ``None`` when the workspace has no such endpoint."""
    endpoint = _find(session, workspace_id, endpoint_id)
    return None if endpoint is None else endpoint_view(session, endpoint, now=now)


def update_endpoint(
    session: Session,
    workspace_id: str,
    endpoint_id: str,
    *,
    url: str | None = None,
    events: Sequence[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
    allow_private: bool,
    now: datetime,
) -> dict[str, Any]:
    """Change what is given (``None``: unchanged); a new URL is checked like a new one.

    Enabling an endpoint clears the reason the hub disabled it for; its open deliveries
    (kept while it was off) are then sent.
    """
    endpoint = _require(session, workspace_id, endpoint_id)
    if url is not None:
        endpoint.url = check_url(url, allow_private=allow_private)
    if events is not None:
        endpoint.events = check_events(events)
    if description is not None:
        endpoint.description = _description(description)
    if enabled is not None:
        endpoint.enabled = bool(enabled)
        if enabled:  # a fresh start: its failing streak is over too
            endpoint.disabled_reason = None
            endpoint.failing_since = None
    endpoint.updated_at = now
    session.flush()
    return endpoint_view(session, endpoint, now=now)


def delete_endpoint(session: Session, workspace_id: str, endpoint_id: str) -> None:
    """Remove an endpoint, its secrets and its deliveries with their log (raises
    :class:`EndpointNotFound`)."""
    endpoint = _require(session, workspace_id, endpoint_id)
    deliveries = select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint.id)
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(deliveries)))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
    session.execute(delete(WebhookSecret).where(WebhookSecret.endpoint_id == endpoint.id))
    session.delete(endpoint)
    session.flush()


def rotate_secret(
    session: Session,
    workspace_id: str,
    endpoint_id: str,
    *,
    grace_seconds: int = 86400,
    now: datetime,
) -> str:
    """A new signing secret (returned only now); the old ones expire after the grace.

    Meanwhile the sender signs with every active secret, so a receiver may switch to the
    new one at any moment of the grace period. A secret already expiring earlier keeps its
    earlier expiry; expired ones are deleted.
    """
    if isinstance(grace_seconds, bool) or not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise ValidationError("grace_seconds", f"must be 0 to {MAX_GRACE_SECONDS} seconds")
    endpoint = _require(session, workspace_id, endpoint_id)
    expiry = now + timedelta(seconds=grace_seconds)
    for old in session.scalars(
        select(WebhookSecret).where(WebhookSecret.endpoint_id == endpoint.id)
    ):
        if old.expires_at is None or old.expires_at > expiry:
            old.expires_at = expiry
    session.execute(
        delete(WebhookSecret).where(
            WebhookSecret.endpoint_id == endpoint.id, WebhookSecret.expires_at <= now
        )
    )
    secret = _add_secret(session, workspace_id, endpoint.id, now)
    endpoint.updated_at = now
    session.flush()
    return secret


def active_secrets(
    session: Session, workspace_id: str, endpoint_id: str, *, now: datetime
) -> list[str]:
    """The secrets to sign a delivery with, newest first (raises :class:`EndpointNotFound`)."""
    endpoint = _require(session, workspace_id, endpoint_id)
    rows = session.scalars(
        select(WebhookSecret.secret)
        .where(
            WebhookSecret.endpoint_id == endpoint.id,
            or_(WebhookSecret.expires_at.is_(None), WebhookSecret.expires_at > now),
        )
        .order_by(WebhookSecret.id.desc())
    )
    return list(rows)


def endpoint_view(session: Session, endpoint: WebhookEndpoint, *, now: datetime) -> dict[str, Any]:
    """An endpoint as JSON-ready data; its secrets only as dates, never their values."""
    secrets = session.execute(
        select(WebhookSecret.created_at, WebhookSecret.expires_at)
        .where(
            WebhookSecret.endpoint_id == endpoint.id,
            or_(WebhookSecret.expires_at.is_(None), WebhookSecret.expires_at > now),
        )
        .order_by(WebhookSecret.id.desc())
    ).all()
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "events": list(endpoint.events),
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": endpoint.failing_since.isoformat() if endpoint.failing_since else None,
        "created_at": endpoint.created_at.isoformat(),
        "updated_at": endpoint.updated_at.isoformat(),
        "secrets": [
            {
                "created_at": created.isoformat(),
                "expires_at": expires.isoformat() if expires else None,
            }
            for created, expires in secrets
        ],
    }


def _description(description: str) -> str:
    if not isinstance(description, str):
        raise ValidationError("description", "must be text")
    text = description.strip()
    if len(text) > MAX_DESCRIPTION:
        raise ValidationError("description", f"at most {MAX_DESCRIPTION} characters")
    return text


def _find(session: Session, workspace_id: str, endpoint_id: str) -> WebhookEndpoint | None:
    return session.scalars(
        select(WebhookEndpoint).where(
            WebhookEndpoint.workspace_id == workspace_id, WebhookEndpoint.id == endpoint_id
        )
    ).first()


def _require(session: Session, workspace_id: str, endpoint_id: str) -> WebhookEndpoint:
    endpoint = _find(session, workspace_id, endpoint_id)
    if endpoint is None:
        raise EndpointNotFound(endpoint_id)
    return endpoint


def _add_secret(session: Session, workspace_id: str, endpoint_id: str, now: datetime) -> str:
    """A new signing secret for the endpoint (valid until rotated away); its value."""
    secret = new_secret()
    session.add(
        WebhookSecret(
            workspace_id=workspace_id,
            endpoint_id=endpoint_id,
            secret=secret,
            created_at=now,
            expires_at=None,
        )
    )
    return secret


__all__ = [
    "EVENT_TYPES",
    "EndpointNotFound",
    "active_secrets",
    "check_events",
    "create_endpoint",
    "delete_endpoint",
    "endpoint_view",
    "endpoint_wants",
    "get_endpoint",
    "list_endpoints",
    "rotate_secret",
    "update_endpoint",
]
