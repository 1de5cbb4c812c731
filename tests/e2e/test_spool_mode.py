"""``ECRM_INGEST_MODE=spool`` end to end: the real Segment client, refusals, a kill -9.

The API answers after checking the messages' shape and storing the request; the worker
maps and validates it. What a client sees and what must hold:

- events sent by ``segment-analytics-python`` become a profile, as in validate mode;
- a message refused at the door is answered with its index; one refused only when the
  worker maps it (an unreadable timestamp) is listed by ``GET /v1/ingest/rejections``;
- an answered request is durable: ``ecrm serve`` killed with SIGKILL before any worker
  ran loses nothing, and the events are processed once a worker starts.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import time
import uuid
from typing import Any

import pytest
from conftest import WRITE_KEY, Hub
from segment.analytics.client import Client

pytestmark = pytest.mark.timeout(180)


def profile(hub: Hub, identifier: str, events: int, timeout: float = 30) -> dict[str, Any]:
    """The profile found by ``identifier`` once it counts ``events`` events."""
    deadline = time.monotonic() + timeout
    with hub.admin() as admin:
        while True:
            found = admin.get("/v1/profiles", params={"identifier": identifier})
            if found.status_code == 200 and found.json()["event_count"] == events:
                return dict(found.json())
            assert time.monotonic() < deadline, (found.text, hub.logs()[-3000:])
            time.sleep(0.2)


def test_spooled_events_from_the_segment_client_become_a_profile(hub_factory: Any) -> None:
    hub = hub_factory("sqlite", ECRM_INGEST_MODE="spool")
    hub.launch(("run",))
    errors: list[Exception] = []
    client = Client(
        WRITE_KEY,
        host=hub.base_url,
        sync_mode=True,
        gzip=True,
        max_retries=1,
        on_error=lambda exc, _batch: errors.append(exc),
    )
    user = f"spool-{uuid.uuid4().hex[:8]}"
    client.identify(user, {"email": f"{user}@Example.com", "name": "Ada"}, anonymous_id="a-1")
    for n in range(3):
        client.track(user, "Product Viewed", {"sku": f"S{n}"})
    client.flush()
    assert not errors
    found = profile(hub, f"email:{user}@example.com", 4)
    assert found["traits"]["name"] == "Ada"
    assert found["channels"] == {"web": 4}

    with hub.client() as http:
        answer = http.post(
            "/v1/batch",
            json={
                "batch": [
                    {"type": "track", "event": "Order Completed", "userId": user},
                    {"type": "track", "userId": user},  # no event name
                    {"type": "page", "userId": user, "messageId": f"{user}-late", "timestamp": "x"},
                    {"type": "jump", "userId": user},
                ]
            },
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["success"] is True and body["spooled"] is True and body["accepted"] == 2
        assert [(r["index"], r["field"]) for r in body["rejected"]] == [(1, "event"), (3, "type")]
        nothing = http.post("/v1/batch", json={"batch": [{"type": "track", "userId": user}]})
        assert nothing.status_code == 400 and nothing.json()["rejected"][0]["index"] == 0
    profile(hub, f"user_id:{user}", 5)  # the order; the page with its bad timestamp is not
    with hub.admin() as admin:
        deadline = time.monotonic() + 10
        while not (listed := admin.get("/v1/ingest/rejections").json())["rejections"]:
            assert time.monotonic() < deadline, listed
            time.sleep(0.2)
    [late] = listed["rejections"]
    assert (late["index"], late["message_id"], late["field"]) == (2, f"{user}-late", "timestamp")
    assert listed["mode"] == "spool" and listed["spooled"]["requests"] == 0
    with hub.client() as anonymous:
        assert anonymous.get("/v1/ingest/rejections").status_code == 401


def test_an_answered_spooled_request_survives_a_kill_of_the_api(hub_factory: Any) -> None:
    # a kill between the relay's claim and its publish leaves a batch due after its lease
    hub = hub_factory("sqlite", ECRM_INGEST_MODE="spool", ECRM_BATCH_LEASE_SECONDS="3")
    hub.launch(("serve",))  # no worker, no scheduler: nothing is expanded yet
    user = f"kill-{uuid.uuid4().hex[:8]}"
    messages = [
        {"type": "track", "event": "Page Scrolled", "userId": user, "messageId": f"{user}-{n}"}
        for n in range(300)
    ]
    with hub.client() as http:
        for start in range(0, 300, 100):
            answer = http.post("/v1/batch", json={"batch": messages[start : start + 100]})
            assert answer.status_code == 200 and answer.json()["accepted"] == 100
    with hub.admin() as admin:
        spool = admin.get("/v1/ingest/rejections").json()["spooled"]
        assert (spool["requests"], spool["messages"]) == (3, 300)
        assert admin.get(f"/v1/events/{user}-0").status_code == 404  # not expanded yet
    [serve] = hub.processes
    os.kill(serve.pid, signal.SIGKILL)
    serve.wait()
    hub.processes.clear()
    hub.launch(("run",))
    found = profile(hub, f"user_id:{user}", 300)
    assert found["channels"] == {"web": 300}
    with hub.client() as http:  # sent again (a client retrying): still 300, not 600
        answer = http.post("/v1/batch", json={"batch": messages[:100]})
        assert answer.status_code == 200
    time.sleep(2)
    assert profile(hub, f"user_id:{user}", 300)["event_count"] == 300


def test_spool_mode_answers_bad_requests_like_validate_mode(hub_factory: Any) -> None:
    origin = "https://shop.example"
    hub = hub_factory(
        "sqlite",
        ECRM_INGEST_MODE="spool",
        ECRM_CORS_ORIGINS=origin,
        ECRM_MAX_REQUEST_BYTES="4096",
        ECRM_MAX_EVENT_BYTES="1024",
    )
    hub.launch(("serve",))
    one = {"type": "track", "event": "Clicked", "userId": "u1"}
    with hub.client() as http:
        bad_key = http.post("/v1/batch", json={"batch": [one]}, auth=("wrong-key-123", ""))
        assert bad_key.status_code == 401
        assert bad_key.headers["content-type"] == "application/problem+json"
        too_big = http.post("/v1/batch", json={"batch": [one] * 100})
        assert too_big.status_code == 413 and too_big.json()["field"] == "body"
        broken = http.post("/v1/batch", content=b'{"batch": [', headers={"Content-Type": "x"})
        assert broken.status_code == 400 and broken.json()["field"] == "body"
        shapeless = http.post("/v1/batch", json={"events": []})
        assert shapeless.status_code == 400 and shapeless.json()["field"] == "batch"
        big_one = {**one, "properties": {"text": "x" * 2000}}
        mixed = http.post("/v1/batch", json={"batch": [one, big_one]})
        assert mixed.status_code == 200, mixed.text
        assert [(r["index"], r["field"]) for r in mixed.json()["rejected"]] == [(1, "message")]
        compressed = http.post(
            "/v1/b",  # analytics.js's short path, gzip-encoded as its clients may send
            content=gzip.compress(json.dumps({"batch": [one]}).encode()),
            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
        )
        assert compressed.status_code == 200 and compressed.json()["accepted"] == 1
        in_body = http.post(  # the write key in the body, as some clients send it
            "/v1/import", json={"batch": [one], "writeKey": WRITE_KEY}, auth=None
        )
        assert in_body.status_code == 200, in_body.text
        preflight = http.options(
            "/v1/batch",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers.get("access-control-allow-origin") == origin
        browser = http.post("/v1/batch", json={"batch": [one]}, headers={"Origin": origin})
        assert browser.status_code == 200
        assert browser.headers.get("access-control-allow-origin") == origin
    database = hub.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        bodies = [bytes(row[0]) for row in conn.execute("SELECT body FROM spooled_requests")]
    assert len(bodies) == 4 and not any(WRITE_KEY.encode() in body for body in bodies)
