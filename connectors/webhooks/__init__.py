"""Webhooks out: signed, safe HTTP deliveries of profile changes to downstream systems.

Pieces, each usable alone (the endpoint registry and the delivery dispatcher build on them):

- :mod:`~connectors.webhooks.signing`: Standard Webhooks headers and secrets, so consumers
  verify deliveries with any Standard Webhooks library;
- :mod:`~connectors.webhooks.targets`: which URLs may receive deliveries (https, no
  private/loopback/link-local addresses unless allowed), checked at registration and
  again at each send because DNS changes;
- :mod:`~connectors.webhooks.send`: one POST attempt with short timeouts, no redirects and
  a capped response read, summarised as an :class:`Attempt` (never raises for the network);
- :mod:`~connectors.webhooks.schedule`: when to try again (exponential backoff with jitter,
  honouring ``Retry-After``).
"""

from connectors.webhooks.schedule import DEFAULT_SCHEDULE, next_delay, parse_schedule
from connectors.webhooks.send import Attempt, Outcome, post
from connectors.webhooks.signing import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    headers,
    new_message_id,
    new_secret,
    sign,
    verify,
)
from connectors.webhooks.targets import ResolveError, check_url, resolve_allowed

__all__ = [
    "DEFAULT_SCHEDULE",
    "ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Attempt",
    "Outcome",
    "ResolveError",
    "check_url",
    "headers",
    "new_message_id",
    "new_secret",
    "next_delay",
    "parse_schedule",
    "post",
    "resolve_allowed",
    "sign",
    "verify",
]
