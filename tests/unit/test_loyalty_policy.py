"""The pure parts of the loyalty programme: FIFO lots, expiry dates, tiers, the config file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from personalization.loyalty import LoyaltyConfig, LoyaltyConfigError
from personalization.loyalty.policy import (
    Line,
    add_months,
    due,
    effective_tier,
    next_expiry,
    next_tier,
    replay,
    tier_for,
)

JAN, FEB, MAR = (datetime(2026, m, 1, tzinfo=UTC) for m in (1, 2, 3))
CONFIG = LoyaltyConfig.from_mapping(
    {"tiers": [{"name": "silver", "threshold": 500}, {"name": "gold", "threshold": 2000}]}
)


def test_debits_consume_the_oldest_lots_first() -> None:
    lots = replay(
        [
            Line(3, "redeem", -150),
            Line(1, "earn", 100, JAN),  # order is by id, not by the list
            Line(2, "earn", 200, FEB),
            Line(4, "adjust", 50, MAR),
        ]
    )
    assert [(lot.entry_id, lot.remaining) for lot in lots] == [(1, 0), (2, 150), (4, 50)]
    assert next_expiry(lots) == FEB
    assert [lot.entry_id for lot in due(lots, datetime(2026, 2, 15, tzinfo=UTC))] == [2]


def test_an_expire_entry_closes_exactly_its_lot() -> None:
    lots = replay(
        [
            Line(1, "earn", 100, JAN),
            Line(2, "earn", 100, FEB),
            Line(3, "redeem", -30),
            Line(4, "expire", -70, lot_id=1),
            Line(5, "redeem", -20),
        ]
    )
    assert [lot.remaining for lot in lots] == [0, 80]
    assert due(lots, MAR) == [lots[1]] and due(lots, JAN) == []


def test_months_are_calendar_months() -> None:
    assert add_months(datetime(2026, 1, 31, 9, tzinfo=UTC), 1) == datetime(
        2026, 2, 28, 9, tzinfo=UTC
    )
    assert add_months(datetime(2027, 11, 30, tzinfo=UTC), 3) == datetime(2028, 2, 29, tzinfo=UTC)
    assert add_months(datetime(2026, 6, 15, tzinfo=UTC), 18) == datetime(2027, 12, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("measure", "expected"),
    [(0, None), (499.99, None), (500, "silver"), (1999, "silver"), (2000, "gold"), (10**6, "gold")],
)
def test_the_highest_threshold_reached_is_the_tier(measure: float, expected: str | None) -> None:
    assert tier_for(measure, CONFIG.tiers) == expected


def test_a_floor_keeps_a_tier_but_never_lowers_one() -> None:
    assert effective_tier(None, "gold", CONFIG) == "gold"
    assert effective_tier("gold", "silver", CONFIG) == "gold"
    assert effective_tier("silver", None, CONFIG) == "silver"
    assert next_tier(120, CONFIG.tiers) == ("silver", 380)
    assert next_tier(2500, CONFIG.tiers) is None


def test_the_config_file_names_the_key_at_fault(tmp_path: Path) -> None:
    good = tmp_path / "loyalty.yaml"
    good.write_text(
        "expiry_months: null\ntier_measure: spend\n"
        "rewards: [{id: coffee, name: Free coffee, points: 150}]\n"
    )
    loaded = LoyaltyConfig.load(good)
    assert loaded.expiry_months is None and loaded.tier_measure == "spend"
    assert loaded.reward("coffee") is not None and loaded.reward("tea") is None
    assert [t.name for t in LoyaltyConfig.load(None).tiers] == ["silver", "gold"]
    cases = {
        "tiers: [{name: gold, threshold: 2000}, {name: silver, threshold: 500}]": "tiers: ",
        "tiers: [{name: gold, threshold: -1}]": "tiers.0.threshold",
        "rewards: [{id: a, name: A, points: 0}]": "rewards.0.points",
        "expiry_months: 0": "expiry_months",
        "colour: blue": "colour",
        "- a list": "must hold a mapping",
    }
    for number, (text, key) in enumerate(cases.items()):
        path = tmp_path / f"bad{number}.yaml"
        path.write_text(text)
        with pytest.raises(LoyaltyConfigError) as error:
            LoyaltyConfig.load(path)
        assert key in str(error.value) and "\n" not in str(error.value)
