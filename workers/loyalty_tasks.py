"""The scheduler's loyalty job: ``ecrm.loyalty.expire`` (Celery beat, hourly) and its CLI twin.

Why one transaction per few hundred profiles: each expiry locks a profile's account row;
short transactions keep the API's redemptions from waiting behind a long sweep.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy import select

from personalization.loyalty import ExpiryRun, LoyaltyConfig, expire_due
from pipeline.envelope import utcnow
from pipeline.models import Workspace
from workers.celery_app import LOYALTY_EXPIRE, app
from workers.runtime import Runtime, get_runtime

log = structlog.get_logger(__name__)
CHUNK = 200


def expire_everywhere(runtime: Runtime, now: datetime | None = None) -> ExpiryRun:
    """Expire the due points of every workspace; the totals."""
    now = now or utcnow()
    config = LoyaltyConfig.load(runtime.settings.loyalty_config)
    with runtime.db.read() as session:
        workspaces = list(session.scalars(select(Workspace.id).order_by(Workspace.id)))
    profiles = entries = points = 0
    for workspace_id in workspaces:
        while True:
            with runtime.db.write() as session:
                run = expire_due(session, workspace_id, now, config=config, limit=CHUNK)
            profiles, entries, points = (
                profiles + run.profiles,
                entries + run.entries,
                points + run.points,
            )
            if run.profiles < CHUNK:
                break
    if entries:
        log.info("loyalty_points_expired", profiles=profiles, entries=entries, points=points)
    return ExpiryRun(profiles=profiles, entries=entries, points=points)


def _expire_loyalty_points() -> None:
    """Expire the points whose date has come (idempotent; runs hourly)."""
    expire_everywhere(get_runtime())


# a call, not a decorator: Celery has no type hints (see mypy's overrides in pyproject)
expire_loyalty_points = app.task(name=LOYALTY_EXPIRE, ignore_result=True)(_expire_loyalty_points)
