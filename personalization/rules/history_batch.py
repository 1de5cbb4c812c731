"""History aggregates for a whole batch of events: a few queries, not a few per event.

Why: evaluating ``history.count(type=order.completed, window=30d)`` with one query per
event made history the largest cost of firing rules. A batch's events are near each other
in time, so for each filter (type, channel) one query reads the matching events of all the
batch's profiles between the earliest and the latest triggering event (less the longest
window), and each event's values are computed in memory as of its own ``occurred_at``.
What lies before the span comes from ``profile_type_counts`` (a profile's matching
events of all time, kept by identity resolution) less the rows from the span's start on,
so a live batch reads only its profiles' recent rows, never their whole history; where
most of a profile's events are after the span's start (a window reaching back before the
profile's history), the few before it are counted instead. Only ``sum`` without a window
reads every row, as it must see each property.

The values are exactly :func:`personalization.rules.history.history_value`'s (its module
doc gives the semantics; a test compares the two on random histories).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from identity.models import TYPE_COUNTS, ProfileEvent
from personalization.rules.history import matching_events, type_matches
from personalization.rules.vocabulary import HistoryAggregate
from pipeline.db import in_list, listed
from pipeline.models import Event

_CHUNK = 400
_log = structlog.get_logger(__name__)
Number = int | float


@dataclass(frozen=True)
class HistoryRequest:
    """One triggering event: whose history, as of when, and which aggregates it needs."""

    event_id: int
    profile_id: str
    as_of: datetime
    aggregates: frozenset[HistoryAggregate]


@dataclass
class _Rows:
    """One profile's matching events of one filter, in time order."""

    times: list[datetime]
    event_ids: list[int]
    values: list[Number | None]


def history_for_events(
    session: Session, workspace_id: str, requests: Sequence[HistoryRequest]
) -> dict[int, dict[HistoryAggregate, Any]]:
    """Each request's aggregates, keyed by its event id (see the module doc)."""
    result: dict[int, dict[HistoryAggregate, Any]] = {r.event_id: {} for r in requests}
    groups: dict[tuple[str | None, str | None], set[HistoryAggregate]] = defaultdict(set)
    for request in requests:
        for aggregate in request.aggregates:
            groups[(_type_filter(aggregate.type), aggregate.channel)].add(aggregate)
    for (type_filter, channel), aggregates in groups.items():
        users = [r for r in requests if r.aggregates & aggregates]
        _compute(session, workspace_id, type_filter, channel, aggregates, users, result)
    return result


def _type_filter(event_type: str | None) -> str | None:
    return None if event_type in (None, "*") else event_type


def _compute(
    session: Session,
    workspace_id: str,
    type_filter: str | None,
    channel: str | None,
    aggregates: set[HistoryAggregate],
    requests: Sequence[HistoryRequest],
    result: dict[int, dict[HistoryAggregate, Any]],
) -> None:
    sums = {a for a in aggregates if a.function == "sum"}
    if sums:
        _compute_sums(session, workspace_id, type_filter, channel, sums, requests, result)
    if aggregates - sums:
        _compute_prefixes(
            session, workspace_id, type_filter, channel, aggregates - sums, requests, result
        )


