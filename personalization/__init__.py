"""Personalization: what the hub decides to do for a customer, as actions in an outbox.

It emits actions (``email.send``, ``email.reply``, ``sms.send``) into the outbox table of
:mod:`personalization.actions` and keeps each address's channel consent
(:mod:`personalization.consent`); it never talks to SMTP or Twilio itself: connectors
deliver, ``workers.delivery`` wires the two. Rules and loyalty come later and enqueue
through the same :func:`enqueue`.
"""

from personalization import consent
from personalization.action_requests import parse_request
from personalization.actions import (
    EMAIL_REPLY,
    EMAIL_SEND,
    KINDS,
    SMS_SEND,
    STATUSES,
    Action,
    Enqueued,
    IdempotencyConflict,
    NewAction,
    NotRetryable,
    action_view,
    enqueue,
    get_action,
    list_actions,
    retry,
)
from personalization.consent import Consent, allowed, status_of
from personalization.labels import models as _labels_models  # noqa: F401  (registers its table)
from personalization.rules import models as _rules_models  # noqa: F401  (registers its tables)

__all__ = [
    "EMAIL_REPLY",
    "EMAIL_SEND",
    "KINDS",
    "SMS_SEND",
    "STATUSES",
    "Action",
    "Consent",
    "Enqueued",
    "IdempotencyConflict",
    "NewAction",
    "NotRetryable",
    "action_view",
    "allowed",
    "consent",
    "enqueue",
    "get_action",
    "list_actions",
    "parse_request",
    "retry",
    "status_of",
]
