"""Reading a period of the event log from the command line and the API: ``30d`` or a date."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.caps import parse_period
from pipeline.envelope import utcnow


def period_start(text: str | None, name: str, *, now: datetime | None = None) -> datetime:
    """``30d``/``12h``/``90m`` before now, or an ISO date/time (UTC when no zone given)."""
    now = now or utcnow()
    if text is None:
        return now
    text = text.strip()
    if text and text[-1] in "mhdw" and text[:-1].isdigit():
        try:
            return now - parse_period(text)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{name}: expected a period like 30d or an ISO date, got {text!r}"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


__all__ = ["period_start"]
