"""Run the outbox relay in the API process right after events are committed.

Why: the scheduler's periodic relay guarantees delivery, but waiting for its tick would
add seconds of latency. A background thread woken after each ingest (and lingering a few
milliseconds so concurrent requests share a batch) publishes new batches at once.
"""

from __future__ import annotations

import threading
import time

import structlog

from workers.processing import relay_outbox
from workers.runtime import Runtime

log = structlog.get_logger(__name__)


class RelayTrigger:
    """A daemon thread that relays when notified (and every few seconds regardless)."""

    def __init__(self, runtime: Runtime, *, linger_seconds: float = 0.02) -> None:
        self._runtime = runtime
        self._linger = linger_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ecrm-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """New events were committed."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self._runtime.settings.relay_interval_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            time.sleep(self._linger)
            try:
                relay_outbox(self._runtime, sweep=False)
            except Exception as exc:  # the scheduler's sweep catches up later
                log.error("relay_failed", error=str(exc))
