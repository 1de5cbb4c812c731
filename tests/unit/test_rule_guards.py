"""Rule guards: validation and compiled form, holdout, quiet hours, caps checked in memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from personalization.rules import RuleSetInvalid, check_rule_set, export_vocabulary, parse_yaml
from personalization.rules.guards import (
    CHANNEL_CAP,
    FREQUENCY_CAP,
    GuardState,
    in_holdout,
    message_channels,
    quiet_until,
)
from personalization.rules.schema import Cap, CompiledRule, QuietHours, RuleGuards
from pipeline.caps import parse_cap, parse_period, period_text

ROOT = Path(__file__).parents[2]
EMAIL = {"type": "send_email", "subject": "Hi", "text": "Hello"}
SMS = {"type": "send_sms", "text": "Hi"}


def rule(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "r1",
        "name": "a rule",
        "trigger": {"types": ["order.completed"]},
        "actions": [EMAIL],
    }
    base.update(overrides)
    return base


def compiled(**overrides: Any) -> CompiledRule:
    return check_rule_set({"rules": [rule(**overrides)]}).rules[0]


def issues_of(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(RuleSetInvalid) as caught:
        check_rule_set(data)
    return [(issue.path, issue.message) for issue in caught.value.issues]


def guard_issues(guards: Any) -> list[tuple[str, str]]:
    return issues_of({"rules": [rule(guards=guards)]})


# validation and the compiled form


def test_guards_compile_to_frozen_dataclasses() -> None:
    checked = compiled(
        guards={
            "frequency": {"max": 1, "per": "7d"},
            "quiet_hours": {"start": "21:00", "end": "08:00", "timezone": "Europe/Berlin"},
            "holdout": 10,
        },
        trace=True,
    )
    assert checked.guards == RuleGuards(
        frequency=(Cap(1, timedelta(days=7)),),
        quiet_hours=QuietHours(time(21, 0), time(8, 0), "Europe/Berlin"),
        holdout=10.0,
    )
    assert checked.trace is True
    assert checked.definition["guards"]["frequency"] == {"max": 1, "per": "7d"}
    assert checked.definition["trace"] is True
    # the definition checks again to the same rule (what load_rules does with it)
    again = check_rule_set({"rules": [dict(checked.definition)]}).rules[0]
    assert (again.guards, again.trace, again.definition) == (
        checked.guards,
        True,
        checked.definition,
    )


def test_a_list_of_caps_and_every_period_unit() -> None:
    caps = [
        {"max": 1, "per": "30m"},
        {"max": 2, "per": "12h"},
        {"max": 3, "per": "7d"},
        {"max": 4, "per": "2w"},
    ]
    assert compiled(guards={"frequency": caps}).guards.frequency == (
        Cap(1, timedelta(minutes=30)),
        Cap(2, timedelta(hours=12)),
        Cap(3, timedelta(days=7)),
        Cap(4, timedelta(weeks=2)),
    )
    assert compiled(guards={"holdout": 0.5}).guards.holdout == 0.5


def test_without_guards_the_definition_is_what_it_was_before_guards() -> None:
    """Stored definitions keep their digests: ``guards: {}`` and no ``trace`` key."""
    checked = compiled()
    assert checked.guards == RuleGuards() and checked.trace is False
    assert checked.definition["guards"] == {} and "trace" not in checked.definition
    assert "trace" not in compiled(trace=False).definition


@pytest.mark.parametrize(
    ("guards", "path", "message"),
    [
        ({"cap": "1/7d"}, "guards.cap", "unknown key 'cap'; expected one of frequency, quiet_h"),
        ({"frequency": "1/7d"}, "guards.frequency", "expected a cap {max: 1, per: 7d} or a list"),
        ({"frequency": []}, "guards.frequency", "expected a cap {max: 1, per: 7d} or a list"),
        ({"frequency": [{"max": 1, "per": "1d"}] * 6}, "guards.frequency", "at most 5 caps"),
        ({"frequency": [5]}, "guards.frequency[0]", "expected a cap {max: 1, per: 7d}"),
        ({"frequency": {"max": 1, "per": "7 days"}}, "guards.frequency.per", "period '7 days'"),
        ({"frequency": {"max": 1, "per": "7x"}}, "guards.frequency.per", "expected a number and m"),
        ({"frequency": {"max": 1, "per": 7}}, "guards.frequency.per", "period 7: expected"),
        ({"frequency": {"max": 1, "per": "0d"}}, "guards.frequency.per", "period '0d'"),
        ({"frequency": {"max": 1, "per": "400d"}}, "guards.frequency.per", "at most 365d"),
        ({"frequency": {"max": 0, "per": "1d"}}, "guards.frequency.max", "expected a whole numb"),
        ({"frequency": {"max": "1", "per": "1d"}}, "guards.frequency.max", "expected a whole num"),
        ({"frequency": {"max": 1.5, "per": "1d"}}, "guards.frequency.max", "expected a whole num"),
        ({"frequency": {"max": True, "per": "1d"}}, "guards.frequency.max", "expected a whole nu"),
        ({"frequency": {"max": 10_001, "per": "1d"}}, "guards.frequency.max", "at most 10000"),
        ({"frequency": {"per": "1d"}}, "guards.frequency.max", "required, but missing"),
        ({"frequency": {"max": 1}}, "guards.frequency.per", "required, but missing: the period"),
        (
            {"frequency": [{"max": 1, "per": "1d"}, {"max": 1, "per": "1d", "every": 2}]},
            "guards.frequency[1].every",
            "unknown key 'every'; expected max, per",
        ),
        (
            {"quiet_hours": {"start": "21:00", "end": "08:00", "timezone": "Mars/Olympus"}},
            "guards.quiet_hours.timezone",
            "unknown time zone 'Mars/Olympus'; expected an IANA name such as Europe/Berlin",
        ),
        (
            {"quiet_hours": {"start": "21:00", "end": "08:00", "timezone": "../etc/passwd"}},
            "guards.quiet_hours.timezone",
            "unknown time zone",
        ),
        (
            {"quiet_hours": {"start": "21:00", "end": "21:00", "timezone": "UTC"}},
            "guards.quiet_hours.end",
            "expected an end other than the start",
        ),
        (
            {"quiet_hours": {"start": "9pm", "end": "08:00", "timezone": "UTC"}},
            "guards.quiet_hours.start",
            'expected a time of day "HH:MM" in quotes',
        ),
        (
            {"quiet_hours": {"start": "21:00", "end": "24:00", "timezone": "UTC"}},
            "guards.quiet_hours.end",
            'expected a time of day "HH:MM"',
        ),
        (
            {"quiet_hours": {"start": "21:00", "end": "08:00"}},
            "guards.quiet_hours.timezone",
            "required, but missing",
        ),
        (
            {"quiet_hours": {"start": "21:00", "end": "08:00", "timezone": "UTC", "days": 1}},
            "guards.quiet_hours.days",
            "unknown key 'days'; expected one of start, end, timezone",
        ),
        ({"quiet_hours": "21-08"}, "guards.quiet_hours", "expected a mapping of keys to values"),
        ({"holdout": 0}, "guards.holdout", "expected a percentage of profiles above 0 and at m"),
        ({"holdout": 51}, "guards.holdout", "at most 50"),
        ({"holdout": -5}, "guards.holdout", "expected a percentage"),
        ({"holdout": "10%"}, "guards.holdout", "expected a percentage"),
        ({"holdout": True}, "guards.holdout", "expected a percentage"),
    ],
)
def test_each_guard_error_names_its_key_and_what_was_expected(
    guards: dict[str, Any], path: str, message: str
) -> None:
    found = guard_issues(guards)
    assert len(found) == 1, found
    [(field, text)] = found
    assert field == f"rules[0].{path}" and message in text, (field, text)


def test_trace_must_be_true_or_false() -> None:
    [(field, _)] = issues_of({"rules": [rule(trace="yes")]})
    assert field == "rules[0].trace"


def test_guard_errors_in_yaml_have_their_lines_and_an_unquoted_time_is_explained() -> None:
    text = """\
