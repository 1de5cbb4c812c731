"""What firing rules costs: events/s through ``process_batches`` with 0 and with 100 rules.

    python -m benchmarks.rules_cost [EVENTS] [URL_PREFIX]
    python -m benchmarks.rules_cost 5000                     (two SQLite files in /tmp)
    python -m benchmarks.rules_cost 5000 postgresql+psycopg://postgres@127.0.0.1:5432/
      (PostgreSQL: two empty databases rules_cost_0 and rules_cost_100 must exist)

The same events (500 customers, orders on pos and page views on web, in batches of 500)
go through a fresh database twice: without rules, and with 100 enabled rules over 20 event
types (so the trigger index hands each event about 10 candidates): per order a points
rule that fires, a welcome email on the first order, conditions on the total, the tier
and a 30-day order count that mostly do not match; per page view history conditions
(days since the last visit and order). Only processing is timed, not ingest.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from personalization.rules import apply_rule_set, check_rule_set
from pipeline import Database, ingest
from pipeline.outbox import relay
from pipeline.schema import upgrade
from workers.processing import process_batches

T0 = datetime(2026, 11, 1, tzinfo=UTC)
OTHER_TYPES = [f"other{n}.happened" for n in range(18)]


def rules(count: int) -> list[dict[str, Any]]:
    made: list[dict[str, Any]] = [
        {
            "id": "points",
            "name": "points",
            "trigger": {"types": ["order.completed"]},
            "actions": [{"type": "award_points", "per_property": "total"}],
        },
        {
            "id": "welcome",
            "name": "welcome",
            "trigger": {"types": ["order.completed"]},
            "conditions": {
                "all": [{"field": "history.count(type=order.completed)", "op": "eq", "value": 1}]
            },
            "actions": [{"type": "send_email", "subject": "Welcome", "text": "Hi"}],
        },
    ]
    kinds = ["order.completed", "page.viewed", *OTHER_TYPES]
    n = 0
    while len(made) < count:
        event_type = kinds[n % len(kinds)]
        if event_type == "page.viewed":
            leaf = {"field": "history.days_since(type=page.viewed)", "op": "gte", "value": 60 + n}
        elif n % 3 == 0:
            leaf = {"field": "history.count(type=order.completed, window=30d)", "op": "eq"}
            leaf["value"] = 50 + n
        elif n % 3 == 1:
            leaf = {"field": "loyalty.tier", "op": "eq", "value": f"tier{n}"}
        else:
            leaf = {"field": "event.properties.total", "op": "gt", "value": 10_000 + n}
        made.append(
            {
                "id": f"rule-{n}",
                "name": f"rule {n}",
                "trigger": {"types": [event_type]},
                "conditions": {"all": [leaf]},
                "actions": [{"type": "award_points", "points": 1}],
            }
        )
        n += 1
    return made


def events(total: int) -> list[dict[str, Any]]:
    tag = uuid.uuid4().hex[:6]
    return [
        {
            "message_id": f"rc-{tag}-{i}",
            "channel": "pos" if i % 2 else "web",
            "type": "order.completed" if i % 2 else "page.viewed",
            "occurred_at": T0 + timedelta(minutes=i),
            "identifiers": {"email": f"c{i % 500}-{tag}@example.com"},
            "properties": {"total": 10 + i % 90} if i % 2 else {"path": "/"},
        }
        for i in range(total)
    ]


def measure(url: str, total: int, rule_count: int) -> float:
    db = Database.connect(url)
    try:
        upgrade(db)
        if rule_count:
            with db.write() as session:
                checked = check_rule_set({"rules": rules(rule_count)})
                apply_rule_set(session, "default", checked, source="benchmark")
        items = events(total)
        took = 0.0
        for start in range(0, total, 500):
            with db.write() as session:
                ingest(
                    session, items[start : start + 500], workspace_id="default", default_region="US"
                )
            published: list[list[int]] = []
            relay(db, published.append, batch_size=500, lease_seconds=60)
            began = time.perf_counter()
            for message in published:
                process_batches(db, message)
            took += time.perf_counter() - began
        return total / took
    finally:
        db.dispose()


def main(total: int, prefix: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        urls = {
            n: f"{prefix}rules_cost_{n}" if prefix else f"sqlite:///{Path(tmp) / f'r{n}.db'}"
            for n in (0, 100)
        }
        bare = measure(urls[0], total, 0)
        ruled = measure(urls[100], total, 100)
    cost = 1 - ruled / bare
    print(f"{total:,} events, batches of 500 ({'PostgreSQL' if prefix else 'SQLite'})")
    print(f"  0 rules:   {bare:8,.0f} events/s")
    print(f"  100 rules: {ruled:8,.0f} events/s  ({ruled / bare:.0%} of no rules; cost {cost:.0%})")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]) if args else 5000, args[1] if len(args) > 1 else None)
