"""When to try a webhook delivery again: the schedule, jitter and ``Retry-After``.

Why a fixed schedule rather than pure doubling: receivers that are down for a deploy come
back in minutes, ones down for a weekend in days; the Standard Webhooks example schedule
(immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h) covers both in about
three days with ten attempts. Jitter (±10 %) stops a receiver that comes back from being hit
by every queued delivery in the same second. The schedule is parsed by
:func:`pipeline.settings.parse_schedule` (one implementation, used by the settings too).
"""

from __future__ import annotations

import random

from pipeline.settings import DEFAULT_WEBHOOK_SCHEDULE, parse_schedule

#: seconds before each attempt, the first included
DEFAULT_SCHEDULE: tuple[float, ...] = DEFAULT_WEBHOOK_SCHEDULE
#: the longest wait a receiver's ``Retry-After`` can impose
MAX_RETRY_AFTER = 86400.0
JITTER = 0.10

__all__ = ["DEFAULT_SCHEDULE", "JITTER", "MAX_RETRY_AFTER", "next_delay", "parse_schedule"]


def next_delay(
    attempts: int,
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE,
    *,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before the next attempt after ``attempts`` made; ``None``: give up.

    ``schedule[attempts]`` with ±10 % jitter (``schedule[0]`` is the first attempt's delay,
    usually 0). A receiver's ``Retry-After`` wins when it asks for longer, capped at 24 h so
    a bad header cannot park a delivery for ever; it never adds attempts beyond the schedule.
    """
    if attempts < 0:
        raise ValueError(f"attempts must be 0 or more, got {attempts}")
    if attempts >= len(schedule):
        return None
    base = float(schedule[attempts])
    delay = base * (1 + (rng or random).uniform(-JITTER, JITTER)) if base > 0 else 0.0
    if retry_after is not None and retry_after > delay:
        delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER))
    return max(delay, 0.0)
