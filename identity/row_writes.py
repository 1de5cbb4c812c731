"""SQLite (and any database without set-based JSON expansion): a plan's writes row by row.

The same four functions as :mod:`identity.pg_writes`, with the same guards, so
:func:`identity.resolve.write_plan` only picks the module. On SQLite an ``executemany``
runs in-process without round trips, so row by row is the cheap form there.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session

from identity.models import CHANNEL_COUNTS, IDENTIFIERS, PROFILE_EVENTS, PROFILES
from pipeline import dialect_insert


def update_profiles(session: Session, rows: list[dict[str, Any]], *, traits: bool) -> int:
    """Apply profile updates whose ``updated_at`` is unchanged; returns how many matched."""
    values: dict[str, Any] = {
        "event_count": PROFILES.c.event_count + bindparam("n"),
        "first_seen_at": bindparam("first"),
        "last_seen_at": bindparam("last"),
        "updated_at": bindparam("now"),
    }
    if traits:
        values.update(traits=bindparam("traits"), trait_times=bindparam("times"))
    result = session.execute(
        update(PROFILES)
        .where(PROFILES.c.id == bindparam("pid"), PROFILES.c.updated_at == bindparam("seen"))
        .values(**values),
        rows,
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def touch_identifiers(session: Session, rows: list[dict[str, Any]]) -> None:
    """Move identifiers' last-seen forward (never back, whoever wrote meanwhile)."""
    session.execute(
        update(IDENTIFIERS)
        .where(IDENTIFIERS.c.id == bindparam("rid"), IDENTIFIERS.c.last_seen_at < bindparam("seen"))
        .values(last_seen_at=bindparam("seen")),
        rows,
    )


def add_channel_counts(session: Session, rows: list[dict[str, Any]]) -> None:
    """Add per-channel event counts (rows are unique per profile and channel)."""
    stmt = dialect_insert(session)(CHANNEL_COUNTS)
    stmt = stmt.on_conflict_do_update(
        index_elements=["workspace_id", "profile_id", "channel"],
        set_={"count": CHANNEL_COUNTS.c.count + stmt.excluded.count},
    )
    session.execute(stmt, rows)


def add_profile_events(session: Session, rows: list[dict[str, Any]]) -> None:
    """Record which profile each event was counted in (an event already recorded is kept)."""
    stmt = dialect_insert(session)(PROFILE_EVENTS).on_conflict_do_nothing(
        index_elements=["event_id"]
    )
    session.execute(stmt, rows)
