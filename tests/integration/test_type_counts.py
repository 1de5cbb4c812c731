"""``profile_type_counts`` always equals what the timeline says, through merges and unmerges.

History conditions read a profile's past from these counts (less its recent rows), so a
count that drifted from ``profile_events`` would make rules fire on a wrong history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import fresh_postgres, migrated
from sqlalchemy import func, select
from test_unmerge import CONFIG, WS, ev, profile_holding, run

from identity.models import ProfileEvent, ProfileTypeCount
from identity.unmerge import unmerge
from pipeline import Database
from pipeline.models import Event
from pipeline.schema import downgrade, upgrade


def kept(db: Database) -> set[tuple[Any, ...]]:
    """The counts as kept: (profile, type, channel, count, first, last)."""
    c = ProfileTypeCount
    with db.read() as session:
        rows = session.execute(
            select(c.profile_id, c.type, c.channel, c.count, c.first_at, c.last_at)
        ).all()
    return {tuple(row) for row in rows}


def derived(db: Database) -> set[tuple[Any, ...]]:
    """The same, counted from the timeline and the events' channels."""
    pe = ProfileEvent
    with db.read() as session:
        rows = session.execute(
            select(
                pe.profile_id,
                pe.type,
                Event.channel,
                func.count(),
                func.min(pe.occurred_at),
                func.max(pe.occurred_at),
            )
            .join(Event, Event.id == pe.event_id)
            .group_by(pe.profile_id, pe.type, Event.channel)
        ).all()
    return {tuple(row) for row in rows}


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/counts.db"
        return
    with fresh_postgres() as found:
        yield found


def test_counts_follow_merges_and_unmerges(url: str) -> None:
    a, p, b = "ann@example.com", "+14155550101", "ann.b@example.com"
    db = migrated(url)
    try:
        run(
            db,
            [ev(0, email=a), ev(5, email=a)],
            [ev(1, source="pos-1", phone=p), ev(2, source="pos-1", phone=p)],
            [ev(-30, email=b)],  # a third person, earlier than the others
        )
        assert len({row[0] for row in kept(db)}) == 3
        assert kept(db) == derived(db)
        # one event joins the email's and the phone's profiles; one more joins the third
        run(db, [ev(3, email=a, phone=p)], [ev(4, source="pos-1", phone=p, email=b)])
        assert len({row[0] for row in kept(db)}) == 1
        assert kept(db) == derived(db)
        survivor = profile_holding(db, "email", a)
        with db.write() as session:
            unmerge(
                session,
                WS,
                survivor,
                identifier=("phone", p),
                reason="wrong number",
                requested_by="ops",
                config=CONFIG,
            )
        assert len({row[0] for row in kept(db)}) >= 2
        assert kept(db) == derived(db)
        run(db, [ev(6, source="pos-1", phone=p), ev(7, email=a)])  # and later events
        assert kept(db) == derived(db)
        counted = sum(row[3] for row in kept(db))
        with db.read() as session:
            assert counted == session.scalar(select(func.count()).select_from(ProfileEvent)) == 9
    finally:
        db.dispose()


def test_the_migration_fills_the_counts_from_the_timeline(url: str) -> None:
    db = migrated(url)
    try:
        run(
            db,
            [ev(0, email="c@example.com"), ev(1, source="pos-1", email="c@example.com")],
            [ev(2, source="pos-1", phone="+14155550102"), ev(3, email="d@example.com")],
        )
        before = kept(db)
        assert before == derived(db) and len(before) == 4
        downgrade(db, "0018")
        upgrade(db)
        assert kept(db) == before
    finally:
        db.dispose()