def _compute_prefixes(
    session: Session,
    workspace_id: str,
    type_filter: str | None,
    channel: str | None,
    aggregates: set[HistoryAggregate],
    requests: Sequence[HistoryRequest],
    result: dict[int, dict[HistoryAggregate, Any]],
) -> None:
    """Counts and recency from prefixes: how many events at or before a time, and the last.

    A count over ``(as_of - w, as_of]`` is the prefix at ``as_of`` less the prefix at
    ``as_of - w``. A prefix over the batch's time span ``[earliest - d, latest - d]`` is
    what lies before the span plus the rows inside it (see :func:`_read_prefix`), so
    each offset ``d`` (0, and each window) reads only the rows near the span.
    """
    earliest = min(r.as_of for r in requests)
    latest = max(r.as_of for r in requests)
    totals = _read_totals(
        session, workspace_id, sorted({r.profile_id for r in requests}), type_filter, channel
    )
    offsets = {timedelta(0)} | {
        a.window for a in aggregates if a.function == "count" and a.window is not None
    }
    recency = any(a.function == "days_since" for a in aggregates)
    prefixes = {
        offset: _read_prefix(
            session,
            workspace_id,
            totals,
            type_filter,
            channel,
            earliest - offset,
            latest - offset,
            with_latest=recency and not offset,
        )
        for offset in offsets
    }
    now_prefix = prefixes[timedelta(0)]
    for request in requests:
        values = result[request.event_id]
        for aggregate in request.aggregates & aggregates:
            if aggregate.function == "count":
                count = now_prefix.count(request.profile_id, request.as_of)
                if aggregate.window is not None:
                    before = prefixes[aggregate.window]
                    count -= before.count(request.profile_id, request.as_of - aggregate.window)
                values[aggregate] = count
            elif aggregate.function == "days_since":
                previous = now_prefix.latest(request.profile_id, request.as_of, request.event_id)
                if previous is None or (
                    aggregate.window is not None and previous <= request.as_of - aggregate.window
                ):
                    values[aggregate] = None
                else:
                    values[aggregate] = (request.as_of - previous).total_seconds() / 86400
            else:
                raise ValueError(f"unknown history function {aggregate.function!r}")


@dataclass(frozen=True)
class _Total:
    """A profile's matching events of all time, from its type counts."""

    count: int
    first: datetime
    last: datetime

    def fewer_after(self, moment: datetime) -> bool:
        """Whether fewer of them lie at or after ``moment`` than before it (by time span)."""
        if moment > self.last:
            return True
        if moment <= self.first:
            return False
        return (self.last - moment) <= (moment - self.first)


def _read_totals(
    session: Session,
    workspace_id: str,
    profiles: list[str],
    type_filter: str | None,
    channel: str | None,
) -> dict[str, _Total]:
    """Per profile with any matching event: all of them, counted (``profile_type_counts``)."""
    found: dict[str, _Total] = {}
    c = TYPE_COUNTS.c
    for part in _chunks(profiles):
        query = select(c.profile_id, func.sum(c.count), func.min(c.first_at), func.max(c.last_at))
        query = query.where(c.workspace_id == workspace_id, in_list(session, c.profile_id, part))
        if type_filter is not None:
            query = query.where(type_matches(c.type, type_filter))
        if channel is not None:
            query = query.where(c.channel == channel)
        for profile_id, count, first, last in session.execute(query.group_by(c.profile_id)):
            found[profile_id] = _Total(int(count), _aware(first), _aware(last))  # type: ignore[arg-type]
    return found


def _read_prefix(
    session: Session,
    workspace_id: str,
    totals: dict[str, _Total],
    type_filter: str | None,
    channel: str | None,
    start: datetime,
    end: datetime,
    *,
    with_latest: bool,
) -> _Prefix:
    """The prefix over ``[start, end]`` for the profiles that have matching events.

    What lies before ``start`` is read from the side with fewer rows: for a profile
    whose events are mostly before ``start`` (a live batch, a long history) its rows from
    ``start`` on are read and subtracted from its total, so its old history is never
    read; otherwise before ``start`` is counted (a grouped count) and the span's rows read.
    ``with_latest`` also finds each profile's latest matching time before ``start`` (for
    recency), one index probe per profile.
    """
    after = [pid for pid, total in totals.items() if total.fewer_after(start)]
    before = [pid for pid, total in totals.items() if not total.fewer_after(start)]
    base: dict[str, tuple[int, datetime | None]] = {}
    rows: dict[tuple[str, str | None], _Rows] = {}
    if before:
        base.update(_read_base(session, workspace_id, before, type_filter, channel, start))
        rows.update(_read_rows(session, workspace_id, before, type_filter, channel, start, end, []))
    if after:
        tail = _read_rows(session, workspace_id, after, type_filter, channel, start, None, [])
        rows.update(tail)
        probe: list[str] = []
        disagree: list[str] = []
        for profile_id in after:
            found = tail.get((profile_id, None))
            earlier = totals[profile_id].count - (len(found.times) if found else 0)
            if earlier < 0:
                disagree.append(profile_id)
            elif earlier == 0:
                base[profile_id] = (0, None)
            elif found is None:  # every matching event is before start
                base[profile_id] = (earlier, totals[profile_id].last)
            else:
                base[profile_id] = (earlier, None)
                probe.append(profile_id)
        if with_latest and probe:
            for profile_id, at in _read_latest_before(
                session, workspace_id, probe, type_filter, channel, start
            ).items():
                base[profile_id] = (base[profile_id][0], at)
        if disagree:  # counts behind the timeline (never seen): count the slow way
            _log.warning("type_counts_disagree", profiles=len(disagree))
            base.update(_read_base(session, workspace_id, disagree, type_filter, channel, start))
    return _Prefix(base, rows)


