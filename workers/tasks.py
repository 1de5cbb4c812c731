"""Celery tasks: thin, named, idempotent; each calls one function and declares its retries."""

from __future__ import annotations

from typing import Any

import structlog

from personalization.loyalty import LoyaltyConfig
from pipeline import TransientError
from workers.celery_app import DELIVER, PROCESS_BATCH, RELAY_ACTIONS, RELAY_OUTBOX, app
from workers.delivery import deliver as deliver_action
from workers.delivery import relay_actions as run_relay_actions
from workers.processing import is_transient, process_batches
from workers.processing import relay_outbox as run_relay
from workers.runtime import get_runtime

log = structlog.get_logger(__name__)


@app.task(name=PROCESS_BATCH, bind=True, max_retries=6)
def process_batch(self: Any, batch_ids: list[int] | int) -> None:
    """Process the batches a message names (retried with backoff on transient errors).

    A bare id is accepted too: messages published before batches were grouped.
    """
    ids = [batch_ids] if isinstance(batch_ids, int) else list(batch_ids)
    try:
        runtime = get_runtime()
        process_batches(
            runtime.db,
            ids,
            runtime.identity,
            loyalty_config=LoyaltyConfig.load(runtime.settings.loyalty_config),
            default_region=runtime.settings.default_region,
            channel_caps=runtime.settings.channel_caps,
        )
    except TransientError as exc:
        countdown = min(2**self.request.retries, 60)
        log.warning("batch_retry", batch_ids=ids, error=str(exc), countdown=countdown)
        raise self.retry(exc=exc, countdown=countdown) from exc


@app.task(name=RELAY_OUTBOX, ignore_result=True)
def relay_outbox() -> None:
    """Publish due batches (fresh, or lost past their lease) and quarantine exhausted ones."""
    run_relay(get_runtime())


@app.task(name=DELIVER, bind=True, max_retries=6)
def deliver(self: Any, action_id: str) -> None:
    """Deliver one action. Sending errors are recorded on the action (its own backoff);
    only database trouble retries the task here."""
    try:
        deliver_action(get_runtime(), action_id)
    except Exception as exc:
        if not is_transient(exc):
            raise
        countdown = min(2**self.request.retries, 60)
        log.warning("deliver_retry", action_id=action_id, error=str(exc), countdown=countdown)
        raise self.retry(exc=exc, countdown=countdown) from exc


@app.task(name=RELAY_ACTIONS, ignore_result=True)
def relay_actions() -> None:
    """Publish due actions (fresh, backed off, or lost past their lease)."""
    run_relay_actions(get_runtime())
