"""The sample holds what each of the demo's rules reacts to (``ecrm demo`` fires them).

Why check the sample against the rule file rather than trust it: the demo's Rules table is
only worth showing if every sample rule can fire, and a rule edited in
``personalization/rules/samples/demo.yaml`` (or a generator change) could quietly leave
one with nothing to react to. Firing itself is exercised end to end in
``tests/e2e/test_cli.py``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Any

import pytest

from connectors.sample import DEFAULT_START, LAPSE_DAYS, generate_sample
from personalization.rules import load_file
from workers.demo import SAMPLE_RULES

Event = dict[str, Any]


@pytest.fixture(scope="module")
def sample() -> list[Event]:
    return generate_sample()


def _leaves(node: Any) -> list[dict[str, Any]]:
    """Every ``{field, op, value}`` leaf of a conditions tree."""
    if isinstance(node, dict):
        if "field" in node:
            return [node]
        return [leaf for child in node.values() for leaf in _leaves(child)]
    if isinstance(node, list):
        return [leaf for child in node for leaf in _leaves(child)]
    return []


def test_complaint_subjects_match_the_auto_reply_globs(sample: list[Event]) -> None:
    rule = next(r for r in load_file(SAMPLE_RULES).rules if r.id == "complaint-auto-reply")
    globs = [
        leaf["value"].casefold()
        for leaf in _leaves(rule.definition["conditions"])
        if leaf["op"] == "matches_glob"
    ]
    assert globs
    subjects = [ev["properties"]["subject"] for ev in sample if ev["type"] == "email.received"]
    complaints = [s for s in subjects if any(fnmatchcase(s.casefold(), g) for g in globs)]
    assert 0.05 * len(subjects) < len(complaints) < 0.3 * len(subjects)
    assert len(set(complaints)) > 1


def test_sms_keywords_carry_consent(sample: list[Event]) -> None:
    sms = [ev for ev in sample if ev["type"] == "sms.received"]
    seen = set()
    for ev in sms:
        body, consent = ev["properties"]["body"], ev["properties"].get("consent")
        expected = {"YES": "opted_in", "STOP": "opted_out"}.get(body)
        if expected is None:
            assert consent is None
        else:
            assert consent == {"channel": "sms", "status": expected}
            seen.add(expected)
    assert seen == {"opted_in", "opted_out"}


def test_lapsed_customers_opt_in_to_sms_and_come_back(sample: list[Event]) -> None:
    """What the win-back rule needs: phone, SMS opt-in, no order, a view 60+ days on."""
    by_person: dict[str, list[Event]] = defaultdict(list)
    for ev in sample:
        by_person[ev["context"]["sample_person"]].append(ev)
    opted_in = [
        ev
        for ev in sample
        if ev["type"] == "profile.identified"
        and ev["properties"].get("consent") == {"channel": "sms", "status": "opted_in"}
    ]
    assert len(opted_in) >= 3  # 300 customers: one in 50
    for consent in opted_in:
        assert {"anonymous_id", "user_id", "email", "phone"} <= set(consent["identifiers"])
        events = by_person[consent["context"]["sample_person"]]
        assert not [ev for ev in events if ev["type"] == "order.completed"]
        views = [ev for ev in events if ev["type"] == "page.viewed"]
        back, before = views[-1], views[-2]  # sorted by time
        assert back["occurred_at"] - before["occurred_at"] >= timedelta(days=LAPSE_DAYS)
        assert back["identifiers"] == {
            "anonymous_id": consent["identifiers"]["anonymous_id"],
            "user_id": consent["identifiers"]["user_id"],
        }
        assert consent["occurred_at"] < back["occurred_at"]


def test_orders_cross_the_first_default_tier() -> None:
    """Points per order (one per unit of the total) take some customers past silver."""
    totals: dict[str, float] = defaultdict(float)
    for ev in generate_sample(customers=25):
        if ev["type"] == "order.completed":
            totals[ev["context"]["sample_person"]] += ev["properties"]["total"]
    assert any(total >= 500 for total in totals.values())  # LoyaltyConfig() silver: 500


def test_stories_are_deterministic_and_kept_within_the_window() -> None:
    first, second = generate_sample(customers=120, seed=3), generate_sample(customers=120, seed=3)
    assert first == second
    end = DEFAULT_START + timedelta(days=91)  # as test_sample: a call may end after midnight
    assert all(DEFAULT_START <= ev["occurred_at"] < end for ev in first)
    assert not any(  # too short a window for two months away: no lapsed customers
        "consent" in ev["properties"] and ev["type"] == "profile.identified"
        for ev in generate_sample(customers=120, days=30)
    )
