"""The real Segment Python client sends to the hub by changing only host and write key."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from conftest import WRITE_KEY
from segment.analytics.client import Client


@pytest.mark.parametrize("gzip", [False, True])
def test_segment_python_client_events_become_a_profile(hub_factory: Any, gzip: bool) -> None:
    hub = hub_factory("sqlite")
    hub.start("run")
    hub.wait_healthy()
    errors: list[Exception] = []
    client = Client(
        WRITE_KEY,
        host=hub.base_url,
        sync_mode=True,
        gzip=gzip,
        max_retries=1,
        on_error=lambda exc, _batch: errors.append(exc),
    )
    user = f"seg-{uuid.uuid4().hex[:8]}"
    client.identify(user, {"email": f"{user}@Example.com", "name": "Ada"}, anonymous_id="a-1")
    for n in range(3):
        client.track(user, "Product Viewed", {"sku": f"S{n}"})
    client.page(user, "Docs", "Install")
    client.flush()
    assert not errors
    deadline = time.monotonic() + 30
    with hub.admin() as admin:
        while True:
            response = admin.get("/v1/profiles", params={"identifier": f"email:{user}@example.com"})
            if response.status_code == 200 and response.json()["event_count"] == 5:
                break
            assert time.monotonic() < deadline, response.text
            time.sleep(0.2)
    profile = response.json()
    assert profile["traits"]["name"] == "Ada"
    assert {(i["kind"], i["value"]) for i in profile["identifiers"]} >= {
        ("user_id", user),
        ("anonymous_id", "a-1"),
        ("email", f"{user}@example.com"),
    }
