"""Faults: the broker restarts mid-stream and comes back empty (Redis and RabbitMQ).

Worse than a dropped connection (:mod:`test_broker_drop`): every message the broker held
(the queued batches, those a worker had taken but not acknowledged) is gone. The event
log and its outbox are the source of truth, so the relay publishes again every batch
whose lease ran out, and the effects must be those of a run without the fault
(:func:`mixed_stream.check_effects`).

- Redis: the hub's own ``redis-server`` (not the shared one, so the tests beside this one
  are untouched), killed with SIGKILL and started again with nothing saved.
- RabbitMQ: the shared broker cannot be restarted under other tests, so the hub's
  virtual host is deleted (every connection closed, every queue and message gone) and
  made again, as a broker that lost its data looks from the hub's side.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from conftest import Hub, free_port
from mixed_stream import HUB_ENV, check_effects, processed, send, stream, wait_processed

pytestmark = pytest.mark.timeout(300)


class PrivateRedis:
    """A ``redis-server`` of the test's own, that keeps nothing on disk."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.folder)),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if redis.Redis.from_url(self.url).ping():
                    return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def empty_vhost(broker_url: str) -> None:
    """Delete the URL's virtual host and make it again, empty (see the module doc)."""
    vhost = urlsplit(broker_url).path.lstrip("/")
    for args in (
        ["delete_vhost", vhost],
        ["add_vhost", vhost],
        ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
    ):
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True)


def run_through_restart(hub: Hub, restart: Any, label: str) -> None:
    web, pos, expected = stream(seed=21)
    total = len(web) + len(pos)
    hub.launch(("serve",), ("scheduler",))
    send(hub, web, pos)
    hub.start("worker")
    wait_processed(hub, 50, timeout=60)
    before = processed(hub)
    restart()
    assert before < total, f"the restart did not land mid-stream: {before} of {total}"
    wait_processed(hub, total, timeout=200)
    report = check_effects(hub, hub.database_url, expected, total)
    hub.assert_alive()  # reconnected, not crashed
    print(f"\nfault broker-restart-empty ({label}): {report} processed_before={before}")


def test_redis_restarted_empty_mid_stream_changes_no_effect(
    private_redis: PrivateRedis, tmp_path: Path, postgres_url: str
) -> None:
    env = {**HUB_ENV, "ECRM_WORKER_CONCURRENCY": "2"}
    hub = Hub(tmp_path / "home", postgres_url, private_redis.url, extra_env=env)
    try:

        def restart() -> None:
            private_redis.kill()
            time.sleep(2)  # the hub notices: its connections are refused for a while
            private_redis.start()

        run_through_restart(hub, restart, "postgres+redis")
    finally:
        hub.stop()


def test_rabbitmq_vhost_emptied_mid_stream_changes_no_effect(hub_factory: Any) -> None:
    hub: Hub = hub_factory("postgres+rabbitmq", **HUB_ENV, ECRM_WORKER_CONCURRENCY="2")
    run_through_restart(hub, lambda: empty_vhost(hub.broker_url), "postgres+rabbitmq")
