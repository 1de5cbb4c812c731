"""Delivering actions: claim, check consent, send through a connector, record the outcome.

Why three steps and two transactions: the claim (``queued`` -> ``sending``, one more
attempt, a lease) commits before anything leaves the hub, and the send happens outside any
transaction (an SMTP or Twilio round trip must not hold SQLite's write lock). The outcome
then commits in ONE transaction with its delivery record in the event log
(``email.sent``/``sms.sent``, or ``…send_failed``), so the profile's timeline and the
action's status never disagree. A worker lost between the send and that commit leaves the
action ``sending`` until its lease ends; it is then sent again (at least once).

Transient errors are recorded on the action row (attempts, ``last_error``, ``due_at``
after a backoff) and the relay publishes it again when due: retries survive restarts and
are visible, instead of living in a broker's countdown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.orm import Session

from connectors.email import smtp
from connectors.twilio import rest as twilio_rest
from personalization import actions, consent
from personalization.actions import Action
from pipeline import Channel, HubError, PermanentError, Touchpoint, TransientError, ingest, utcnow
from pipeline.events import get_event
from pipeline.models import Event
from workers.runtime import Runtime

log = structlog.get_logger(__name__)

SOURCE = "ecrm.deliver"
#: how long a sender may take before its action counts as abandoned
MIN_SEND_LEASE_SECONDS = 120.0
_TEXT_ON_TIMELINE = 2000


@dataclass
class Delivery:
    """What to send for one claimed action, and what its delivery record says."""

    action_id: str
    workspace_id: str
    kind: str
    channel: str
    recipient: str
    email: smtp.OutgoingEmail | None = None
    text: str = ""
    record: dict[str, Any] = field(default_factory=dict)


def deliver(runtime: Runtime, action_id: str, *, now: datetime | None = None) -> str | None:
    """Deliver one action if it is due and queued; returns its new status (None: not ours).

    Raises :class:`TransientError` only for database trouble (the task retries); sending
    errors are recorded on the action.
    """
    settings, db = runtime.settings, runtime.db
    lease = max(MIN_SEND_LEASE_SECONDS, 4 * settings.smtp_timeout_seconds)
    with db.write() as session:
        action = actions.claim(session, action_id, lease_seconds=lease, now=now)
        if action is None:
            return None
        try:
            delivery = prepare(session, runtime, action)
        except _Suppressed as exc:
            actions.mark_suppressed(session, action, exc.reason)
            log.info("action_suppressed", action_id=action_id, kind=action.kind)
            return actions.SUPPRESSED
        except PermanentError as exc:
            actions.mark_failed(session, action, str(exc))
            _append(session, runtime, action.workspace_id, _failure_record(action, str(exc)))
            log.warning("action_failed", action_id=action_id, kind=action.kind)
            return actions.FAILED
    try:
        provider_id = _send(runtime, delivery)
    except TransientError as exc:
        return _record_transient(runtime, action_id, str(exc))
    except PermanentError as exc:
        return _record_permanent(runtime, delivery, exc)
    except Exception as exc:  # a bug or a surprise from a library: retried, visible
        return _record_transient(runtime, action_id, f"{type(exc).__name__}: {exc}")
    with db.write() as session:
        action = _reload(session, action_id)
        actions.mark_sent(session, action, provider_id)
        record = {**delivery.record, "provider_id": provider_id}
        _append(session, runtime, action.workspace_id, _sent_record(delivery, record))
    log.info("action_sent", action_id=action_id, kind=delivery.kind)
    return actions.SENT


class _Suppressed(HubError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def prepare(session: Session, runtime: Runtime, action: Action) -> Delivery:
    """Check consent and build what to send (raises _Suppressed or PermanentError)."""
    channel = actions.CHANNEL_OF[action.kind]
    decided = consent.status_of(session, action.workspace_id, channel, action.recipient)
    if decided is not None and decided.status == consent.OPTED_OUT:
        raise _Suppressed(
            f"{channel} consent: the recipient opted out on "
            f"{decided.updated_at.isoformat()} (event {decided.message_id})"
        )
    payload = action.payload
    delivery = Delivery(
        action_id=action.id,
        workspace_id=action.workspace_id,
        kind=action.kind,
        channel=channel,
        recipient=action.recipient,
        text=str(payload.get("text") or ""),
        record={"action_id": action.id, "kind": action.kind, "origin": action.origin},
    )
    if channel == "sms":
        try:
            twilio_rest.TwilioAccount.from_settings(runtime.settings)
        except HubError as exc:
            raise PermanentError(str(exc)) from None
        return delivery
    sender = runtime.settings.email_from
    if not sender or not runtime.settings.smtp_host:
        raise PermanentError("outbound email needs ECRM_SMTP_HOST and ECRM_EMAIL_FROM")
    subject = payload.get("subject")
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    if action.kind == actions.EMAIL_REPLY:
        original = _answered(session, action)
        properties = original.properties
        own_id = properties.get("email_message_id")
        in_reply_to = f"<{own_id}>" if own_id else None
        references = tuple(f"<{ref}>" for ref in properties.get("references") or [])
        subject = subject or smtp.reply_subject(properties.get("subject"))
        delivery.record.update(
            in_reply_to=original.message_id, conversation_id=properties.get("conversation_id")
        )
    delivery.email = smtp.OutgoingEmail(
        message_id=smtp.our_message_id(action.id, sender),
        sender=sender,
        to=action.recipient,
        subject=str(subject or ""),
        text=delivery.text,
        html=payload.get("html"),
        in_reply_to=in_reply_to,
        references=references,
    )
    delivery.record["subject"] = delivery.email.subject
    return delivery


def _answered(session: Session, action: Action) -> Event:
    """The ``email.received`` event a reply answers; never a robot's."""
    message_id = str(action.payload.get("in_reply_to") or "")
    record = get_event(session, action.workspace_id, message_id)
    if record is None:
        raise PermanentError(f"in_reply_to: no event {message_id!r} in the log")
    if record.event.properties.get("automated"):
        flags = [f for f in ("auto_reply", "bulk", "bounce") if record.event.properties.get(f)]
        raise _Suppressed(
            f"the answered email is automated ({', '.join(flags) or 'automated'}): "
            "no reply to a robot"
        )
    return record.event