def _read_latest_before(
    session: Session,
    workspace_id: str,
    profiles: list[str],
    type_filter: str | None,
    channel: str | None,
    before: datetime,
) -> dict[str, datetime | None]:
    """Per profile: its latest matching event's time before ``before``.

    One statement per chunk, a correlated subquery per profile that walks the timeline
    index back from ``before`` to the first matching row (near, for a type the profile
    has often; the type counts already said that there is one).
    """
    found: dict[str, datetime | None] = {}
    for part in _chunks(profiles):
        values = listed(session, part)
        latest = matching_events(
            select(ProfileEvent.occurred_at)
            .select_from(ProfileEvent)
            .where(
                ProfileEvent.workspace_id == workspace_id,
                ProfileEvent.profile_id == values.c.value,
                ProfileEvent.occurred_at < before,
            ),
            type_filter,
            channel,
            join=False,
        )
        latest = latest.order_by(ProfileEvent.occurred_at.desc()).limit(1)
        for profile_id, at in session.execute(select(values.c.value, latest.scalar_subquery())):
            found[profile_id] = _aware(at)
    return found


@dataclass(frozen=True)
class _Prefix:
    """Per profile: matching events before a span (count, latest) and the rows inside it."""

    base: dict[str, tuple[int, datetime | None]]
    rows: dict[tuple[str, str | None], _Rows]

    def count(self, profile_id: str, at: datetime) -> int:
        """Matching events at or before ``at`` (a time inside the span)."""
        rows = self.rows.get((profile_id, None))
        before = self.base.get(profile_id, (0, None))[0]
        return before + (bisect_right(rows.times, at) if rows else 0)

    def latest(self, profile_id: str, at: datetime, leave_out: int) -> datetime | None:
        """The latest matching event at or before ``at``, other than event ``leave_out``."""
        rows = self.rows.get((profile_id, None))
        if rows is not None:
            for index in range(bisect_right(rows.times, at) - 1, -1, -1):
                if rows.event_ids[index] != leave_out:
                    return rows.times[index]
        return self.base.get(profile_id, (0, None))[1]


def _compute_sums(
    session: Session,
    workspace_id: str,
    type_filter: str | None,
    channel: str | None,
    aggregates: set[HistoryAggregate],
    requests: Sequence[HistoryRequest],
    result: dict[int, dict[HistoryAggregate, Any]],
) -> None:
    """Sums read each event's property: the rows of the longest window (or all of them)."""
    requests = [r for r in requests if r.aggregates & aggregates]
    earliest = min(r.as_of for r in requests)
    latest = max(r.as_of for r in requests)
    profiles = sorted({r.profile_id for r in requests})
    windows = [a.window for a in aggregates]
    start = None if None in windows else earliest - max(w for w in windows if w is not None)
    names = sorted({a.property_name for a in aggregates if a.property_name})
    rows = _read_rows(session, workspace_id, profiles, type_filter, channel, start, latest, names)
    for request in requests:
        for aggregate in request.aggregates & aggregates:
            found = rows.get((request.profile_id, aggregate.property_name))
            total: Number = 0
            if found is not None:
                high = bisect_right(found.times, request.as_of)
                low = (
                    bisect_right(found.times, request.as_of - aggregate.window)
                    if aggregate.window is not None
                    else 0
                )
                for value in found.values[low:high]:
                    if value is not None:
                        total += value
            result[request.event_id][aggregate] = total


