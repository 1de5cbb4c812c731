"""Faults: ``kill -9`` of a worker in the middle of a batch, on PostgreSQL + RabbitMQ/Redis.

The mixed stream of :mod:`mixed_stream` is ingested first; then a worker (``ecrm worker``,
two pool processes) starts, and is killed with SIGKILL, pool and all, while it is
processing. A new worker drains the rest. The effects must be those of a run without the
fault (:func:`mixed_stream.check_effects`); the scenario's counts are printed.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from conftest import Hub, hub_processes
from mixed_stream import check_effects, ingested_hub, processed, stream, wait_processed

pytestmark = pytest.mark.timeout(300)


def kill_worker(hub: Hub) -> list[int]:
    """SIGKILL every process of ``ecrm worker`` (the Celery parent and its pool)."""
    worker = next(p for p in hub.processes if "worker" in p.args)
    pids = [
        pid
        for pid, line in hub_processes(hub.home).items()
        if pid == worker.pid or f"ppid={worker.pid} " in line
    ]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    worker.wait(timeout=10)
    hub.processes.remove(worker)
    return pids


@pytest.mark.parametrize("backend", ["postgres+rabbitmq", "postgres+redis"])
def test_kill_9_of_a_worker_mid_batch_changes_no_effect(hub_factory: Any, backend: str) -> None:
    web, pos, expected = stream()
    total = len(web) + len(pos)
    hub = ingested_hub(hub_factory, backend, web, pos)
    hub.start("worker")
    wait_processed(hub, 50, timeout=60)
    killed = kill_worker(hub)
    before = processed(hub)
    assert 0 < before < total, f"the kill did not land mid-stream: {before} of {total}"
    assert len(killed) >= 2, killed  # the parent and its pool

    hub.start("worker")
    wait_processed(hub, total, timeout=120)
    report = check_effects(hub, hub.database_url, expected, total)
    print(f"\nfault worker-kill-9 ({backend}): {report} processed_before_kill={before}")