def _send(runtime: Runtime, delivery: Delivery) -> str:
    """Hand the message to SMTP or Twilio; returns the provider's id."""
    settings = runtime.settings
    if delivery.email is not None:
        server = smtp.SmtpServer.from_settings(settings)
        try:
            message = smtp.build_message(delivery.email)
        except ValueError as exc:
            raise PermanentError(f"message cannot be built: {exc}") from exc
        return smtp.send(server, message)
    account = twilio_rest.TwilioAccount.from_settings(settings)
    sent = twilio_rest.send_sms(account, delivery.recipient, delivery.text)
    delivery.record["twilio_status"] = sent.status
    return sent.sid


def _record_transient(runtime: Runtime, action_id: str, error: str) -> str:
    with runtime.db.write() as session:
        action = _reload(session, action_id)
        first = runtime.settings.action_retry_seconds
        status = actions.record_transient(session, action, error, first_backoff=first)
        if status == actions.FAILED:
            failure = _failure_record(action, action.last_error or error)
            _append(session, runtime, action.workspace_id, failure)
    event = "action_retry" if status == actions.QUEUED else "action_failed"
    log.warning(event, action_id=action_id, attempts=action.attempts)
    return status


def _record_permanent(runtime: Runtime, delivery: Delivery, exc: PermanentError) -> str:
    """Failed for good; a Twilio 21610 (the number texted STOP) also records the opt-out."""
    unsubscribed = isinstance(exc, twilio_rest.SmsRefused) and exc.unsubscribed
    with runtime.db.write() as session:
        action = _reload(session, delivery.action_id)
        actions.mark_failed(session, action, str(exc))
        # the opt-out is an event too (consent is derived from the log), and applies now
        opt_out = {
            "channel": "sms",
            "status": consent.OPTED_OUT,
            "reason": f"twilio_{twilio_rest.UNSUBSCRIBED_RECIPIENT}",
        }
        record = _failure_record(action, str(exc), {"consent": opt_out} if unsubscribed else None)
        if unsubscribed:
            decision = consent.Decision(
                "sms", action.recipient, consent.OPTED_OUT, record.occurred_at, record.message_id
            )
            consent.record(session, action.workspace_id, [decision])
        _append(session, runtime, action.workspace_id, record)
    log.warning("action_failed", action_id=delivery.action_id, kind=delivery.kind)
    return actions.FAILED


