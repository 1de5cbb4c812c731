"""Faults: the broker drops every connection of the hub mid-stream (RabbitMQ and Redis).

Restarting the shared broker would hit the tests running beside this one, so the broker
closes the connections of this hub only, as a restart or a failover looks from the hub's
side: RabbitMQ closes every connection of the test's virtual host (``rabbitmqctl
close_connection``), Redis kills every client of the test's database number (``CLIENT
KILL ID``), twice, while the worker processes. Worker, scheduler and API reconnect on
their own; the effects must be those of a run without the fault
(:func:`mixed_stream.check_effects`).
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from mixed_stream import check_effects, ingested_hub, processed, stream, wait_processed

pytestmark = pytest.mark.timeout(300)


def drop_rabbitmq(broker_url: str) -> int:
    """Close every connection of the URL's virtual host; how many were closed."""
    vhost = urlsplit(broker_url).path.lstrip("/")
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "vhost", "name", "--formatter", "json"],
        check=True,
        capture_output=True,
        text=True,
    )
    names = [c["name"] for c in json.loads(listed.stdout or "[]") if c["vhost"] == vhost]
    for name in names:
        subprocess.run(
            ["rabbitmqctl", "-q", "close_connection", name, "fault test: broker drop"],
            capture_output=True,
        )
    return len(names)


def drop_redis(broker_url: str) -> int:
    """Kill every client connected to the URL's database number; how many were killed."""
    number = int(urlsplit(broker_url).path.lstrip("/") or 0)
    admin = redis.Redis.from_url(broker_url)
    try:
        me = admin.client_id()
        ids = [c["id"] for c in admin.client_list() if int(c["db"]) == number and c["id"] != me]
        for client_id in ids:
            admin.client_kill_filter(_id=client_id)
    finally:
        admin.close()
    return len(ids)


@pytest.mark.parametrize("backend", ["postgres+rabbitmq", "postgres+redis"])
def test_broker_dropping_the_hub_mid_stream_changes_no_effect(
    hub_factory: Any, backend: str
) -> None:
    web, pos, expected = stream(seed=12)
    total = len(web) + len(pos)
    drop = drop_rabbitmq if backend.endswith("rabbitmq") else drop_redis
    hub = ingested_hub(hub_factory, backend, web, pos)
    hub.start("worker")
    wait_processed(hub, 50, timeout=60)
    before = processed(hub)
    dropped = [drop(hub.broker_url)]
    time.sleep(1)
    dropped.append(drop(hub.broker_url))
    assert before < total, f"the drop did not land mid-stream: {before} of {total}"
    assert dropped[0] > 0, "no connection of the hub to drop"

    wait_processed(hub, total, timeout=180)
    report = check_effects(hub, hub.database_url, expected, total)
    hub.assert_alive()  # reconnected, not crashed
    print(
        f"\nfault broker-drop ({backend}): {report} processed_before={before} "
        f"connections_dropped={dropped}"
    )
