"""Retry schedule: parsing, jitter, giving up, and Retry-After."""

from __future__ import annotations

import random

import pytest

from connectors.webhooks import DEFAULT_SCHEDULE, next_delay, parse_schedule
from connectors.webhooks.send import parse_retry_after


def test_default_is_the_standard_webhooks_example() -> None:
    assert DEFAULT_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    assert 3 * 86400 < sum(DEFAULT_SCHEDULE) < 3.2 * 86400  # about three days


def test_parse_schedule() -> None:
    assert parse_schedule("0, 5,300 ,1.5") == (0.0, 5.0, 300.0, 1.5)
    assert parse_schedule("60") == (60.0,)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "comma-separated seconds"),
        (" , ", "comma-separated seconds"),
        ("0,5,,300", "entry 3 ('')"),
        ("0,five", "entry 2 ('five') is not a number"),
        ("0,-5", "between 0 and"),
        ("0,nan", "between 0 and"),
        ("inf", "between 0 and"),
        ("0,999999999", "between 0 and"),
        (",".join(["1"] * 51), "at most 50"),
    ],
)
def test_bad_schedules_say_what_is_wrong(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_schedule(text)
    assert needle in str(caught.value)


def test_first_attempt_is_immediate_and_later_ones_jitter_within_ten_percent() -> None:
    rng = random.Random(7)
    assert next_delay(0, DEFAULT_SCHEDULE, retry_after=None, rng=rng) == 0.0
    for attempts, base in enumerate(DEFAULT_SCHEDULE[1:], start=1):
        delays = {
            next_delay(attempts, DEFAULT_SCHEDULE, retry_after=None, rng=rng) for _ in range(20)
        }
        assert all(d is not None and 0.9 * base <= d <= 1.1 * base for d in delays)
        assert len(delays) > 1  # jittered, not constant


def test_gives_up_after_the_last_step() -> None:
    assert next_delay(len(DEFAULT_SCHEDULE), DEFAULT_SCHEDULE, retry_after=None, rng=None) is None
    assert next_delay(3, (0, 5), retry_after=600, rng=None) is None
    with pytest.raises(ValueError):
        next_delay(-1, DEFAULT_SCHEDULE, retry_after=None, rng=None)


def test_retry_after_wins_when_longer_and_is_capped_at_a_day() -> None:
    rng = random.Random(1)
    assert next_delay(1, DEFAULT_SCHEDULE, retry_after=120, rng=rng) == 120
    shorter = next_delay(2, DEFAULT_SCHEDULE, retry_after=10, rng=rng)
    assert shorter is not None and 270 <= shorter <= 330
    assert next_delay(1, DEFAULT_SCHEDULE, retry_after=10 * 86400, rng=rng) == 86400
    # a configured step longer than a day is not shortened by the cap
    assert next_delay(0, (172800,), retry_after=10 * 86400, rng=random.Random(2)) >= 155520  # type: ignore[operator]


def test_retry_after_header_forms() -> None:
    from datetime import UTC, datetime

    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:02:00 GMT", now=now) == 120.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None
    assert parse_retry_after(None) is None