rules:
  - id: quiet
    name: quiet hours written without quotes
    trigger: {types: [order.completed]}
    actions: [{type: send_sms, text: hi}]
    guards:
      frequency:
        - {max: 1, per: 7d}
        - {max: 3, per: 1month}
      quiet_hours:
        start: 21:00
        end: "08:00"
        timezone: Europe/Berlln
      holdout: 75
"""
    with pytest.raises(RuleSetInvalid) as caught:
        parse_yaml(text, source="r.yaml")
    assert caught.value.lines() == [
        "r.yaml:9: rules[0].guards.frequency[1].per: period '1month': expected a number and m "
        "(minutes), h, d or w, e.g. 7d",
        'r.yaml:11: rules[0].guards.quiet_hours.start: expected a time of day "HH:MM" in '
        'quotes, e.g. "21:00" (YAML reads an unquoted 21:00 as 1260)',
        "r.yaml:13: rules[0].guards.quiet_hours.timezone: unknown time zone 'Europe/Berlln'; "
        "expected an IANA name such as Europe/Berlin or UTC (used when the profile has no "
        "time zone)",
        "r.yaml:14: rules[0].guards.holdout: expected a percentage of profiles above 0 and at "
        "most 50, e.g. 10",
    ]


def test_the_vocabulary_exports_the_guards() -> None:
    exported = json.loads(json.dumps(export_vocabulary()))
    guards = {g["name"]: g for g in exported["guards"]}
    assert set(guards) == {"frequency", "quiet_hours", "holdout"}
    assert [p["name"] for p in guards["frequency"]["params"]] == ["max", "per"]
    assert [p["type"] for p in guards["quiet_hours"]["params"]] == ["clock", "clock", "time_zone"]
    assert guards["holdout"]["type"] == "number"
    every_type = {p["type"] for g in exported["guards"] for p in g["params"]}
    assert every_type <= set(exported["guard_value_types"])
    assert "Europe/Berlin" in exported["time_zones"]
    # each example is a valid guard
    compiled(guards={name: g["example"] for name, g in guards.items()})


# periods and caps (shared with ECRM_CHANNEL_CAPS)


def test_periods_and_caps_read_back() -> None:
    for text in ("45m", "36h", "6d", "365d"):
        assert period_text(parse_period(text)) == text
    assert period_text(parse_period("3w")) == "21d"
    assert period_text(timedelta(minutes=120)) == "2h"
    assert parse_cap(" 3/7d ") == Cap(3, timedelta(days=7))
    assert Cap(3, timedelta(days=7)).text == "3/7d"
    for bad in ("3", "x/7d", "0/7d", "3/7", "3/7y", "-1/7d", "²/7d"):
        with pytest.raises(ValueError):
            parse_cap(bad)


# holdout


def test_holdout_is_about_the_percentage_stable_and_independent_per_rule() -> None:
    ids = [f"prof_{n:05d}" for n in range(10_000)]
    held_a = {pid for pid in ids if in_holdout("rule-a", pid, 10)}
    held_b = {pid for pid in ids if in_holdout("rule-b", pid, 10)}
    assert 850 <= len(held_a) <= 1150 and 850 <= len(held_b) <= 1150
    # the same answer every call, and a larger group contains the smaller one
    assert held_a == {pid for pid in ids if in_holdout("rule-a", pid, 10)}
    assert held_a <= {pid for pid in ids if in_holdout("rule-a", pid, 20)}
    # independent: about 10% of rule a's group is in rule b's (1% of all), not all or none
    assert 50 <= len(held_a & held_b) <= 160
    assert 4_700 <= sum(in_holdout("rule-a", pid, 50) for pid in ids) <= 5_300
    assert not any(in_holdout("rule-a", pid, 0) for pid in ids)


def test_holdout_is_the_same_in_another_process() -> None:
    """Not Python's ``hash()`` (salted per process): another process agrees."""
    ids = [f"prof_{n}" for n in range(300)]
    here = [pid for pid in ids if in_holdout("rule-a", pid, 25)]
    code = (
        "from personalization.rules.guards import in_holdout\n"
        f"print(','.join(p for p in {ids!r} if in_holdout('rule-a', p, 25)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert there.split(",") == here


# quiet hours

NIGHT = QuietHours(time(21, 0), time(8, 0), "Europe/Berlin")
LUNCH = QuietHours(time(12, 0), time(14, 0), "UTC")
BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_a_window_across_midnight() -> None:
    # June: Berlin is UTC+2
    assert quiet_until(utc(2026, 6, 1, 18, 59), NIGHT, None) is None  # 20:59 local
    assert quiet_until(utc(2026, 6, 1, 19, 0), NIGHT, None) == utc(2026, 6, 2, 6, 0)  # 21:00
    assert quiet_until(utc(2026, 6, 1, 23, 30), NIGHT, None) == utc(2026, 6, 2, 6, 0)  # 01:30
    assert quiet_until(utc(2026, 6, 2, 5, 59), NIGHT, None) == utc(2026, 6, 2, 6, 0)  # 07:59
    assert quiet_until(utc(2026, 6, 2, 6, 0), NIGHT, None) is None  # 08:00: the end is out


def test_a_window_within_a_day() -> None:
    assert quiet_until(utc(2026, 6, 1, 11, 59), LUNCH, None) is None
    assert quiet_until(utc(2026, 6, 1, 12, 0), LUNCH, None) == utc(2026, 6, 1, 14, 0)
    assert quiet_until(utc(2026, 6, 1, 13, 59), LUNCH, None) == utc(2026, 6, 1, 14, 0)
    assert quiet_until(utc(2026, 6, 1, 14, 0), LUNCH, None) is None
    assert quiet_until(utc(2026, 6, 1, 23, 0), LUNCH, None) is None


def test_the_profile_time_zone_wins_and_an_invalid_one_falls_back() -> None:
    at = utc(2026, 6, 1, 19, 30)  # 21:30 in Berlin, 15:30 in New York
    assert quiet_until(at, NIGHT, "America/New_York") is None
    assert quiet_until(at, NIGHT, "Not/AZone") == utc(2026, 6, 2, 6, 0)
    assert quiet_until(at, NIGHT, "") == utc(2026, 6, 2, 6, 0)
    # 02:00 UTC is 22:00 in New York: quiet until 08:00 there (12:00 UTC)
    assert quiet_until(utc(2026, 6, 2, 2, 0), NIGHT, "America/New_York") == utc(2026, 6, 2, 12, 0)
    # any aware time works; the answer is UTC
    berlin = utc(2026, 6, 1, 19, 30).astimezone(BERLIN)
    assert quiet_until(berlin, NIGHT, None) == utc(2026, 6, 2, 6, 0)
    with pytest.raises(ValueError):
        quiet_until(datetime(2026, 6, 1, 19, 30), NIGHT, None)


def test_dst_change_days_in_berlin() -> None:
    # 2026-03-29: clocks go 02:00 CET -> 03:00 CEST; the night is an hour shorter
    assert quiet_until(utc(2026, 3, 28, 22, 0), NIGHT, None) == utc(2026, 3, 29, 6, 0)
    # 2026-10-25: clocks go 03:00 CEST -> 02:00 CET; the night is an hour longer
    assert quiet_until(utc(2026, 10, 24, 22, 0), NIGHT, None) == utc(2026, 10, 25, 7, 0)
    # an end in the skipped hour: 02:30 does not exist, the window ends at 03:30 CEST
    skipped = QuietHours(time(22, 0), time(2, 30), "Europe/Berlin")
    assert quiet_until(utc(2026, 3, 29, 0, 10), skipped, None) == utc(2026, 3, 29, 1, 30)
    # an end in the repeated hour: its first occurrence still ahead
    repeated = QuietHours(time(1, 0), time(2, 30), "Europe/Berlin")
    assert quiet_until(utc(2026, 10, 25, 0, 15), repeated, None) == utc(2026, 10, 25, 0, 30)
    assert quiet_until(utc(2026, 10, 25, 1, 15), repeated, None) == utc(2026, 10, 25, 1, 30)


# caps, in memory (GuardState.read is tested on SQLite and PostgreSQL)

NOW = utc(2026, 6, 10, 12, 0)


def test_frequency_caps_count_the_rules_firings_within_each_period() -> None:
    weekly = compiled(guards={"frequency": {"max": 1, "per": "7d"}})
    state = GuardState(firings={("r1", "p1"): [NOW - timedelta(days=6, hours=23)]})
    assert state.check(weekly, "p1", ["email"], NOW) == FREQUENCY_CAP
    assert state.check(weekly, "p1", ["email"], NOW + timedelta(hours=1)) is None  # 7d after
    assert state.check(weekly, "p2", ["email"], NOW) is None
    other = compiled(id="r2", guards={"frequency": {"max": 1, "per": "7d"}})
    assert state.check(other, "p1", ["email"], NOW) is None  # per rule
    two_caps = compiled(
        guards={"frequency": [{"max": 3, "per": "30d"}, {"max": 1, "per": "1d"}]},
    )
    state = GuardState(firings={("r1", "p1"): [NOW - timedelta(days=d) for d in (2, 10, 20)]})
    assert state.check(two_caps, "p1", [], NOW) == FREQUENCY_CAP  # 3 in 30 days
    state = GuardState(firings={("r1", "p1"): [NOW - timedelta(hours=3)]})
    assert state.check(two_caps, "p1", [], NOW) == FREQUENCY_CAP  # 1 today
    assert state.check(compiled(), "p1", [], NOW) is None  # no caps: never capped


def test_note_caps_a_second_firing_in_the_same_batch() -> None:
    once = compiled(guards={"frequency": {"max": 1, "per": "1d"}}, actions=[EMAIL])
    state = GuardState(channel_caps={"email": Cap(2, timedelta(days=7))})
    assert state.check(once, "p1", ["email"], NOW) is None
    state.note(once, "p1", ["email"], NOW)
    assert state.check(once, "p1", ["email"], NOW) == FREQUENCY_CAP
    other = compiled(id="r2", actions=[EMAIL])
    assert state.check(other, "p1", ["email"], NOW) is None  # 1 of 2 emails used
    state.note(other, "p1", ["email"], NOW)
    assert state.check(other, "p1", ["email"], NOW) == CHANNEL_CAP
    assert state.check(other, "p1", ["sms"], NOW) is None  # sms is not capped
    assert state.check(other, "p1", [], NOW) is None  # a rule that sends nothing


def test_channel_caps_apply_to_the_channels_the_rule_sends_on() -> None:
    caps = {"email": Cap(3, timedelta(days=7)), "sms": Cap(1, timedelta(days=1))}
    state = GuardState(
        channel_caps=caps,
        messages={
            ("email", "p1"): [NOW - timedelta(days=d) for d in (1, 2, 8)],
            ("sms", "p1"): [NOW - timedelta(hours=25)],
        },
    )
    both = compiled(actions=[EMAIL, SMS])
    assert message_channels(both) == ("email", "sms")
    assert state.check(both, "p1", message_channels(both), NOW) is None  # 2 of 3, 0 of 1
    assert state.check(both, "p1", ["email", "email"], NOW) == CHANNEL_CAP  # 2 more: 4 > 3
    state.note(both, "p1", message_channels(both), NOW)
    assert state.check(both, "p1", ["sms"], NOW) == CHANNEL_CAP
    assert state.check(both, "p1", ["email"], NOW) == CHANNEL_CAP  # 3 of 3
    assert message_channels(compiled(actions=[{"type": "add_tag", "tag": "x"}])) == ()
