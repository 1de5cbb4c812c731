"""History aggregates: counts, sums and recency over a profile's events, as of a moment.

Why "as of": conditions must see the profile as it was when the event happened. A POS or
call-centre backfill that arrives a day late is evaluated with the history up to its own
``occurred_at``, not with what happened since. The profile's events are its
``profile_events`` rows (in event time, re-pointed on merges), read through their index
``(workspace_id, profile_id, occurred_at)`` and joined with ``events`` for type, channel
and properties.

- ``count`` and ``sum`` include every matching event at or before ``as_of`` (the
  triggering event too: "this is the 3rd order in 30 days" counts this order);
- ``days_since`` is about the *previous* matching event: the triggering event
  (``current_event_id``) is left out, so at an order ``history.days_since(type=order.completed)``
  is the gap since the order before. ``None`` when there is none.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from identity.models import ProfileEvent
from personalization.rules.vocabulary import HistoryAggregate
from pipeline.errors import ValidationError
from pipeline.models import Event

Number = int | float


def history_value(
    session: Session,
    workspace_id: str,
    profile_id: str,
    aggregate: HistoryAggregate,
    as_of: datetime,
    *,
    current_event_id: int | None = None,
) -> Number | None:
    """The value of one aggregate for a profile at ``as_of`` (see the module doc)."""
    if as_of.tzinfo is None:
        raise ValidationError("as_of", "must be an aware time")
    if aggregate.function == "count":
        query = _matching(select(func.count()), workspace_id, profile_id, aggregate, as_of)
        return int(session.execute(query).scalar_one())
    if aggregate.function == "sum":
        if aggregate.property_name is None:
            raise ValidationError("property", "history.sum needs a property")
        query = _matching(select(Event.properties), workspace_id, profile_id, aggregate, as_of)
        total: Number = 0
        for (properties,) in session.execute(query):
            value = (
                properties.get(aggregate.property_name) if isinstance(properties, dict) else None
            )
            if isinstance(value, int | float) and not isinstance(value, bool):
                total += value
        return total
    if aggregate.function == "days_since":
        query = _matching(
            select(ProfileEvent.occurred_at), workspace_id, profile_id, aggregate, as_of
        )
        if current_event_id is not None:
            query = query.where(ProfileEvent.event_id != current_event_id)
        latest: datetime | None = session.execute(
            query.order_by(ProfileEvent.occurred_at.desc()).limit(1)
        ).scalar_one_or_none()
        if latest is None:
            return None
        return (as_of - latest).total_seconds() / 86400
    raise ValidationError("function", f"unknown history function {aggregate.function!r}")


def history_values(
    session: Session,
    workspace_id: str,
    profile_id: str,
    aggregates: Iterable[HistoryAggregate],
    as_of: datetime,
    *,
    current_event_id: int | None = None,
) -> dict[HistoryAggregate, Any]:
    """Each aggregate's value (what :class:`~personalization.rules.evaluate.Context` takes)."""
    return {
        aggregate: history_value(
            session,
            workspace_id,
            profile_id,
            aggregate,
            as_of,
            current_event_id=current_event_id,
        )
        for aggregate in aggregates
    }


def _matching(
    query: Select[Any],
    workspace_id: str,
    profile_id: str,
    aggregate: HistoryAggregate,
    as_of: datetime,
) -> Select[Any]:
    query = query.select_from(ProfileEvent).where(
        ProfileEvent.workspace_id == workspace_id,
        ProfileEvent.profile_id == profile_id,
        ProfileEvent.occurred_at <= as_of,
    )
    if aggregate.window is not None:
        query = query.where(ProfileEvent.occurred_at > as_of - aggregate.window)
    return matching_events(
        query,
        None if aggregate.type == "*" else aggregate.type,
        aggregate.channel,
        join=aggregate.function == "sum",
    )


def matching_events(
    query: Select[Any], event_type: str | None, channel: str | None, *, join: bool
) -> Select[Any]:
    """``query`` over ``profile_events`` narrowed to an aggregate's type (``order.*``:
    a prefix) and channel, joined with ``events`` when the channel (or ``join``) needs
    it; the type is on ``profile_events`` itself (the timeline index finds the rows)."""
    if join or channel is not None:
        query = query.join(Event, Event.id == ProfileEvent.event_id)
    if event_type is not None:
        query = query.where(type_matches(ProfileEvent.type, event_type))
    if channel is not None:
        query = query.where(Event.channel == channel)
    return query


def type_matches(column: Any, event_type: str) -> Any:
    """``column`` is the aggregate's type, or starts with its prefix (``order.*``)."""
    if event_type.endswith(".*"):
        return column.startswith(event_type[:-1], autoescape=True)
    return column == event_type
