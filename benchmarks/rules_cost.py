"""What firing rules costs: events/s with 0, 10, 100 and 1,000 enabled rules, in one run.

    python -m benchmarks.rules_cost [EVENTS] [URL_PREFIX] [RULE_COUNTS]
    python -m benchmarks.rules_cost 5000                     (SQLite files in /tmp)
    python -m benchmarks.rules_cost 5000 postgresql+psycopg://postgres@127.0.0.1:5432/
      (PostgreSQL: empty databases rules_cost_0, _10, _100, _1000 must exist)
    python -m benchmarks.rules_cost 5000 "" 0,100            (only some rule counts)
    python -m benchmarks.rules_cost 5000 "" 0,100 quiet      (no rule fires: evaluation only)

The same events (500 customers, orders on pos and page views on web, in batches of 500)
go through a fresh database for each rule count. The rules spread over 20 event types, so
the trigger index hands an order or a page view about a twentieth of them: per order a
points rule that fires (a ledger entry per order), a welcome email on the first order, and
conditions on the total, the tier and a 30-day order count that mostly do not match; per
page view history conditions (days since the last visit). ``quiet`` leaves out the
points and welcome rules, so nothing fires and only evaluation (with what it reads) is
measured. Two figures per rule count:

- ``worker``: ``process_batches`` alone (identity, consent, rules), the strict baseline;
- ``pipeline``: ingest (validate, normalize, append to the log) + relay + processing, what
  a hub does per event end to end (HTTP parsing left out).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from personalization.rules import apply_rule_set, check_rule_set
from pipeline import Database, ingest
from pipeline.outbox import relay
from pipeline.schema import upgrade
from workers.processing import process_batches

T0 = datetime(2026, 11, 1, tzinfo=UTC)
OTHER_TYPES = [f"other{n}.happened" for n in range(18)]


def rules(count: int, *, quiet: bool = False) -> list[dict[str, Any]]:
    """``count`` rules; ``quiet``: only those whose conditions (almost) never hold."""
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
    if quiet:
        made = []
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


def measure(url: str, total: int, rule_count: int, *, quiet: bool = False) -> tuple[float, float]:
    """(worker events/s, pipeline events/s) for ``total`` events with ``rule_count`` rules."""
    db = Database.connect(url)
    try:
        upgrade(db)
        if rule_count:
            with db.write() as session:
                checked = check_rule_set({"rules": rules(rule_count, quiet=quiet)})
                apply_rule_set(session, "default", checked, source="benchmark")
        items = events(total)
        worker = pipeline = 0.0
        for start in range(0, total, 500):
            began = time.perf_counter()
            with db.write() as session:
                ingest(
                    session, items[start : start + 500], workspace_id="default", default_region="US"
                )
            published: list[list[int]] = []
            relay(db, published.append, batch_size=500, lease_seconds=60)
            processing = time.perf_counter()
            for message in published:
                process_batches(db, message)
            done = time.perf_counter()
            worker += done - processing
            pipeline += done - began
        return total / worker, total / pipeline
    finally:
        db.dispose()


def main(
    total: int,
    prefix: str | None,
    counts: tuple[int, ...] = (0, 10, 100, 1000),
    *,
    quiet: bool = False,
) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    found: dict[int, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            url = f"{prefix}rules_cost_{n}" if prefix else f"sqlite:///{Path(tmp) / f'r{n}.db'}"
            found[n] = measure(url, total, n, quiet=quiet)
    workload = "no rule fires" if quiet else "points on every order"
    print(f"{total:,} events, batches of 500 ({'PostgreSQL' if prefix else 'SQLite'}, {workload})")
    print(
        f"  {'rules':>5}  {'worker ev/s':>12} {'vs 0 rules':>10}  {'pipeline ev/s':>14} {'vs 0':>6}"
    )
    bare = found.get(0)
    for n, (worker, pipeline) in found.items():
        ratios = (
            f"{worker / bare[0]:>10.0%}  {pipeline:>14,.0f} {pipeline / bare[1]:>6.0%}"
            if bare
            else f"{'':>10}  {pipeline:>14,.0f}"
        )
        print(f"  {n:>5}  {worker:>12,.0f} {ratios}")


if __name__ == "__main__":
    args = sys.argv[1:]
    chosen = tuple(int(n) for n in args[2].split(",")) if len(args) > 2 else (0, 10, 100, 1000)
    main(
        int(args[0]) if args else 5000,
        (args[1] or None) if len(args) > 1 else None,
        chosen,
        quiet=len(args) > 3 and args[3] == "quiet",
    )
