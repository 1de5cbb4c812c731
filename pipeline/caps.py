"""Caps ("at most N per period") and the period text they are written in (``7d``).

Why here, in the pipeline: a cap is written in two places, a rule's
``guards.frequency`` (checked by :mod:`personalization.rules.checks`) and the
``ECRM_CHANNEL_CAPS`` setting (read by :mod:`pipeline.settings`), and the pipeline knows
nothing of personalization. :class:`Cap` is re-exported by
:mod:`personalization.rules.schema`, where compiled rules use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

_PERIOD = re.compile(r"^([1-9][0-9]{0,5})([mhdw])$")
_COUNT = re.compile(r"^[0-9]{1,6}$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: the longest period a cap may have: a batch reads this much history for each capped profile
MAX_PERIOD = timedelta(days=365)
PERIOD_HINT = "a number and m (minutes), h, d or w, e.g. 7d"


@dataclass(frozen=True)
class Cap:
    """At most ``max`` times within any ``per`` (a sliding window ending now)."""

    max: int
    per: timedelta

    @property
    def text(self) -> str:
        """``3/7d``: how settings and messages write it."""
        return f"{self.max}/{period_text(self.per)}"


def parse_period(text: object) -> timedelta:
    """``30m``, ``12h``, ``7d`` or ``2w`` as a duration; :class:`ValueError` says what was wrong."""
    found = _PERIOD.match(text) if isinstance(text, str) else None
    if found is None:
        raise ValueError(f"period {text!r}: expected {PERIOD_HINT}")
    amount, unit = found.groups()
    period = timedelta(**{_UNITS[unit]: int(amount)})
    if period > MAX_PERIOD:
        raise ValueError(f"period {text!r}: at most {MAX_PERIOD.days}d")
    return period


def period_text(period: timedelta) -> str:
    """Text :func:`parse_period` reads back as ``period``: in days, hours or minutes (``7d``)."""
    minutes = int(period.total_seconds()) // 60
    for unit, size in (("d", 24 * 60), ("h", 60)):
        if minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


def parse_cap(text: str) -> Cap:
    """``3/7d`` (at most 3 per 7 days) as a :class:`Cap`; :class:`ValueError` if malformed."""
    count, slash, period = text.strip().partition("/")
    if not slash or not _COUNT.match(count.strip()) or int(count) < 1:
        raise ValueError(f"{text.strip()!r}: expected MAX/PERIOD, e.g. 3/7d")
    return Cap(int(count), parse_period(period.strip()))