def _filtered(
    query: Select[*tuple[Any, ...]],
    workspace_id: str,
    profiles: list[str],
    type_filter: str | None,
    channel: str | None,
    session: Session,
    *,
    join: bool,
) -> Select[*tuple[Any, ...]]:
    query = query.select_from(ProfileEvent).where(
        ProfileEvent.workspace_id == workspace_id,
        in_list(session, ProfileEvent.profile_id, profiles),
    )
    return matching_events(query, type_filter, channel, join=join)


def _read_rows(
    session: Session,
    workspace_id: str,
    profiles: list[str],
    type_filter: str | None,
    channel: str | None,
    start: datetime | None,
    end: datetime | None,
    names: list[str],
) -> dict[tuple[str, str | None], _Rows]:
    """``(profile, property or None) -> rows`` in ``[start, end]`` (None: unbounded)."""
    found: dict[tuple[str, str | None], _Rows] = {}
    columns: list[Any] = [ProfileEvent.profile_id, ProfileEvent.event_id, ProfileEvent.occurred_at]
    if names:
        columns.append(Event.properties)
    for part in _chunks(profiles):
        query = _filtered(
            select(*columns), workspace_id, part, type_filter, channel, session, join=bool(names)
        )
        if end is not None:
            query = query.where(ProfileEvent.occurred_at <= end)
        if start is not None:
            query = query.where(ProfileEvent.occurred_at >= start)
        query = query.order_by(ProfileEvent.profile_id, ProfileEvent.occurred_at)
        if not names:  # counts and recency (most queries): one list per profile
            for profile_id, event_id, occurred_at in session.execute(query):
                rows = found.get((profile_id, None))
                if rows is None:
                    rows = found[(profile_id, None)] = _Rows([], [], [])
                rows.times.append(occurred_at)
                rows.event_ids.append(event_id)
                rows.values.append(None)
            continue
        for profile_id, event_id, occurred_at, properties in session.execute(query):
            for name in (None, *names):
                rows = found.get((profile_id, name))
                if rows is None:
                    rows = found[(profile_id, name)] = _Rows([], [], [])
                rows.times.append(occurred_at)
                rows.event_ids.append(event_id)
                rows.values.append(_number(properties, name))
    return found


def _read_base(
    session: Session,
    workspace_id: str,
    profiles: list[str],
    type_filter: str | None,
    channel: str | None,
    before: datetime,
) -> dict[str, tuple[int, datetime | None]]:
    """Per profile: how many matching events lie before ``before``, and the latest one."""
    found: dict[str, tuple[int, datetime | None]] = {}
    grouped: Select[*tuple[Any, ...]] = select(
        ProfileEvent.profile_id, func.count(), func.max(ProfileEvent.occurred_at)
    )
    for part in _chunks(profiles):
        query = _filtered(
            grouped,
            workspace_id,
            part,
            type_filter,
            channel,
            session,
            join=False,
        ).where(ProfileEvent.occurred_at < before)
        for profile_id, count, latest in session.execute(query.group_by(ProfileEvent.profile_id)):
            found[profile_id] = (int(count), _aware(latest))
    return found


def _aware(value: Any) -> datetime | None:
    """An aware time from ``max(occurred_at)`` (text on SQLite if the type were lost)."""
    if value is None:
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _number(properties: Any, name: str | None) -> Number | None:
    if name is None or not isinstance(properties, dict):
        return None
    value = properties.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


__all__ = ["HistoryRequest", "history_for_events"]
