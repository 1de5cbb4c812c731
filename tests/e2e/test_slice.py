"""End-to-end slice: Segment messages over HTTP -> event log -> worker -> profiles.

The hub runs as real, separate processes (``ecrm serve`` and ``ecrm worker --beat``) on
each backend; nothing is mocked. Every message id is a fresh uuid, so expectations are
exact even when databases are shared.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from conftest import BACKENDS, Hub, basic_auth, hub_processes

PROCESS_TIMEOUT = 60.0  # seconds for the worker to process what a test sent
BASE_TIME = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def wait_processed(
    admin: httpx.Client, message_ids: list[str], hub: Hub, timeout: float = PROCESS_TIMEOUT
) -> dict[str, Any]:
    """Poll ``GET /v1/events/{id}`` until every event is processed; returns their views."""
    views: dict[str, Any] = {}
    waiting = list(message_ids)
    deadline = time.monotonic() + timeout
    while waiting:
        still: list[str] = []
        for message_id in waiting:
            try:
                response = admin.get(f"/v1/events/{message_id}")
            except httpx.HTTPError as exc:
                hub.assert_alive()
                raise AssertionError(f"API unreachable: {exc!r}\n{hub.logs()}") from exc
            assert response.status_code == 200, response.text
            view = response.json()
            assert view["status"] != "failed", view
            if view["status"] == "processed":
                views[message_id] = view
            else:
                still.append(message_id)
        waiting = still
        if waiting:
            assert time.monotonic() < deadline, (
                f"{len(waiting)} events not processed after {timeout}s\n{hub.logs()}"
            )
            time.sleep(0.3)
    return views


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def same_instant(actual: str, expected: datetime) -> bool:
    parsed = datetime.fromisoformat(actual)
    if parsed.tzinfo is None:  # a naive time from the API would be a bug, but say so clearly
        return False
    return parsed == expected


@dataclass
class Person:
    """What the test sent for one expected profile."""

    user_id: str | None = None
    anonymous_id: str | None = None
    times: list[datetime] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)

    @property
    def lookup(self) -> str:
        return f"user_id:{self.user_id}" if self.user_id else f"anonymous_id:{self.anonymous_id}"


@dataclass
class Scenario:
    """One ``/v1/track`` message, one ``/v1/batch`` body, and the profiles they must yield."""

    track: dict[str, Any]
    batch: list[dict[str, Any]]
    people: dict[str, Person]
    email: str
    phone: str
    linked_anonymous_id: str
    traits: dict[str, Any]

    @property
    def message_ids(self) -> list[str]:
        return [m["messageId"] for m in [self.track, *self.batch]]


def build_scenario() -> Scenario:
    """Four known users and two anonymous visitors, ~300 messages in all.

    ``alice`` also gets an identify (traits with an email and a phone written the way
    people type them), an event carrying both her anonymousId and userId (a fresh
    anonymousId, so it joins her profile whatever the processing order), and one event
    whose userId has stray spaces (normalized to the same identifier).
    """
    tag = uuid.uuid4().hex[:10]
    people = {name: Person(user_id=f"{name}-{tag}") for name in ("alice", "bob", "carol", "dave")}
    people["anon1"] = Person(anonymous_id=f"anon1-{tag}")
    people["anon2"] = Person(anonymous_id=f"anon2-{tag}")
    clock = iter(BASE_TIME + timedelta(seconds=7 * i, milliseconds=123) for i in range(10_000))

    def message(who: str, kind: str, **extra: Any) -> dict[str, Any]:
        person, at = people[who], next(clock)
        msg: dict[str, Any] = {"type": kind, "messageId": str(uuid.uuid4()), "timestamp": iso(at)}
        if person.user_id:
            msg["userId"] = person.user_id
        if person.anonymous_id:
            msg["anonymousId"] = person.anonymous_id
        msg.update(extra)
        person.times.append(at)
        person.message_ids.append(msg["messageId"])
        return msg

    track = message("alice", "track", event="Signed Up", properties={"plan": "free"})
    traits = {
        "name": "Alice Example",
        "email": f"  Alice.{tag}@Example.COM ",
        "phone": "(415) 555-0123",
        "plan": "pro",
    }
    batch = [message("alice", "identify", traits=traits)]
    linked = f"anon-alice-{tag}"
    batch.append(message("alice", "track", event="Product Viewed", anonymousId=linked))
    batch.append(message("alice", "page", name="Pricing", userId=f"  {people['alice'].user_id} "))
    rounds = {"alice": 60, "bob": 50, "carol": 45, "dave": 40, "anon1": 35, "anon2": 30}
    for i in range(max(rounds.values())):
        for who, n in rounds.items():
            if i < n:
                if i % 3 == 0:
                    batch.append(message(who, "page", name=f"Page {i}", properties={"i": i}))
                else:
                    batch.append(message(who, "track", event="Product Viewed", properties={"i": i}))
    return Scenario(
        track=track,
        batch=batch,
        people=people,
        email=f"alice.{tag}@example.com",
        phone="+14155550123",
        linked_anonymous_id=linked,
        traits=traits,
    )


def metric(text: str, name: str, labels: str) -> float:
    series = f"{name}{{{labels}}}" if labels else name
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match, f"{series} not in /metrics:\n{text}"
    return float(match.group(1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_segment_messages_become_profiles(hub_factory: Any, backend: str) -> None:
    hub: Hub = hub_factory(backend)
    hub.launch(("serve",), ("worker", "--beat"))
    scenario = build_scenario()
    total = len(scenario.message_ids)
    auth = {"Authorization": basic_auth()}

    with httpx.Client(base_url=hub.base_url, timeout=30) as api, hub.admin() as admin:
        health = api.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "database": "ok", "broker": "ok"}

        response = api.post("/v1/track", json=scenario.track, headers=auth)
        assert response.status_code == 200, response.text
        assert response.json() == {"success": True, "status": "accepted"}
        response = api.post("/v1/batch", json={"batch": scenario.batch}, headers=auth)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "success": True,
            "accepted": len(scenario.batch),
            "duplicates": 0,
            "rejected": [],
        }

        events = wait_processed(admin, scenario.message_ids, hub)
        profiles = check_profiles(admin, scenario, events)

        # Sending everything again is recognised as duplicates and counts nothing twice.
        response = api.post("/v1/track", json=scenario.track, headers=auth)
        assert response.status_code == 200, response.text
        assert response.json() == {"success": True, "status": "duplicate"}
        response = api.post("/v1/batch", json={"batch": scenario.batch}, headers=auth)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "success": True,
            "accepted": 0,
            "duplicates": len(scenario.batch),
            "rejected": [],
        }
        time.sleep(3)  # several relay intervals (0.5 s): a double count would show by now
        for name, person in scenario.people.items():
            again = admin.get("/v1/profiles", params={"identifier": person.lookup}).json()
            assert again["event_count"] == profiles[name]["event_count"], name
            assert again["channels"] == profiles[name]["channels"], name
        for message_id in scenario.message_ids[:5]:
            view = admin.get(f"/v1/events/{message_id}").json()
            assert view["status"] == "processed"
            assert view["processed_at"] == events[message_id]["processed_at"]

        text = api.get("/metrics").text
        assert metric(text, "ecrm_events", 'status="processed"') == total
        assert metric(text, "ecrm_events", 'status="pending"') == 0
        assert metric(text, "ecrm_events", 'status="failed"') == 0
        assert metric(text, "ecrm_events_duplicate_total", "") == total
        assert metric(text, "ecrm_ingest_request_seconds_count", "") == 4  # track+batch, twice

        health = api.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def check_profiles(
    admin: httpx.Client, scenario: Scenario, events: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Every expected profile is exact; returns the profiles by person name."""
    profiles: dict[str, dict[str, Any]] = {}
    for name, person in scenario.people.items():
        response = admin.get("/v1/profiles", params={"identifier": person.lookup})
        assert response.status_code == 200, (name, response.text)
        profile = response.json()
        count = len(person.message_ids)
        assert profile["event_count"] == count, name
        assert profile["channels"] == {"web": count}, name
        assert same_instant(profile["first_seen_at"], min(person.times)), (name, profile)
        assert same_instant(profile["last_seen_at"], max(person.times)), (name, profile)
        kinds = {(i["kind"], i["value"]) for i in profile["identifiers"]}
        if person.user_id:
            assert ("user_id", person.user_id) in kinds
        if person.anonymous_id:
            assert ("anonymous_id", person.anonymous_id) in kinds
        assert all(i["channel"] == "web" for i in profile["identifiers"])
        by_id = admin.get(f"/v1/profiles/{profile['id']}")
        assert by_id.status_code == 200
        assert by_id.json() == profile
        for message_id in person.message_ids:
            assert events[message_id]["profile_id"] == profile["id"], (name, message_id)
        profiles[name] = profile
    assert len({p["id"] for p in profiles.values()}) == len(profiles)

    alice = profiles["alice"]
    assert alice["traits"] == scenario.traits  # traits kept as sent; identifiers normalized
    assert {(i["kind"], i["value"]) for i in alice["identifiers"]} == {
        ("user_id", scenario.people["alice"].user_id),
        ("anonymous_id", scenario.linked_anonymous_id),
        ("email", scenario.email),
        ("phone", scenario.phone),
    }
    for lookup in (
        f"anonymous_id:{scenario.linked_anonymous_id}",
        f"email:{scenario.email.upper()}",
        "phone:415-555-0123",
    ):
        found = admin.get("/v1/profiles", params={"identifier": lookup})
        assert found.status_code == 200, (lookup, found.text)
        assert found.json()["id"] == alice["id"], lookup
    for name in ("bob", "carol", "dave", "anon1", "anon2"):
        assert profiles[name]["traits"] == {}, name
    return profiles