def _reload(session: Session, action_id: str) -> Action:
    action = session.get(Action, action_id, populate_existing=True)
    if action is None:  # actions are never deleted
        raise TransientError(f"action {action_id} vanished")
    return action


def _identifiers(channel: str, recipient: str) -> dict[str, str]:
    return {actions.IDENTIFIER_OF[channel]: recipient}


def _sent_record(delivery: Delivery, properties: dict[str, Any]) -> Touchpoint:
    return Touchpoint(
        message_id=f"action:{delivery.action_id}",
        channel=Channel(delivery.channel),
        type=f"{delivery.channel}.sent",
        occurred_at=utcnow(),
        source=SOURCE,
        identifiers=_identifiers(delivery.channel, delivery.recipient),
        properties={
            **{k: v for k, v in properties.items() if v is not None},
            "text": delivery.text[:_TEXT_ON_TIMELINE],
        },
    )


def _failure_record(action: Action, error: str, extra: dict[str, Any] | None = None) -> Touchpoint:
    channel = actions.CHANNEL_OF[action.kind]
    now = utcnow()
    properties: dict[str, Any] = {
        "action_id": action.id,
        "kind": action.kind,
        "origin": action.origin,
        "error": error[:2000],
        "attempts": action.attempts,
    }
    for name in ("subject", "in_reply_to"):
        if action.payload.get(name):
            properties[name] = action.payload[name]
    properties.update(extra or {})
    return Touchpoint(
        # unique per failure: a failed action retried by an operator may fail again
        message_id=f"action:{action.id}:failed:{now.strftime('%Y%m%dT%H%M%S%f')}",
        channel=Channel(channel),
        type=f"{channel}.send_failed",
        occurred_at=now,
        source=SOURCE,
        identifiers=_identifiers(channel, action.recipient),
        properties=properties,
    )


def _append(session: Session, runtime: Runtime, workspace_id: str, touchpoint: Touchpoint) -> None:
    """Append a delivery record to the event log (processing puts it on the timeline)."""
    [result] = ingest(
        session,
        [touchpoint],
        workspace_id=workspace_id,
        default_region=runtime.settings.default_region,
    )
    if result.status == "rejected":
        log.error("delivery_record_rejected", field=result.field, reason=result.reason)


def relay_actions(runtime: Runtime, publish: Callable[[str], None] | None = None) -> int:
    """Publish a delivery task for each due action; recover abandoned sends first.

    Runs every few seconds (the scheduler), so the idle case is one read, no write lock.
    Returns how many tasks it published.
    """
    db, settings = runtime.db, runtime.settings
    with db.read() as session:
        if not actions.anything_due(session):
            return 0
    with db.write() as session:
        recovered = actions.recover_abandoned(session)
        due = actions.due_for_publishing(session, lease_seconds=settings.batch_lease_seconds)
    if recovered:
        log.warning("actions_recovered", count=recovered)
    publish = publish or publisher()
    for sent, action_id in enumerate(due):
        try:
            publish(action_id)
        except Exception as exc:  # broker down: they are due again after their lease
            log.error("action_publish_failed", action_id=action_id, error=str(exc))
            return sent
    return len(due)


def publisher() -> Callable[[str], None]:
    """A function that puts one delivery task on the ``deliver`` queue."""
    from workers.tasks import deliver as task

    def publish(action_id: str) -> None:
        task.apply_async(
            args=[action_id],
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
        )

    return publish


def wake(action_id: str) -> None:
    """Publish an action's delivery task right after it was committed (best effort).

    If the broker is down the action is not lost: the relay publishes it once its publish
    lease (``ECRM_BATCH_LEASE_SECONDS``) ends.
    """
    try:
        publisher()(action_id)
    except Exception as exc:
        log.warning("action_wake_failed", action_id=action_id, error=str(exc))
