"""Celery tasks: thin, named, idempotent; each calls one function and declares its retries."""

from __future__ import annotations

from typing import Any

import structlog

from pipeline import TransientError
from workers.celery_app import PROCESS_BATCH, RELAY_OUTBOX, app
from workers.processing import process_batch as run_batch
from workers.processing import relay_outbox as run_relay
from workers.runtime import get_runtime

log = structlog.get_logger(__name__)


@app.task(name=PROCESS_BATCH, bind=True, max_retries=6)
def process_batch(self: Any, batch_id: int) -> None:
    """Process one batch of events (retried with backoff on transient errors)."""
    try:
        run_batch(get_runtime().db, batch_id)
    except TransientError as exc:
        countdown = min(2**self.request.retries, 60)
        log.warning("batch_retry", batch_id=batch_id, error=str(exc), countdown=countdown)
        raise self.retry(exc=exc, countdown=countdown) from exc


@app.task(name=RELAY_OUTBOX, ignore_result=True)
def relay_outbox() -> None:
    """Batch unbatched events, publish them, and re-publish batches past their due time."""
    run_relay(get_runtime())
