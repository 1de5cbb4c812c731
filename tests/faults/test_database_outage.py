"""Faults: PostgreSQL unreachable for 30 seconds mid-stream, then back, on + RabbitMQ.

The hub (``ecrm serve``, ``ecrm scheduler``, ``ecrm worker``) reaches PostgreSQL through a
proxy the test cuts (:class:`tcp_proxy.TcpProxy`): every connection is closed and new ones
are refused for 30 s while the worker is processing. Meanwhile ``/healthz`` answers 503 and
ingest refuses requests (a client keeps them and retries, as Segment's libraries do).
Afterwards everything drains with no manual step, and the effects are those of a run
without the outage (:func:`mixed_stream.check_effects`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Hub
from mixed_stream import (
    HUB_ENV,
    check_effects,
    post_stream,
    processed,
    send,
    stream,
    wait_processed,
)
from tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(300)

OUTAGE_SECONDS = 30


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    found = TcpProxy(("127.0.0.1", 5432))
    yield found
    found.stop()


def test_a_30_second_database_outage_loses_and_doubles_nothing(
    tmp_path: Path, postgres_url: str, rabbit_url: str, proxy: TcpProxy
) -> None:
    web, pos, expected = stream(seed=30)
    total = len(web) + len(pos)
    first, later = web[: len(web) // 2], web[len(web) // 2 :]
    proxied = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    assert proxied != postgres_url
    hub = Hub(
        tmp_path / "home",
        proxied,
        rabbit_url,
        extra_env=HUB_ENV,
    )
    try:
        hub.launch(("serve",), ("scheduler",), ("worker",))
        send(hub, first, [])
        wait_processed(hub, 50, timeout=60)

        before = processed(hub)
        proxy.outage(OUTAGE_SECONDS)
        cut = time.monotonic()
        health = httpx.get(f"{hub.base_url}/healthz", timeout=30).status_code
        refused = try_ingest(hub, later[:50])
        while time.monotonic() - cut < OUTAGE_SECONDS:
            time.sleep(0.5)

        post_stream(hub, later, pos)  # the client's retry: everything it was refused
        wait_processed(hub, total, timeout=180)
        report = check_effects(hub, postgres_url, expected, total)
    finally:
        hub.stop()
    print(
        f"\nfault database-outage-{OUTAGE_SECONDS}s: {report} processed_before={before} "
        f"healthz_during={health} ingest_during={refused.status_code} "
        f"refused_connections={proxy.refused}"
    )
    assert health == 503
    # not accepted: a 503 problem saying when to retry; the client keeps it and sends again
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["Retry-After"]) > 0
    assert proxy.refused > 0  # the hub did try to reconnect during the outage


def try_ingest(hub: Hub, messages: list[dict[str, Any]]) -> httpx.Response:
    """One ``/v1/batch`` during the outage."""
    with hub.client() as client:
        return client.post("/v1/batch", json={"batch": messages})
