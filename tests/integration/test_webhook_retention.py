"""Retention of the delivery log and the change feed (``ECRM_WEBHOOK_RETENTION_DAYS``), on
real SQLite and PostgreSQL: finished history past the horizon goes with its attempts;
what is still owed (open deliveries, changes not yet fanned out) stays however old.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from test_webhook_delivery import change, endpoint, fan_out_now

from connectors.webhooks.models import WebhookAttempt, WebhookDelivery
from identity.models import ProfileChange
from pipeline import Database, load_settings
from workers.runtime import Runtime
from workers.webhooks_dispatch import prune

OLD = datetime.now(UTC) - timedelta(days=40)


def runtime_for(db: Database, home: Path, days: str = "30") -> Runtime:
    settings = load_settings(
        {
            "ECRM_HOME": str(home),
            "ECRM_DATABASE_URL": db.engine.url.render_as_string(hide_password=False),
            "ECRM_WEBHOOK_RETENTION_DAYS": days,
        }
    )
    return Runtime(settings=settings, db=db)


def test_retention_drops_finished_history_and_keeps_what_is_owed(
    any_db: Database, tmp_path: Path
) -> None:
    endpoint(any_db, "http://127.0.0.1:9/hook")
    profiles = [f"prof_ret{n}" for n in range(5)]
    for profile_id in profiles:
        change(any_db, "profile.tag_added", profile_id, tag="vip")
    assert fan_out_now(any_db) == 5
    unsent = [change(any_db, "profile.tag_added", "prof_late", tag=str(n)) for n in range(2)]
    now = datetime.now(UTC)
    # 0 delivered long ago, 1 failed long ago, 2 still retrying since long ago, 3 delivered
    # long ago but retried by hand today, 4 delivered today
    shape = {
        profiles[0]: ("delivered", OLD, OLD),
        profiles[1]: ("failed", OLD, OLD),
        profiles[2]: ("retrying", OLD, OLD),
        profiles[3]: ("delivered", OLD, now),
        profiles[4]: ("delivered", now, now),
    }
    with any_db.write() as session:
        for profile_id, (state, created, touched) in shape.items():
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.profile_id == profile_id)
                .values(state=state, created_at=created, updated_at=touched)
            )
        for delivery in session.scalars(select(WebhookDelivery)):
            session.add(
                WebhookAttempt(
                    workspace_id="default",
                    delivery_id=delivery.id,
                    number=1,
                    started_at=delivery.created_at,
                    status=500,
                    latency_ms=3.0,
                    outcome="retrying",
                    response="no",
                    error=None,
                )
            )
        session.execute(update(ProfileChange).values(created_at=OLD))

    pruned = prune(runtime_for(any_db, tmp_path))

    assert (pruned.deliveries, pruned.attempts, pruned.changes) == (2, 2, 5)
    with any_db.read() as session:
        kept = set(session.scalars(select(WebhookDelivery.profile_id)))
        attempts = session.scalar(select(func.count()).select_from(WebhookAttempt))
        changes = list(session.scalars(select(ProfileChange.id).order_by(ProfileChange.id)))
    assert kept == {profiles[2], profiles[3], profiles[4]}
    assert attempts == 3
    assert changes == unsent  # as old, but not fanned out yet: kept for the fan-out
    again = prune(runtime_for(any_db, tmp_path))
    assert (again.deliveries, again.attempts, again.changes) == (0, 0, 0)


def test_zero_days_keeps_everything(any_db: Database, tmp_path: Path) -> None:
    endpoint(any_db, "http://127.0.0.1:9/hook")
    change(any_db, "profile.tag_added", "prof_keep", tag="vip")
    assert fan_out_now(any_db) == 1
    with any_db.write() as session:
        session.execute(
            update(WebhookDelivery).values(state="delivered", created_at=OLD, updated_at=OLD)
        )
        session.execute(update(ProfileChange).values(created_at=OLD))
    pruned = prune(runtime_for(any_db, tmp_path, days="0"))
    assert (pruned.deliveries, pruned.changes) == (0, 0)
    with any_db.read() as session:
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 1
