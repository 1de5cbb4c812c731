"""SQLite: a plan's writes row by row, as constant statements handed to the driver.

The same functions as :mod:`identity.pg_writes`, with the same guards, so
:func:`identity.resolve.write_plan` only picks the module. On SQLite an ``executemany``
runs in-process without round trips, so row by row is the cheap form there, and what is
left to save is Python per row: SQLAlchemy's parameter building and type processing cost
more than SQLite's own work (about two thirds of these statements' time). So the rows go
to ``sqlite3`` directly as tuples, with timestamps written as the text
:class:`pipeline.db.UTCDateTime` stores and JSON as orjson writes it. The statement texts
are constant and carry no values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from identity.models import PROFILES
from pipeline.db import json_text, sqlite_time

_UPDATE_PROFILES = (
    "UPDATE profiles SET event_count = event_count + ?, first_seen_at = ?, last_seen_at = ?,"
    " updated_at = ? WHERE id = ? AND updated_at = ?"
)
_UPDATE_PROFILES_WITH_TRAITS = (
    "UPDATE profiles SET event_count = event_count + ?, first_seen_at = ?, last_seen_at = ?,"
    " updated_at = ?, traits = ?, trait_times = ?, trait_sources = ?"
    " WHERE id = ? AND updated_at = ?"
)
_TOUCH_IDENTIFIERS = (
    "UPDATE profile_identifiers SET last_seen_at = ? WHERE id = ? AND last_seen_at < ?"
)
_ADD_TYPE_COUNTS = (
    "INSERT INTO profile_type_counts"
    " (workspace_id, profile_id, type, channel, count, first_at, last_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (workspace_id, profile_id, type, channel)"
    " DO UPDATE SET count = profile_type_counts.count + excluded.count,"
    " first_at = min(profile_type_counts.first_at, excluded.first_at),"
    " last_at = max(profile_type_counts.last_at, excluded.last_at)"
)
_ADD_PROFILE_EVENTS = (
    "INSERT INTO profile_events (event_id, workspace_id, profile_id, occurred_at, type)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING"
)

_ADD_IDENTIFIERS = (
    "INSERT INTO profile_identifiers (workspace_id, kind, value, profile_id, channel,"
    " first_seen_at, last_seen_at, source_event_id, linked_by, attached_to)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (workspace_id, kind, value) DO NOTHING"
)


def _executemany(session: Session, statement: str, rows: Sequence[tuple[Any, ...]]) -> int:
    result = session.connection().exec_driver_sql(statement, list(rows))
    return int(result.rowcount)


def add_profiles(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert a batch's new profiles (few per batch: SQLAlchemy's executemany will do)."""
    session.execute(PROFILES.insert(), rows)


def add_identifiers(session: Session, rows: list[dict[str, Any]]) -> int:
    """Claim new identifiers; how many were still free (the others were taken meanwhile)."""
    return _executemany(
        session,
        _ADD_IDENTIFIERS,
        [
            (
                r["workspace_id"],
                r["kind"],
                r["value"],
                r["profile_id"],
                r["channel"],
                sqlite_time(r["first_seen_at"]),
                sqlite_time(r["last_seen_at"]),
                r["source_event_id"],
                r["linked_by"],
                r["attached_to"],
            )
            for r in rows
        ],
    )


def _remembered_times() -> Callable[[datetime], str]:
    """:func:`sqlite_time` that formats each distinct time once.

    Why: a batch's profile updates share their ``now`` and mostly their previous
    ``updated_at`` (profiles last written by the same batch), four times per row.
    """
    texts: dict[datetime, str] = {}

    def text(value: datetime) -> str:
        found = texts.get(value)
        if found is None:
            found = texts[value] = sqlite_time(value)
        return found

    return text


def update_profiles(session: Session, rows: list[dict[str, Any]], *, traits: bool) -> int:
    """Apply profile updates whose ``updated_at`` is unchanged; returns how many matched."""
    sqlite_time = _remembered_times()
    if traits:
        return _executemany(
            session,
            _UPDATE_PROFILES_WITH_TRAITS,
            [
                (
                    r["n"],
                    sqlite_time(r["first"]),
                    sqlite_time(r["last"]),
                    sqlite_time(r["now"]),
                    json_text(r["traits"]),
                    json_text(r["times"]),
                    json_text(r["sources"]),
                    r["pid"],
                    sqlite_time(r["seen"]),
                )
                for r in rows
            ],
        )
    return _executemany(
        session,
        _UPDATE_PROFILES,
        [
            (
                r["n"],
                sqlite_time(r["first"]),
                sqlite_time(r["last"]),
                sqlite_time(r["now"]),
                r["pid"],
                sqlite_time(r["seen"]),
            )
            for r in rows
        ],
    )


def touch_identifiers(session: Session, rows: list[dict[str, Any]]) -> None:
    """Move identifiers' last-seen forward (never back, whoever wrote meanwhile)."""
    _executemany(
        session,
        _TOUCH_IDENTIFIERS,
        [(seen, r["rid"], seen) for r in rows for seen in (sqlite_time(r["seen"]),)],
    )


def add_type_counts(session: Session, rows: list[dict[str, Any]]) -> None:
    """Add per-type event counts and widen their first and latest times."""
    _executemany(
        session,
        _ADD_TYPE_COUNTS,
        [
            (
                r["workspace_id"],
                r["profile_id"],
                r["type"],
                r["channel"],
                r["count"],
                sqlite_time(r["first_at"]),
                sqlite_time(r["last_at"]),
            )
            for r in rows
        ],
    )


def add_profile_events(session: Session, rows: list[dict[str, Any]]) -> None:
    """Record which profile each event was counted in (an event already recorded is kept)."""
    _executemany(
        session,
        _ADD_PROFILE_EVENTS,
        [
            (
                r["event_id"],
                r["workspace_id"],
                r["profile_id"],
                sqlite_time(r["occurred_at"]),
                r["type"],
            )
            for r in rows
        ],
    )