def test_ecrm_run_supervises_api_and_worker(hub_factory: Any) -> None:
    # two worker processes, as the default gives on 2 cores: a prefork pool under ecrm run
    hub: Hub = hub_factory("sqlite", ECRM_WORKER_CONCURRENCY="2")
    hub.launch(("run",))
    [run] = hub.processes
    # ecrm run + serve + worker and its 2 children + webhook worker + scheduler
    deadline = time.monotonic() + 20
    while len(hub_processes(hub.home)) < 7 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(hub_processes(hub.home)) >= 7, hub_processes(hub.home)

    message_id, user = str(uuid.uuid4()), f"run-{uuid.uuid4().hex[:8]}"
    with hub.client() as api, hub.admin() as admin:
        response = api.post(
            "/v1/track", json={"userId": user, "event": "Run Tested", "messageId": message_id}
        )
        assert response.status_code == 200, response.text
        event = wait_processed(admin, [message_id], hub)[message_id]
        profile = admin.get("/v1/profiles", params={"identifier": f"user_id:{user}"}).json()
        assert event["profile_id"] == profile["id"]
        assert profile["event_count"] == 1

    started = time.monotonic()
    run.send_signal(signal.SIGINT)
    try:
        code = run.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ecrm run still running 20 s after SIGINT\n{hub.logs()}")
    assert code == 0, hub.logs()
    deadline = started + 20
    while hub_processes(hub.home) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = hub_processes(hub.home)
    assert not leftovers, f"children left behind after SIGINT: {leftovers}"


def test_counts_by_channel_match_sent_types(hub_factory: Any) -> None:
    """Segment pages and tracks are all the ``web`` channel but keep their own types."""
    hub: Hub = hub_factory("sqlite")
    hub.launch(("serve",), ("worker", "--beat"))
    user = f"types-{uuid.uuid4().hex[:8]}"
    batch = [
        {"type": kind, "userId": user, "messageId": str(uuid.uuid4()), **extra}
        for kind, extra in [
            ("track", {"event": "Order Completed"}),
            ("page", {"name": "Home"}),
            ("screen", {"name": "Main"}),
            ("identify", {"traits": {"plan": "pro"}}),
        ]
    ]
    with hub.client() as api, hub.admin() as admin:
        assert api.post("/v1/batch", json={"batch": batch}).status_code == 200
        events = wait_processed(admin, [m["messageId"] for m in batch], hub)
        types = Counter(events[m["messageId"]]["type"] for m in batch)
        assert types == Counter(
            ["order.completed", "page.viewed", "screen.viewed", "profile.identified"]
        )
        profile = admin.get("/v1/profiles", params={"identifier": f"user_id:{user}"}).json()
        assert profile["channels"] == {"web": 4}
        assert profile["traits"] == {"plan": "pro"}
