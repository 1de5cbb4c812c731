"""Migrations carry existing data over, on SQLite and PostgreSQL, both ways."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from pipeline import Database
from pipeline.events import list_events, status_counts
from pipeline.schema import downgrade, upgrade

T = "2026-11-01 10:00:00.000000"


def seed_0001(db: Database) -> None:
    """Events in every state the 0001 schema could hold them in."""
    with db.engine.begin() as conn:
        done, queued = (
            conn.execute(
                text(
                    "INSERT INTO batches (workspace_id, status, event_count, created_at, due_at, "
                    "publish_count, attempts) VALUES ('default', :s, :n, :t, :t, 1, 0) RETURNING id"
                ),
                {"s": status, "n": n, "t": T},
            ).scalar_one()
            for status, n in (("done", 2), ("queued", 1))
        )
        rows = [
            ("processed-1", "processed", done, None),
            ("failed-1", "failed", done, "boom"),
            ("queued-1", "pending", queued, None),
            ("unbatched-1", "pending", None, None),
            ("unbatched-2", "pending", None, None),
        ]
        for message_id, status, batch_id, error in rows:
            conn.execute(
                text(
                    "INSERT INTO events (workspace_id, message_id, channel, type, occurred_at, "
                    "received_at, source, identifiers, traits, properties, context, status, "
                    "batch_id, attempts, error) VALUES ('default', :m, 'web', 'page.viewed', :t, "
                    ":t, 'api', '{\"user_id\": \"u\"}', '{}', '{}', '{}', :s, :b, 0, :e)"
                ),
                {"m": message_id, "s": status, "b": batch_id, "e": error, "t": T},
            )


@pytest.mark.parametrize("url_fixture", ["sqlite_url", "postgres_url"])
def test_0002_derives_event_state_from_batches_and_failures(
    url_fixture: str, request: pytest.FixtureRequest
) -> None:
    db = Database.connect(request.getfixturevalue(url_fixture))
    try:
        upgrade(db, "0001")
        seed_0001(db)
        upgrade(db)
        with db.read() as session:
            states = {
                r.event.message_id: (r.status, r.error) for r in list_events(session, "default")
            }
            counts = status_counts(session)
        assert states == {
            "processed-1": ("processed", None),
            "failed-1": ("failed", "boom"),
            "queued-1": ("pending", None),
            "unbatched-1": ("pending", None),
            "unbatched-2": ("pending", None),
        }
        assert counts == {"pending": 3, "processed": 1, "failed": 1}
        downgrade(db, "0001")
        with db.engine.connect() as conn:
            back = dict(conn.execute(text("SELECT message_id, status FROM events")).all())
        assert back == {
            "processed-1": "processed",
            "failed-1": "failed",
            "queued-1": "pending",
            "unbatched-1": "pending",
            "unbatched-2": "pending",
        }
        upgrade(db)  # and forward again
    finally:
        db.dispose()


@pytest.mark.parametrize("url_fixture", ["sqlite_url", "postgres_url"])
def test_migrations_build_exactly_the_schema_the_models_declare(
    url_fixture: str, request: pytest.FixtureRequest
) -> None:
    """A table, column or index added to a model without a migration (or the reverse)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    import connectors.email.models
    import connectors.webhooks.models  # noqa: F401
    import identity.models  # noqa: F401
    import personalization.actions
    import personalization.consent
    import personalization.labels
    import personalization.loyalty
    import personalization.rules  # noqa: F401
    from pipeline.db import Base

    db = Database.connect(request.getfixturevalue(url_fixture))
    try:
        upgrade(db)
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": False})
            diff = [
                change
                for change in compare_metadata(context, Base.metadata)
                if not (isinstance(change, tuple) and change[0] == "remove_table")
                or change[1].name != "alembic_version"
            ]
        assert diff == []
    finally:
        db.dispose()


@pytest.mark.parametrize("url_fixture", ["sqlite_url", "postgres_url"])
def test_0017_0018_keep_firings_and_fill_profile_event_types(
    url_fixture: str, request: pytest.FixtureRequest
) -> None:
    """Down to 0016 and up again: firings, ledger and timeline rows survive, types filled."""
    from personalization.rules import apply_rule_set, check_rule_set
    from pipeline import ingest
    from pipeline.outbox import relay
    from workers.processing import process_batches

    db = Database.connect(request.getfixturevalue(url_fixture))
    try:
        upgrade(db)
        rules = {
            "rules": [
                {
                    "id": "points",
                    "name": "points",
                    "trigger": {"types": ["order.completed"]},
                    "actions": [{"type": "award_points", "points": 5}],
                }
            ]
        }
        items = [
            {
                "message_id": f"m-{n}",
                "channel": "pos",
                "type": "order.completed" if n % 2 else "page.viewed",
                "occurred_at": f"2026-11-0{1 + n}T10:00:00Z",
                "identifiers": {"email": "ann@example.com"},
            }
            for n in range(4)
        ]
        with db.write() as session:
            apply_rule_set(session, "default", check_rule_set(rules), source="test")
            ingest(session, items, workspace_id="default", default_region="US")
        published: list[list[int]] = []
        relay(db, published.append, batch_size=500, lease_seconds=60)
        for message in published:
            process_batches(db, message)
        query = text(
            "SELECT e.message_id, pe.type, e.type FROM profile_events pe"
            " JOIN events e ON e.id = pe.event_id ORDER BY e.message_id"
        )
        with db.engine.connect() as conn:
            before = conn.execute(query).all()
        assert [(m, t) for m, t, _ in before] == [
            ("m-0", "page.viewed"),
            ("m-1", "order.completed"),
            ("m-2", "page.viewed"),
            ("m-3", "order.completed"),
        ]
        downgrade(db, "0016")
        upgrade(db)
        with db.engine.connect() as conn:
            after = conn.execute(query).all()
            firings = conn.execute(text("SELECT count(*) FROM rule_firings")).scalar_one()
            points = conn.execute(text("SELECT sum(points) FROM loyalty_entries")).scalar_one()
        assert after == before and all(copied == original for _, copied, original in after)
        assert (firings, points) == (2, 10)
    finally:
        db.dispose()
