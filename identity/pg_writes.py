"""PostgreSQL: a plan's row-by-row writes as one set-based statement each.

Why: on PostgreSQL an ``executemany`` is one statement per row (pipelined by psycopg),
and the worker spent half its time there. Here the rows travel as one JSON document
(built by orjson in C) that the server expands with ``jsonb_to_recordset``; each statement
keeps the same guards as the row-by-row form it replaces (``updated_at`` unchanged,
last-seen only forward, counts added atomically). Statement texts are constant and carry
no values.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

_UPDATE_PROFILES = text(
    "UPDATE profiles AS p SET event_count = p.event_count + u.n, first_seen_at = u.first,"
    " last_seen_at = u.last, updated_at = u.now"
    " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS u(pid text, seen timestamptz, n int,"
    " first timestamptz, last timestamptz, now timestamptz)"
    " WHERE p.id = u.pid AND p.updated_at = u.seen"
)
_UPDATE_PROFILES_WITH_TRAITS = text(
    "UPDATE profiles AS p SET event_count = p.event_count + u.n, first_seen_at = u.first,"
    " last_seen_at = u.last, updated_at = u.now, traits = u.traits, trait_times = u.times,"
    " trait_sources = u.sources"
    " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS u(pid text, seen timestamptz, n int,"
    " first timestamptz, last timestamptz, now timestamptz, traits jsonb, times jsonb,"
    " sources jsonb)"
    " WHERE p.id = u.pid AND p.updated_at = u.seen"
)
_TOUCH_IDENTIFIERS = text(
    "UPDATE profile_identifiers AS i SET last_seen_at = u.seen"
    " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS u(rid bigint, seen timestamptz)"
    " WHERE i.id = u.rid AND i.last_seen_at < u.seen"
)
_ADD_TYPE_COUNTS = text(
    "INSERT INTO profile_type_counts"
    " (workspace_id, profile_id, type, channel, count, first_at, last_at)"
    " SELECT u.workspace_id, u.profile_id, u.type, u.channel, u.count, u.first_at, u.last_at"
    " FROM jsonb_to_recordset(CAST(:rows AS jsonb))"
    " AS u(workspace_id text, profile_id text, type text, channel text, count int,"
    " first_at timestamptz, last_at timestamptz)"
    " ON CONFLICT (workspace_id, profile_id, type, channel)"
    " DO UPDATE SET count = profile_type_counts.count + EXCLUDED.count,"
    " first_at = LEAST(profile_type_counts.first_at, EXCLUDED.first_at),"
    " last_at = GREATEST(profile_type_counts.last_at, EXCLUDED.last_at)"
)
_ADD_PROFILE_EVENTS = text(
    "INSERT INTO profile_events (event_id, workspace_id, profile_id, occurred_at, type)"
    " SELECT u.event_id, u.workspace_id, u.profile_id, u.occurred_at, u.type"
    " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS u(event_id bigint,"
    " workspace_id text, profile_id text, occurred_at timestamptz, type text)"
    " ON CONFLICT (event_id) DO NOTHING"
)

_ADD_IDENTIFIERS = text(
    "INSERT INTO profile_identifiers (workspace_id, kind, value, profile_id, channel,"
    " first_seen_at, last_seen_at, source_event_id, linked_by, attached_to)"
    " SELECT u.workspace_id, u.kind, u.value, u.profile_id, u.channel, u.first_seen_at,"
    " u.last_seen_at, u.source_event_id, u.linked_by, u.attached_to"
    " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS u(workspace_id text, kind text,"
    " value text, profile_id text, channel text, first_seen_at timestamptz,"
    " last_seen_at timestamptz, source_event_id bigint, linked_by text, attached_to text)"
    " ON CONFLICT (workspace_id, kind, value) DO NOTHING"
)

_ADD_PROFILES = text(
    "INSERT INTO profiles (id, workspace_id, traits, trait_times, trait_sources,"
    " first_seen_at, last_seen_at, event_count, created_at, updated_at, merged_into)"
    " SELECT u.id, u.workspace_id, u.traits, u.trait_times, u.trait_sources,"
    " u.first_seen_at, u.last_seen_at, u.event_count, u.created_at, u.updated_at,"
    " u.merged_into FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS u(id text,"
    " workspace_id text, traits jsonb, trait_times jsonb, trait_sources jsonb,"
    " first_seen_at timestamptz, last_seen_at timestamptz, event_count int,"
    " created_at timestamptz, updated_at timestamptz, merged_into text)"
)


def _document(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {"rows": orjson.dumps(rows).decode()}


def update_profiles(session: Session, rows: list[dict[str, Any]], *, traits: bool) -> int:
    """Apply profile updates whose ``updated_at`` is unchanged; returns how many matched."""
    statement = _UPDATE_PROFILES_WITH_TRAITS if traits else _UPDATE_PROFILES
    result = session.execute(statement, _document(rows))
    return int(result.rowcount)  # type: ignore[attr-defined]


def add_profiles(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert a batch's new profiles."""
    session.execute(_ADD_PROFILES, _document(rows))


def add_identifiers(session: Session, rows: list[dict[str, Any]]) -> int:
    """Claim new identifiers; how many were still free (the others were taken meanwhile)."""
    result = session.execute(_ADD_IDENTIFIERS, _document(rows))
    return int(result.rowcount)  # type: ignore[attr-defined]


def touch_identifiers(session: Session, rows: list[dict[str, Any]]) -> None:
    """Move identifiers' last-seen forward (never back)."""
    session.execute(_TOUCH_IDENTIFIERS, _document(rows))


def add_type_counts(session: Session, rows: list[dict[str, Any]]) -> None:
    """Add per-type event counts and widen their first and latest times."""
    session.execute(_ADD_TYPE_COUNTS, _document(rows))


def add_profile_events(session: Session, rows: list[dict[str, Any]]) -> None:
    """Record which profile each event was counted in (an event already recorded is kept)."""
    session.execute(_ADD_PROFILE_EVENTS, _document(rows))
