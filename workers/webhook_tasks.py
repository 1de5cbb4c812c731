"""Webhook tasks: ``ecrm.webhooks.dispatch`` (scheduler, every relay interval),
``ecrm.webhooks.deliver_endpoint`` (the webhook worker's thread pool) and
``ecrm.webhooks.prune`` (hourly: retention).

Why no Celery retries here: a delivery's retries live in the database (its attempts and
next attempt time), so they survive restarts and show in the delivery log; a task that
fails for database trouble is simply run again by the next dispatch.
"""

from __future__ import annotations

import structlog

from workers.celery_app import WEBHOOKS_DELIVER, WEBHOOKS_DISPATCH, WEBHOOKS_PRUNE, app
from workers.runtime import get_runtime
from workers.webhooks_dispatch import deliver, dispatch, prune

log = structlog.get_logger(__name__)


def _publish(endpoint_id: str) -> None:
    deliver_endpoint.apply_async(args=[endpoint_id], expires=300)


def _dispatch_webhooks() -> None:
    """Fan the change feed out into deliveries; start a round per endpoint with some due."""
    dispatch(get_runtime(), _publish)


def _deliver_endpoint(endpoint_id: str) -> None:
    """Send an endpoint's due deliveries (one round; a no-op if another round holds it)."""
    deliver(get_runtime(), endpoint_id)


def _prune_webhooks() -> None:
    """Drop finished deliveries and the passed change feed past the retention horizon."""
    prune(get_runtime())


# calls, not decorators: Celery has no type hints (see mypy's overrides in pyproject)
dispatch_webhooks = app.task(name=WEBHOOKS_DISPATCH, ignore_result=True)(_dispatch_webhooks)
deliver_endpoint = app.task(name=WEBHOOKS_DELIVER, ignore_result=True)(_deliver_endpoint)
prune_webhooks = app.task(name=WEBHOOKS_PRUNE, ignore_result=True)(_prune_webhooks)
