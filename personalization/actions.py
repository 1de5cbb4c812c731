"""The action outbox: messages the hub has decided to send, and where each one stands.

Why an outbox table: whoever decides to send (an operator through the API or CLI, a rule
while a batch is processed) only inserts a row, in its own transaction; a delivery worker
sends it later. A crash never loses an action (the row is there) and an idempotency key
(unique per workspace) means deciding twice never sends twice: rules use
``rule:{id}:{event}`` so a retried batch finds its action already queued.

Life of an action::

    queued ──claim──► sending ──► sent
      ▲   │               │
      │   │               ├──► queued (transient error: due again after a backoff)
      │   │               └──► failed (permanent error, or MAX_ATTEMPTS used up)
      │   └──(consent says no)──► suppressed
      └──────── retry (operator) ◄── failed

``lease_until`` is a lease in both live states: while ``queued`` it means "a delivery task
for it is on the broker" (the relay does not publish it again before then; if the broker
lost it, the relay does); while ``sending`` it is how long the sender may take (an action
still ``sending`` after it was lost with its worker, and is sent again: delivery is at
least once, which is what SMTP and Twilio offer anyway).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column
from uuid6 import uuid7

from identity.changes import record_change
from pipeline.db import Base, JsonDoc, UTCDateTime, dialect_insert
from pipeline.envelope import utcnow
from pipeline.errors import HubError, ValidationError

EMAIL_SEND: Final = "email.send"
EMAIL_REPLY: Final = "email.reply"
SMS_SEND: Final = "sms.send"
KINDS = (EMAIL_SEND, EMAIL_REPLY, SMS_SEND)
#: the consent channel and the identifier kind of each action kind's recipient
CHANNEL_OF = {EMAIL_SEND: "email", EMAIL_REPLY: "email", SMS_SEND: "sms"}
IDENTIFIER_OF = {"email": "email", "sms": "phone"}

QUEUED: Final = "queued"
SENDING: Final = "sending"
SENT: Final = "sent"
FAILED: Final = "failed"
SUPPRESSED: Final = "suppressed"
STATUSES = (QUEUED, SENDING, SENT, FAILED, SUPPRESSED)
#: change-feed types of a profile's message reaching its end
MESSAGE_SENT: Final = "message.sent"
MESSAGE_FAILED: Final = "message.failed"

#: sending attempts before a transiently failing action is given up as ``failed``
MAX_ATTEMPTS = 8
#: the first retry waits this long; each further one twice as long, up to MAX_BACKOFF
BASE_BACKOFF_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 3600.0


class Action(Base):
    """One message to deliver (the delivery outbox row)."""

    __tablename__ = "actions"
    __table_args__ = (
        UniqueConstraint("workspace_id", "idempotency_key", name="uq_actions_idempotency"),
        Index("ix_actions_status_due", "status", "due_at"),
        Index("ix_actions_workspace_status", "workspace_id", "status", "id"),
        Index("ix_actions_profile", "workspace_id", "profile_id", "created_at"),
    )

    #: ``act_`` + UUIDv7: ids sort by creation time
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    kind: Mapped[str] = mapped_column(String(32))
    profile_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    #: normalized address: a case-folded email or an E.164 phone number
    recipient: Mapped[str] = mapped_column(String(256))
    #: subject, text, html, in_reply_to: what the message says
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    #: who asked: ``api``, ``cli``, ``rule:{id}@{version}``
    origin: Mapped[str] = mapped_column(String(120))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the SMTP Message-ID or the Twilio message SID
    provider_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


ACTIONS = cast(Table, Action.__table__)


class IdempotencyConflict(HubError):
    """The idempotency key already names a different action."""

    def __init__(self, key: str, action_id: str) -> None:
        super().__init__(f"idempotency_key {key!r} already names a different action ({action_id})")
        self.key, self.action_id = key, action_id


class NotRetryable(HubError):
    """Only ``failed`` actions can be sent again."""


@dataclass(frozen=True)
class NewAction:
    """A validated request to send something (see :mod:`personalization.action_requests`)."""

    kind: str
    recipient: str
    payload: Mapping[str, Any]
    profile_id: str | None = None
    idempotency_key: str | None = None
    origin: str = "api"


@dataclass(frozen=True)
class Enqueued:
    """The action a request named, and whether this call created it."""

    action: Action
    created: bool


def new_action_id() -> str:
    return "act_" + uuid7().hex


def backoff_seconds(attempts: int, first: float = BASE_BACKOFF_SECONDS) -> float:
    """The wait after the ``attempts``-th failed attempt: 30 s, 60 s, 120 s … at most 1 h
    (``first``: the first wait, ``ECRM_ACTION_RETRY_SECONDS``)."""
    return float(min(first * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS))


def enqueue(
    session: Session,
    workspace_id: str,
    new: NewAction,
    *,
    now: datetime | None = None,
    publish_lease_seconds: float | None = None,
) -> Enqueued:
    """Queue an action unless its idempotency key is taken (then return that action).

    ``publish_lease_seconds``: the caller will publish the delivery task itself right
    after commit, so the relay leaves the action alone that long.
    """
    if new.kind not in KINDS:
        raise ValidationError("kind", f"must be one of {', '.join(KINDS)}")
    now = now or utcnow()
    action_id = new_action_id()
    key = new.idempotency_key or action_id
    lease = now + timedelta(seconds=publish_lease_seconds) if publish_lease_seconds else None
    row = _row(workspace_id, action_id, new, key, due=now, lease=lease, now=now)
    inserted = session.execute(
        dialect_insert(session)(ACTIONS)
        .values(row)
        .on_conflict_do_nothing(index_elements=["workspace_id", "idempotency_key"])
        .returning(ACTIONS.c.id)
    ).scalar()
    action = session.scalars(
        select(Action).where(Action.workspace_id == workspace_id, Action.idempotency_key == key)
    ).one()
    if inserted is None and (action.kind, action.recipient, action.payload) != (
        new.kind,
        new.recipient,
        dict(new.payload),
    ):
        raise IdempotencyConflict(key, action.id)
    return Enqueued(action, created=inserted is not None)


def _row(
    workspace_id: str,
    action_id: str,
    new: NewAction,
    key: str,
    *,
    due: datetime,
    lease: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    """The outbox row of a newly queued action."""
    return {
        "id": action_id,
        "workspace_id": workspace_id,
        "kind": new.kind,
        "profile_id": new.profile_id,
        "recipient": new.recipient,
        "payload": dict(new.payload),
        "idempotency_key": key,
        "origin": new.origin,
        "status": QUEUED,
        "attempts": 0,
        "due_at": due,
        "lease_until": lease,
        "created_at": now,
        "updated_at": now,
    }


def enqueue_many(
    session: Session,
    workspace_id: str,
    items: Sequence[tuple[str, NewAction, datetime]],
    *,
    now: datetime,
) -> set[str]:
    """Queue many actions ``(id, request, due)`` in one statement; the ids written.

    Why: a batch's rules may queue hundreds of messages; one ``executemany`` replaces a
    statement pair per message. Requests whose idempotency key is already taken are left
    out (the caller decided before: a retried batch), as :func:`enqueue` would return the
    action already there. A ``due`` later than ``now`` holds the message until then (quiet
    hours): the relay publishes only what is due.
    """
    for _, new, _ in items:
        if new.kind not in KINDS:
            raise ValidationError("kind", f"must be one of {', '.join(KINDS)}")
    keys = [new.idempotency_key or action_id for action_id, new, _ in items]
    taken: set[str] = set()
    for start in range(0, len(keys), 400):
        taken.update(
            session.scalars(
                select(Action.idempotency_key).where(
                    Action.workspace_id == workspace_id,
                    Action.idempotency_key.in_(keys[start : start + 400]),
                )
            )
        )
    rows = [
        _row(workspace_id, action_id, new, key, due=max(due, now), lease=None, now=now)
        for (action_id, new, due), key in zip(items, keys, strict=True)
        if key not in taken
    ]
    if rows:
        session.execute(ACTIONS.insert(), rows)
    return {str(row["id"]) for row in rows}


def get_action(session: Session, workspace_id: str, action_id: str) -> Action | None:
    return session.scalars(
        select(Action).where(Action.workspace_id == workspace_id, Action.id == action_id)
    ).first()


def list_actions(
    session: Session,
    workspace_id: str,
    *,
    status: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> list[Action]:
    """Actions in creation order (ids are time-ordered), optionally of one status."""
    query = select(Action).where(Action.workspace_id == workspace_id)
    if status is not None:
        query = query.where(Action.status == status)
    if after:
        query = query.where(Action.id > after)
    return list(session.scalars(query.order_by(Action.id).limit(limit)))


def anything_due(session: Session, *, now: datetime | None = None) -> bool:
    """Is any action due for publishing or abandoned while sending? (one index lookup each)"""
    now = now or utcnow()
    expired = or_(Action.lease_until.is_(None), Action.lease_until <= now)
    due = select(Action.id).where(Action.status == QUEUED, Action.due_at <= now, expired)
    stale = select(Action.id).where(Action.status == SENDING, Action.lease_until <= now)
    return any(session.execute(query.limit(1)).first() for query in (due, stale))


def due_for_publishing(
    session: Session, *, lease_seconds: float, now: datetime | None = None, limit: int = 500
) -> list[str]:
    """Ids of queued actions whose delivery task should be (re)published now.

    Each is leased for ``lease_seconds`` (the task is on its way); one the broker loses is
    due again when its lease ends. PostgreSQL skips rows another relay has locked.
    """
    now = now or utcnow()
    query = (
        select(Action.id)
        .where(
            Action.status == QUEUED,
            Action.due_at <= now,
            or_(Action.lease_until.is_(None), Action.lease_until <= now),
        )
        .order_by(Action.due_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(session.scalars(query))
    if ids:
        session.execute(
            update(Action)
            .where(Action.id.in_(ids))
            .values(lease_until=now + timedelta(seconds=lease_seconds)),
            execution_options={"synchronize_session": False},
        )
    return ids


def recover_abandoned(session: Session, *, now: datetime | None = None) -> int:
    """Actions left ``sending`` past their lease (their worker died): due again, or failed.

    The message may or may not have gone out; sending again is the at-least-once choice.
    """
    now = now or utcnow()
    stale = list(
        session.scalars(
            select(Action).where(Action.status == SENDING, Action.lease_until <= now).limit(500)
        )
    )
    for action in stale:
        error = "delivery interrupted (worker lost while sending)"
        if action.attempts >= MAX_ATTEMPTS:
            _finish(action, FAILED, now, error=f"gave up after {action.attempts} attempts: {error}")
        else:
            action.status, action.due_at, action.lease_until = QUEUED, now, None
            action.last_error, action.updated_at = error, now
    return len(stale)


def claim(
    session: Session, action_id: str, *, lease_seconds: float, now: datetime | None = None
) -> Action | None:
    """Take a due queued action for sending (``sending``, one more attempt), else ``None``.

    The status guard in the ``UPDATE`` makes concurrent claims of one action (a task
    published twice) safe: exactly one of them matches.
    """
    now = now or utcnow()
    claimed = session.execute(
        update(Action)
        .where(Action.id == action_id, Action.status == QUEUED, Action.due_at <= now)
        .values(
            status=SENDING,
            attempts=Action.attempts + 1,
            lease_until=now + timedelta(seconds=lease_seconds),
            updated_at=now,
        )
        .returning(Action.id),
        execution_options={"synchronize_session": False},
    ).scalar()
    if claimed is None:
        return None
    return session.get(Action, action_id, populate_existing=True)


def mark_sent(
    session: Session, action: Action, provider_id: str | None, *, now: datetime | None = None
) -> None:
    _finish(action, SENT, now or utcnow(), provider_id=provider_id)
    _announce(session, action, MESSAGE_SENT)


def mark_failed(
    session: Session, action: Action, error: str, *, now: datetime | None = None
) -> None:
    _finish(action, FAILED, now or utcnow(), error=error)
    _announce(session, action, MESSAGE_FAILED)


def mark_suppressed(
    session: Session, action: Action, reason: str, *, now: datetime | None = None
) -> None:
    _finish(action, SUPPRESSED, now or utcnow(), error=reason)


def record_transient(
    session: Session,
    action: Action,
    error: str,
    *,
    now: datetime | None = None,
    first_backoff: float = BASE_BACKOFF_SECONDS,
) -> str:
    """A failed attempt worth retrying: due again after the backoff, or ``failed`` when the
    attempts are used up. Returns the new status."""
    now = now or utcnow()
    if action.attempts >= MAX_ATTEMPTS:
        _finish(action, FAILED, now, error=f"gave up after {action.attempts} attempts: {error}")
        _announce(session, action, MESSAGE_FAILED)
        return FAILED
    action.status = QUEUED
    action.due_at = now + timedelta(seconds=backoff_seconds(action.attempts, first_backoff))
    action.lease_until = None
    action.last_error = error[:2000]
    action.updated_at = now
    return QUEUED


def retry(
    session: Session, workspace_id: str, action_id: str, *, now: datetime | None = None
) -> Action:
    """Send a ``failed`` action again, with a fresh budget of attempts."""
    now = now or utcnow()
    action = get_action(session, workspace_id, action_id)
    if action is None:
        raise ValidationError("id", f"no action {action_id!r}")
    if action.status != FAILED:
        raise NotRetryable(f"action {action_id} is {action.status}; only failed ones are retried")
    action.status, action.attempts, action.due_at = QUEUED, 0, now
    action.lease_until, action.updated_at = None, now
    return action


def _finish(
    action: Action,
    status: str,
    now: datetime,
    *,
    error: str | None = None,
    provider_id: str | None = None,
) -> None:
    action.status = status
    action.lease_until = None
    action.updated_at = now
    if error is not None:
        action.last_error = error[:2000]
    if status == SENT:
        action.provider_id = provider_id
        action.sent_at = now


def _announce(session: Session, action: Action, type_: str) -> None:
    """``message.sent``/``message.failed`` on the change feed, for a profile's message.

    Written with the status, in its transaction. The text and the recipient stay out:
    the profile's state is what subscribers keep, the message is the hub's business.
    """
    if action.profile_id is None:  # sent to an address no profile holds (yet)
        return
    data = {
        "action_id": action.id,
        "kind": action.kind,
        "channel": CHANNEL_OF[action.kind],
        "origin": action.origin,
        "attempts": action.attempts,
        "provider_id": action.provider_id,
        "error": action.last_error if type_ == MESSAGE_FAILED else None,
        "at": action.updated_at.isoformat(),
    }
    record_change(session, action.workspace_id, type_, action.profile_id, data)


def action_view(action: Action) -> dict[str, Any]:
    """An action as the API and the CLI show it (the payload's text is left out)."""
    payload = action.payload
    return {
        "id": action.id,
        "kind": action.kind,
        "status": action.status,
        "to": action.recipient,
        "profile_id": action.profile_id,
        "subject": payload.get("subject"),
        "in_reply_to": payload.get("in_reply_to"),
        "idempotency_key": action.idempotency_key,
        "origin": action.origin,
        "attempts": action.attempts,
        "last_error": action.last_error,
        "provider_id": action.provider_id,
        "due_at": action.due_at.isoformat(),
        "created_at": action.created_at.isoformat(),
        "updated_at": action.updated_at.isoformat(),
        "sent_at": action.sent_at.isoformat() if action.sent_at else None,
    }
