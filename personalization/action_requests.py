"""Turning a request to send (API body, CLI options, a rule's action) into a :class:`NewAction`.

Why validate here and not at delivery: a request that can never be delivered (no such
profile, a reply to an event that is not an email, an SMS of 5,000 characters, a subject
with a line break, which would inject headers) is refused at once with the offending
field, instead of becoming a failed action minutes later.

Recipients: ``to`` (normalized like every identifier: email case-folded, phone E.164), or
the profile's address (its most recently seen email or phone identifier), or, for
``email.reply``, the sender of the email being answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from identity.models import Profile, ProfileIdentifier
from personalization.actions import CHANNEL_OF, EMAIL_REPLY, IDENTIFIER_OF, KINDS, NewAction
from pipeline.errors import ValidationError
from pipeline.events import get_event
from pipeline.identifiers import normalize_email, normalize_identifier

FIELDS = ("kind", "to", "profile_id", "subject", "text", "html", "in_reply_to", "idempotency_key")
MAX_SUBJECT = 500
MAX_EMAIL_TEXT = 200_000
MAX_HTML = 1_000_000
#: Twilio's limit for one message body (it splits it into segments)
MAX_SMS_TEXT = 1600
_MAX_REDIRECTS = 16


def parse_request(
    session: Session,
    workspace_id: str,
    body: Mapping[str, Any],
    *,
    default_region: str,
    origin: str = "api",
) -> NewAction:
    """Validate a request to send; raises :class:`ValidationError` naming the field."""
    if not isinstance(body, Mapping):
        raise ValidationError("body", "must be a JSON object")
    for name in body:
        if name not in FIELDS:
            raise ValidationError(str(name), f"unknown field; expected one of {', '.join(FIELDS)}")
    kind = _text(body, "kind", required=True)
    if kind not in KINDS:
        raise ValidationError("kind", f"must be one of {', '.join(KINDS)}")
    channel = CHANNEL_OF[kind]
    text = _text(body, "text", required=True, limit=MAX_SMS_TEXT if channel == "sms" else None)
    subject = _text(body, "subject", limit=MAX_SUBJECT)
    html = _text(body, "html", limit=MAX_HTML)
    in_reply_to = _text(body, "in_reply_to", limit=255)
    key = _text(body, "idempotency_key", limit=255)
    profile_id = _text(body, "profile_id", limit=40)
    to = _text(body, "to", limit=256)
    if channel == "email" and len(text or "") > MAX_EMAIL_TEXT:
        raise ValidationError("text", f"at most {MAX_EMAIL_TEXT} characters")
    if subject and ("\r" in subject or "\n" in subject):
        raise ValidationError("subject", "must be one line")
    if channel == "sms":
        for name, value in (("subject", subject), ("html", html), ("in_reply_to", in_reply_to)):
            if value is not None:
                raise ValidationError(name, "not used by sms.send")
    if kind == EMAIL_REPLY:
        if in_reply_to is None:
            raise ValidationError("in_reply_to", "email.reply needs the message_id it answers")
    elif in_reply_to is not None:
        raise ValidationError("in_reply_to", f"only for {EMAIL_REPLY}")
    if kind == "email.send" and not subject:
        raise ValidationError("subject", "email.send needs a subject")
    identifier = IDENTIFIER_OF[channel]
    recipient = None
    if to is not None:
        try:
            recipient = normalize_identifier(identifier, to, default_region)
        except ValueError as exc:
            raise ValidationError("to", str(exc)) from None
    if in_reply_to is not None:
        recipient, in_reply_to = _reply_target(session, workspace_id, in_reply_to, recipient)
    if profile_id is not None:
        profile_id = _survivor(session, workspace_id, profile_id)
        if recipient is None:
            recipient = _address_of(session, workspace_id, profile_id, identifier)
    if recipient is None:
        raise ValidationError("to", f"{kind} needs 'to' or 'profile_id'")
    payload: dict[str, Any] = {"text": text}
    if channel == "email":
        payload.update(subject=subject, html=html, in_reply_to=in_reply_to)
    return NewAction(
        kind=kind,
        recipient=recipient,
        payload={k: v for k, v in payload.items() if v is not None},
        profile_id=profile_id,
        idempotency_key=key,
        origin=origin,
    )


def _text(
    body: Mapping[str, Any], name: str, *, required: bool = False, limit: int | None = None
) -> str | None:
    value = body.get(name)
    if value is None or (isinstance(value, str) and not value.strip() and not required):
        if required:
            raise ValidationError(name, "is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(name, f"must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise ValidationError(name, "must not be empty")
    if limit is not None and len(value) > limit:
        raise ValidationError(name, f"at most {limit} characters")
    return value if name in ("text", "html") else value.strip()


def _reply_target(
    session: Session, workspace_id: str, message_id: str, to: str | None
) -> tuple[str, str]:
    """(recipient, event message_id) of the email a reply answers.

    ``message_id`` is the event's (``email:abc@host``); the email's own Message-ID
    (``<abc@host>``) is accepted too. The answer goes to the email's ``Reply-To`` when it
    has one, else to its sender.
    """
    event = get_event(session, workspace_id, message_id)
    if event is None and not message_id.startswith("email:"):
        event = get_event(session, workspace_id, "email:" + message_id.strip().strip("<>"))
    if event is None:
        raise ValidationError("in_reply_to", f"no event {message_id!r} in the log")
    if event.event.channel != "email":
        raise ValidationError("in_reply_to", f"{message_id!r} is not an email event")
    if to is not None:
        return to, event.event.message_id
    reply_to = event.event.properties.get("reply_to")
    candidates = [
        *(reply_to if isinstance(reply_to, list) else []),
        event.event.identifiers.get("email"),
    ]
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            try:
                return normalize_email(candidate), event.event.message_id
            except ValueError:
                continue
    raise ValidationError("in_reply_to", f"{message_id!r} has no sender address; give 'to'")


def _survivor(session: Session, workspace_id: str, profile_id: str) -> str:
    """The profile id itself, or the one it was merged into."""
    for _ in range(_MAX_REDIRECTS):
        merged_into = session.execute(
            select(Profile.merged_into).where(
                Profile.workspace_id == workspace_id, Profile.id == profile_id
            )
        ).first()
        if merged_into is None:
            raise ValidationError("profile_id", f"no profile {profile_id!r}")
        if merged_into[0] is None:
            return profile_id
        profile_id = merged_into[0]
    return profile_id


def _address_of(session: Session, workspace_id: str, profile_id: str, kind: str) -> str:
    """The profile's most recently seen identifier of ``kind``."""
    value = session.scalars(
        select(ProfileIdentifier.value)
        .where(
            ProfileIdentifier.workspace_id == workspace_id,
            ProfileIdentifier.profile_id == profile_id,
            ProfileIdentifier.kind == kind,
        )
        .order_by(ProfileIdentifier.last_seen_at.desc())
        .limit(1)
    ).first()
    if value is None:
        raise ValidationError("profile_id", f"profile {profile_id} has no {kind} identifier")
    return value
