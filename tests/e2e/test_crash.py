"""Crash safety of the embedded default: ``kill -9`` of ``ecrm run`` loses and doubles nothing.

The hub runs as one ``ecrm run`` (API + worker + beat as children) on SQLite with the
embedded SQLite broker. We ingest 10,000 Segment track events over HTTP, kill the
supervisor with SIGKILL while the worker is still processing, check that its children die
with it, restart on the same ``ECRM_HOME``, re-send some batches (they must be refused as
duplicates) and wait until the backlog drains. Then every profile must count exactly the
events sent for its user: nothing lost, nothing processed twice.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from conftest import hub_processes

if TYPE_CHECKING:
    from conftest import Hub

pytestmark = pytest.mark.timeout(240)

EVENTS = 10_000
USERS = 1_000
PER_REQUEST = 100
LEASE_SECONDS = "3"
BATCH_SIZE = "200"
DRAIN_SECONDS = 120
CHILD_DEATH_SECONDS = 5


def build_requests(seed: int = 20240917) -> tuple[list[dict[str, Any]], Counter[str]]:
    """100 ``/v1/batch`` bodies of 100 track events; returns them and events per userId.

    Every user gets at least one event, the rest are spread at random, and the order is
    shuffled so one user's events land in many batches (concurrent profile updates).
    """
    rng = random.Random(seed)
    users = [f"crash-user-{n:04d}" for n in range(USERS)]
    owners = users + [rng.choice(users) for _ in range(EVENTS - USERS)]
    rng.shuffle(owners)
    start = datetime(2024, 9, 17, 12, 0, tzinfo=UTC)
    messages = [
        {
            "type": "track",
            "event": "Product Viewed",
            "userId": user,
            "messageId": f"crash-{n:05d}",
            "timestamp": (start + timedelta(seconds=n)).isoformat(),
            "properties": {"n": n, "sku": f"sku-{n % 37}"},
        }
        for n, user in enumerate(owners)
    ]
    bodies = [{"batch": messages[i : i + PER_REQUEST]} for i in range(0, EVENTS, PER_REQUEST)]
    return bodies, Counter(owners)


def post_all(client: httpx.Client, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send the bodies over a few connections at once; every request must succeed."""

    def post(body: dict[str, Any]) -> dict[str, Any]:
        response = client.post("/v1/batch", json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        assert result["rejected"] == [], result
        return result

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(post, bodies))


def event_counts(hub: Hub) -> dict[str, int]:
    """``ecrm_events{status=…}`` from ``/metrics`` (read from the database at scrape time)."""
    text = httpx.get(f"{hub.base_url}/metrics", timeout=10).text
    found = re.findall(r'^ecrm_events\{status="(\w+)"\} (\S+)$', text, re.MULTILINE)
    return {status: int(float(value)) for status, value in found}


def db_path(hub: Hub) -> Path:
    assert hub.database_url.startswith("sqlite:///"), hub.database_url
    return Path(hub.database_url.removeprefix("sqlite:///"))


