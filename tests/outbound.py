"""Helpers shared by the outbound delivery tests: a runtime, queueing, draining the log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from identity.views import event_views, find_profile_id
from personalization import action_view, enqueue, get_action, parse_request
from pipeline import Database, ingest, load_settings
from pipeline.events import get_event
from pipeline.outbox import relay
from workers.processing import process_batches
from workers.runtime import Runtime

WS = "default"


def runtime_for(db: Database, home: Path, **env: str) -> Runtime:
    """A runtime on ``db`` with these ``ECRM_*`` settings (no broker is used)."""
    settings = load_settings(
        {
            "ECRM_HOME": str(home),
            "ECRM_DATABASE_URL": db.engine.url.render_as_string(hide_password=False),
            **env,
        }
    )
    return Runtime(settings=settings, db=db)


def queue(runtime: Runtime, body: dict[str, Any], origin: str = "api") -> str:
    """Validate and enqueue an action as the API does; its id."""
    with runtime.db.write() as session:
        new = parse_request(
            session, WS, body, default_region=runtime.settings.default_region, origin=origin
        )
        return enqueue(session, WS, new).action.id


def view(runtime: Runtime, action_id: str) -> dict[str, Any]:
    with runtime.db.read() as session:
        action = get_action(session, WS, action_id)
        assert action is not None
        return action_view(action)


def store(db: Database, touchpoints: list[dict[str, Any]]) -> None:
    with db.write() as session:
        results = ingest(session, touchpoints, workspace_id=WS, default_region="US")
    assert all(r.status == "accepted" for r in results), results


def drain(db: Database) -> None:
    """Relay and process every queued batch, as the worker would."""
    published: list[list[int]] = []
    relay(db, published.append, batch_size=500, lease_seconds=60)
    for message in published:
        process_batches(db, message)


def event(db: Database, message_id: str) -> dict[str, Any] | None:
    """An event as the API shows it (with its profile once processed)."""
    with db.read() as session:
        record = get_event(session, WS, message_id)
        return event_views(session, WS, [record])[0] if record else None


def events_of(db: Database, action_id: str) -> list[dict[str, Any]]:
    """The delivery records of an action (sent and failures), oldest first."""
    from sqlalchemy import select

    from pipeline.models import Event

    with db.read() as session:
        ids = session.scalars(
            select(Event.message_id)
            .where(Event.workspace_id == WS, Event.message_id.like(f"action:{action_id}%"))
            .order_by(Event.id)
        ).all()
    return [e for e in (event(db, message_id) for message_id in ids) if e is not None]


def profile_of(db: Database, kind: str, value: str) -> str | None:
    with db.read() as session:
        return find_profile_id(session, WS, kind, value, "US")
