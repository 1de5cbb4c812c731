"""The mixed stream the fault scenarios send, and the effects a fault-free run must have.

Each customer identifies on the web (user id and email), buys on the web (Segment ``Order
Completed``) and in a shop (a POS sale that names only the email, so identity must merge it
into the web profile), and views pages. Rules award points per order and tag every buyer.
The expected effects come from the stream itself: one profile per customer with exactly
its events, points equal to its order totals, one firing per order and rule, one tag per
buyer.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from conftest import Hub

CUSTOMERS = 150
RULES = {
    "rules": [
        {
            "id": "points",
            "name": "a point per euro",
            "trigger": {"types": ["order.completed"]},
            "actions": [{"type": "award_points", "per_property": "total"}],
        },
        {
            "id": "buyer",
            "name": "tag buyers",
            "trigger": {"types": ["order.completed"]},
            "actions": [{"type": "add_tag", "tag": "buyer"}],
        },
    ]
}


def stream(seed: int = 8) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Segment messages, POS transactions, and what each customer must end up with."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    web: list[dict[str, Any]] = []
    pos: list[dict[str, Any]] = []
    events: Counter[str] = Counter()
    points: Counter[str] = Counter()
    orders = 0
    for n in range(CUSTOMERS):
        user, email = f"fault-{n:03d}", f"Fault.{n:03d}@Example.com"
        at = start + timedelta(minutes=n)
        web.append(
            {"type": "identify", "userId": user, "traits": {"email": email}, "messageId": f"i{n}"}
        )
        events[user] += 1
        for k in range(rng.randint(0, 4)):
            total = rng.randint(5, 200)
            web.append(
                {
                    "type": "track",
                    "event": "Order Completed",
                    "userId": user,
                    "messageId": f"o{n}-{k}",
                    "timestamp": (at + timedelta(hours=k + 1)).isoformat(),
                    "properties": {"total": total, "currency": "EUR"},
                }
            )
            events[user] += 1
            points[user] += total
            orders += 1
        for k in range(rng.randint(1, 6)):
            web.append(
                {
                    "type": "page",
                    "name": "Home",
                    "userId": user,
                    "messageId": f"p{n}-{k}",
                    "timestamp": (at + timedelta(minutes=k)).isoformat(),
                }
            )
            events[user] += 1
        if rng.random() < 0.6:  # a shop sale that knows only the email
            total = rng.randint(10, 90)
            pos.append(
                {
                    "transaction_id": f"t{n}",
                    "store_id": "S1",
                    "occurred_at": (at + timedelta(days=1)).isoformat(),
                    "currency": "EUR",
                    "totals": {"subtotal": total, "total": total},
                    "items": [{"name": "Mug", "unit_price": total}],
                    "customer": {"email": email},
                }
            )
            events[user] += 1
            points[user] += total
            orders += 1
    rng.shuffle(web)  # a customer's events land in many batches
    expected = {"events": events, "points": points, "orders": orders}
    return web, pos, expected


def processed(hub: Hub) -> int:
    text = httpx.get(f"{hub.base_url}/metrics", timeout=10).text
    found = re.search(r'^ecrm_events\{status="processed"\} (\S+)$', text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


#: small batches and a short lease, so a fault lands while batches are in flight
HUB_ENV = {"ECRM_BATCH_SIZE": "25", "ECRM_BATCH_LEASE_SECONDS": "3"}


def ingested_hub(
    hub_factory: Any, backend: str, web: list[dict[str, Any]], pos: list[dict[str, Any]]
) -> Hub:
    """API and scheduler running on ``backend`` with the stream ingested; no worker yet."""
    hub: Hub = hub_factory(backend, **HUB_ENV, ECRM_WORKER_CONCURRENCY="2")
    hub.launch(("serve",), ("scheduler",))
    send(hub, web, pos)
    return hub


def send(hub: Hub, web: list[dict[str, Any]], pos: list[dict[str, Any]]) -> None:
    """Apply the rules, then send the stream (50 messages a request, 4 at a time)."""
    with hub.admin() as admin:
        assert admin.put("/v1/rules", json=RULES).status_code == 200
    post_stream(hub, web, pos)


def post_stream(hub: Hub, web: list[dict[str, Any]], pos: list[dict[str, Any]]) -> None:
    """Send messages and transactions; every request must be accepted."""
    with hub.client() as client:
        parts = [web[i : i + 50] for i in range(0, len(web), 50)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda b: client.post("/v1/batch", json={"batch": b}), parts))
        assert all(a.status_code == 200 and a.json()["rejected"] == [] for a in answers)
        if pos:
            sold = client.post("/v1/pos/transactions", json=pos)
            assert sold.status_code == 200, sold.text


def wait_for(check: Callable[[], bool], hub: Hub, what: str, timeout: float) -> None:
    """Until ``check()`` holds; else fail with ``what`` and the hub's latest logs."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{hub.logs()[-3000:]}")
        time.sleep(0.2)


def wait_processed(hub: Hub, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (done := processed(hub)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return done


def check_effects(hub: Hub, database_url: str, expected: dict[str, Any], total: int) -> str:
    """Assert the effects of a fault-free run; returns "lost=… doubled=…" for the report."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            one = lambda sql: conn.execute(sa.text(sql)).scalar_one()  # noqa: E731
            failures = one("SELECT count(*) FROM event_failures")
            open_batches = one("SELECT count(*) FROM batches WHERE status != 'done'")
            live = one("SELECT count(*) FROM profiles WHERE merged_into IS NULL")
            firings = dict(
                conn.execute(
                    sa.text("SELECT rule_id, count(*) FROM rule_firings GROUP BY rule_id")
                ).all()
            )
    finally:
        engine.dispose()
    with hub.admin() as admin:

        def standing(user: str) -> tuple[int, int, bool]:
            found = admin.get("/v1/profiles", params={"identifier": f"user_id:{user}"})
            assert found.status_code == 200, found.text
            body = found.json()
            count, balance = int(body["event_count"]), int(body["loyalty"]["balance"])
            return count, balance, "buyer" in body.get("tags", [])

        seen = {user: standing(user) for user in expected["events"]}
    lost = sum(max(n - seen[u][0], 0) for u, n in expected["events"].items())
    doubled = sum(max(seen[u][0] - n, 0) for u, n in expected["events"].items())
    done = processed(hub)
    found = (done, failures, open_batches)
    assert found == (total, 0, 0), f"processed, failures, open batches: {found}, sent {total}"
    assert (lost, doubled) == (0, 0)
    assert {u: s[0] for u, s in seen.items()} == dict(expected["events"])
    assert {u: s[1] for u, s in seen.items()} == {u: expected["points"][u] for u in seen}
    assert live == CUSTOMERS  # each shop sale merged into its web profile
    assert {rule: firings.pop(rule, 0) for rule in ("points", "buyer")} == {
        "points": expected["orders"],
        "buyer": expected["orders"],
    }
    assert set(firings) <= set(expected.get("other_rules", ()))  # a scenario's own rules
    assert {u for u, s in seen.items() if s[2]} == {u for u in seen if expected["points"][u]}
    return f"sent={total} lost={lost} doubled={doubled}"