def query(hub: Hub, sql: str) -> Any:
    """One value from the hub's SQLite database, opened read-only."""
    conn = sqlite3.connect(f"file:{db_path(hub)}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def kill_leftovers(pids: dict[int, str]) -> None:
    """SIGKILL processes this test started (by pid) that outlived their parent."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


PROCESSED_SQL = (
    "SELECT (SELECT coalesce(sum(event_count), 0) FROM batches WHERE status = 'done' "
    "AND NOT replay) - (SELECT count(*) FROM event_failures)"
)


def start(hub: Hub) -> Any:
    run = hub.start("run")
    hub.wait_healthy()
    return run


def kill_run(hub: Hub, run: Any) -> tuple[dict[int, str], dict[int, str]]:
    """``kill -9`` the ``ecrm run`` supervisor; returns (processes before, survivors).

    Survivors still alive :data:`CHILD_DEATH_SECONDS` later are killed here (by pid) so
    the restart starts clean; the caller asserts on them at the end.
    """
    before = hub_processes(hub.home)
    os.kill(run.pid, signal.SIGKILL)
    run.wait(timeout=10)
    survivors: dict[int, str] = {}
    if not wait_for(lambda: not hub_processes(hub.home), timeout=CHILD_DEATH_SECONDS):
        survivors = hub_processes(hub.home)
        kill_leftovers(survivors)
    return before, survivors


def wait_drained(hub: Hub) -> None:
    def drained() -> bool:
        counts = event_counts(hub)
        done = counts.get("processed", 0) + counts.get("failed", 0)
        return done >= EVENTS and not counts.get("pending", 0)

    assert wait_for(drained, timeout=DRAIN_SECONDS, interval=0.5), (
        f"backlog not drained after {DRAIN_SECONDS}s: {event_counts(hub)}\n{hub.logs()}"
    )


def check_exactly_once(hub: Hub, per_user: Counter[str], processed_before: int) -> str:
    """Every user's profile counts exactly its events; returns a one-line summary."""
    counts = event_counts(hub)
    with hub.admin() as admin:
        failed = admin.get("/v1/events", params={"status": "failed", "limit": 10}).json()

        def profile_count(user: str) -> tuple[str, int]:
            try:
                response = admin.get("/v1/profiles", params={"identifier": f"user_id:{user}"})
            except httpx.HTTPError as exc:  # the restarted hub went away: say what is left
                raise AssertionError(
                    f"hub unreachable ({exc!r}); its processes: {hub_processes(hub.home)}\n"
                    f"{hub.logs()}"
                ) from exc
            assert response.status_code == 200, (user, response.text)
            return user, int(response.json()["event_count"])

        with ThreadPoolExecutor(max_workers=8) as pool:
            seen = dict(pool.map(profile_count, sorted(per_user)))
    wrong = {u: (seen[u], n) for u, n in per_user.items() if seen[u] != n}
    lost = sum(max(n - seen[u], 0) for u, n in per_user.items())
    doubled = sum(max(seen[u] - n, 0) for u, n in per_user.items())

    stored = query(hub, "SELECT count(*) FROM events")
    processed = query(hub, PROCESSED_SQL)
    profile_sum = query(hub, "SELECT sum(event_count) FROM profiles")
    profiles = query(hub, "SELECT count(*) FROM profiles")
    open_batches = query(hub, "SELECT count(*) FROM batches WHERE status != 'done'")
    summary = (
        f"sent={EVENTS} processed_before_kill={processed_before} "
        f"processed_after_restart={processed - processed_before} lost={lost} doubled={doubled} "
        f"profiles={profiles}"
    )
    print(f"\ncrash: {summary}")

    assert counts == {"pending": 0, "processed": EVENTS, "failed": 0}, counts
    assert failed["events"] == [], failed
    assert not wrong, f"{len(wrong)} users with wrong event_count (seen, sent): {wrong}"
    assert sum(seen.values()) == EVENTS
    assert stored == EVENTS
    assert processed == EVENTS
    assert profile_sum == EVENTS
    assert profiles == USERS
    assert open_batches == 0
    return summary


def assert_no_survivors(survivors: dict[int, str], before: dict[int, str]) -> None:
    assert not survivors, (
        f"processes of the killed `ecrm run` still alive {CHILD_DEATH_SECONDS}s later "
        f"(killed by the test): {survivors}; before the kill: {before}"
    )


def test_kill_9_mid_processing_loses_and_doubles_nothing(hub_factory: Any) -> None:
    """Ingest all, kill -9 while the worker processes, restart, re-send 15 batches."""
    bodies, per_user = build_requests()
    assert sum(per_user.values()) == EVENTS and len(per_user) == USERS
    hub: Hub = hub_factory(
        "sqlite", ECRM_BATCH_LEASE_SECONDS=LEASE_SECONDS, ECRM_BATCH_SIZE=BATCH_SIZE
    )
    run = start(hub)
    started = hub_processes(hub.home)
    assert run.pid in started and len(started) >= 3, f"expected run + serve + worker: {started}"

    # Phase 1: ingest everything, then kill -9 the supervisor at once: the worker keeps
    # pace with ingest, so right after the last response it is still processing.
    with hub.client() as client:
        results = post_all(client, bodies)
    assert sum(r["accepted"] for r in results) == EVENTS
    assert sum(r["duplicates"] for r in results) == 0
    wait_for(lambda: query(hub, PROCESSED_SQL) > 0, timeout=30, interval=0.02)
    before, survivors = kill_run(hub, run)
    processed_before = query(hub, PROCESSED_SQL)
    assert query(hub, "SELECT count(*) FROM events") == EVENTS
    assert 0 < processed_before < EVENTS, (
        f"kill did not land mid-processing: {processed_before} of {EVENTS} processed"
    )

    # Phase 2: restart on the same home; re-sent batches are duplicates, the backlog drains.
    restarted = start(hub)
    resend = bodies[:5] + bodies[45:50] + bodies[-5:]
    with hub.client() as client:
        again = post_all(client, resend)
    assert sum(r["accepted"] for r in again) == 0, again
    assert sum(r["duplicates"] for r in again) == PER_REQUEST * len(resend)
    wait_drained(hub)
    assert restarted.poll() is None, hub.logs()

    check_exactly_once(hub, per_user, processed_before)
    assert_no_survivors(survivors, before)


def test_kill_9_mid_ingest_then_client_resends_everything(hub_factory: Any) -> None:
    """Kill -9 with requests in flight; the client re-sends all 100 batches after restart.

    Batches answered before the kill must come back entirely as duplicates; the ones cut
    off may have been stored or not, and either way each event ends up counted once.
    """
    bodies, per_user = build_requests(seed=7)
    hub: Hub = hub_factory(
        "sqlite", ECRM_BATCH_LEASE_SECONDS=LEASE_SECONDS, ECRM_BATCH_SIZE=BATCH_SIZE
    )
    run = start(hub)

    answered: dict[int, dict[str, Any]] = {}

    def post(index: int) -> None:
        try:
            response = client.post("/v1/batch", json=bodies[index])
        except httpx.HTTPError:
            return  # cut off by the kill: outcome unknown to the client
        if response.status_code == 200:
            answered[index] = response.json()

    with hub.client() as client, ThreadPoolExecutor(max_workers=4) as pool:
        for index in range(len(bodies)):
            pool.submit(post, index)
        assert wait_for(lambda: len(answered) >= len(bodies) // 2, timeout=60, interval=0.01)
        before, survivors = kill_run(hub, run)
    assert answered and len(answered) < len(bodies), len(answered)
    assert all(r["accepted"] == PER_REQUEST for r in answered.values())
    stored_before = query(hub, "SELECT count(*) FROM events")
    processed_before = query(hub, PROCESSED_SQL)
    assert len(answered) * PER_REQUEST <= stored_before < EVENTS
    assert processed_before < stored_before, "kill did not land while work was pending"

    restarted = start(hub)
    with hub.client() as client:
        again = post_all(client, bodies)
    assert all(again[i]["duplicates"] == PER_REQUEST for i in answered), "answered batch re-stored"
    assert sum(r["accepted"] for r in again) == EVENTS - stored_before
    assert sum(r["accepted"] + r["duplicates"] for r in again) == EVENTS
    wait_drained(hub)
    assert restarted.poll() is None, hub.logs()

    check_exactly_once(hub, per_user, processed_before)
    assert_no_survivors(survivors, before)
