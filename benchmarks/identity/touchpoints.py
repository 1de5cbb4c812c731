"""FEBRL records as the touchpoints a shop's enrolment form would send the hub.

What the hub is given, and why:

* ``identifiers``: only ``anonymous_id``, a random token per record. Ingest needs at least
  one identifier, and a fresh anonymous id is what a first-time visitor really has; it
  carries no truth (it is not derived from ``rec_id``) and joins nothing.
* ``traits``: every FEBRL attribute, ``soc_sec_id`` included. FEBRL's duplicates have
  typos in ``soc_sec_id`` too, so it is evidence for a probabilistic matcher, never an
  exact identifier (as an identifier it would join some true pairs and miss the others,
  and a typo could join two people).
* ``source``: the file the record came from (``febrl4a``/``febrl4b``), which the peers
  know as well in their link-only runs; ``rec_id`` and the org/dup structure never leave
  the harness.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

#: arrival times start here and advance one second per event, in feed order
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CHANNEL = "pos"
EVENT_TYPE = "customer.enrolled"


def touchpoint(
    position: int, source: str, fields: dict[str, str], rng_token: str | None = None
) -> dict[str, Any]:
    """The ingest dict for one record arriving ``position``-th.

    ``rng_token`` (default: a fresh UUID) is the anonymous id and the message id's tail;
    pass one from a seeded generator for a reproducible feed.
    """
    token = rng_token or uuid.uuid4().hex
    return {
        "message_id": f"febrl-{token}",
        "channel": CHANNEL,
        "type": EVENT_TYPE,
        "occurred_at": T0 + timedelta(seconds=position),
        "source": source,
        "identifiers": {"anonymous_id": f"anon-{token}"},
        "traits": dict(fields),
    }
