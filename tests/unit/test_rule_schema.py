"""Rules: schema, vocabulary, validation errors with lines, operators, evaluation, index."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from personalization.rules import (
    MISSING,
    CompiledRule,
    Context,
    HistoryAggregate,
    RuleIndex,
    RuleSetInvalid,
    aggregates_of,
    check_rule_set,
    evaluate,
    export_vocabulary,
    load_file,
    parse_field,
    parse_yaml,
)
from personalization.rules.evaluate import _OPERATORS, evaluate_leaf
from personalization.rules.schema import Leaf
from personalization.rules.vocabulary import (
    ACTIONS,
    OPERATORS,
    VALUE_TYPES,
    VocabularyError,
    check_type_pattern,
    type_matches,
)
from pipeline import HubError

SAMPLE = Path(__file__).parents[2] / "personalization" / "rules" / "samples" / "demo.yaml"
ACTION = {"type": "add_tag", "tag": "t"}


def rule(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "r1",
        "name": "a rule",
        "trigger": {"types": ["order.completed"]},
        "actions": [ACTION],
    }
    base.update(overrides)
    return base


def issues_of(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(RuleSetInvalid) as caught:
        check_rule_set(data)
    return [(issue.path, issue.message) for issue in caught.value.issues]


def leaf(field: str, op: str, value: Any = None, *, given: bool = True) -> Leaf:
    condition: dict[str, Any] = {"field": field, "op": op}
    if given:
        condition["value"] = value
    compiled = check_rule_set({"rules": [rule(conditions=condition)]}).rules[0].conditions
    assert isinstance(compiled, Leaf)
    return compiled


# the sample and the file format


def test_the_demo_rule_set_validates_with_the_five_rules_of_the_issue() -> None:
    rule_set = load_file(SAMPLE)
    assert [r.id for r in rule_set.rules] == [
        "complaint-auto-reply",
        "welcome-new-customer",
        "points-per-order",
        "tier-upgrade-message",
        "win-back-sms",
    ]
    by_id = rule_set.by_id()
    assert by_id["points-per-order"].actions[0].type == "award_points"
    assert by_id["win-back-sms"].actions[0].type == "send_sms"
    assert by_id["complaint-auto-reply"].stop is True
    assert by_id["complaint-auto-reply"].channels == frozenset({"email"})


BAD_FILE = """\
rules:
  - id: first
    name: wrong keys
    priorty: 3
    trigger: {types: [order.completed]}
    actions: [{type: add_tag, tag: x}]
  - id: second
    name: wrong meaning
    trigger:
      types: [order.completed, "Order Done"]
      channels: [fax]
    conditions:
      all:
        - {field: profile.event_count, op: starts_with, value: "a"}
        - {field: event.properties.total, op: gt, value: abc}
        - any:
            - {field: profile.nope, op: eq, value: 1}
        - not: {field: "history.count(type=order.completed, window=30x)", op: gte, value: 3}
    actions:
      - {type: send_email, subject: "{{ secrets }}", text: "{% if %}"}
      - {type: send_sms}
      - {type: launch_rocket}
  - id: first
    name: a duplicate id
    trigger: {types: ["*"]}
    actions: [{type: add_tag, tag: x}]
"""


def test_errors_name_file_line_field_and_what_was_expected(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_FILE)
    with pytest.raises(RuleSetInvalid) as caught:
        load_file(path)
    lines = caught.value.lines()
    expected = [
        (4, "rules[0].priorty", "unknown key 'priorty'; expected one of id, name"),
        (10, "rules[1].trigger.types[1]", "'Order Done': expected an event type like order.c"),
        (11, "rules[1].trigger.channels[0]", "unknown channel 'fax'; expected one of email"),
        (14, "rules[1].conditions.all[0].op", "starts_with does not apply to profile.event_count"),
        (15, "rules[1].conditions.all[1].value", "expected a number or an ISO 8601 time"),
        (17, "rules[1].conditions.all[2].any[0].field", "unknown field 'profile.nope'"),
        (18, "rules[1].conditions.all[3].not.field", "window '30x': expected a number and h"),
        (20, "rules[1].actions[0].subject", "template uses secrets; templates see only event"),
        (20, "rules[1].actions[0].text", "template syntax error on its line 1"),
        (21, "rules[1].actions[1]", "send_sms needs 'text'"),
        (22, "rules[1].actions[2].type", "unknown action 'launch_rocket'; expected one of"),
        (23, "rules[2].id", "id 'first' is already used by rules[0]"),
    ]
    assert len(lines) == len(expected), "\n".join(lines)
    for line, (number, field, message) in zip(lines, expected, strict=True):
        assert line.startswith(f"{path}:{number}: {field}: {message}"), line


def test_a_yaml_syntax_error_and_a_duplicate_key_have_their_lines() -> None:
    with pytest.raises(RuleSetInvalid) as caught:
        parse_yaml("rules:\n  - id: a\n    name: [unclosed\n", source="x.yaml")
    issue = caught.value.issues[0]
    assert issue.message.startswith("not valid YAML") and issue.line in (3, 4)
    with pytest.raises(RuleSetInvalid) as caught:
        parse_yaml("rules:\n  - id: a\n    id: b\n", source="x.yaml")
    assert caught.value.lines() == ["x.yaml:3: rules[0].id: key given twice in one mapping"]
    with pytest.raises(RuleSetInvalid) as caught:
        parse_yaml("", source="x.yaml")
    assert "expected a mapping with a 'rules' list" in caught.value.lines()[0]


def test_a_missing_required_key_points_at_its_mapping() -> None:
    with pytest.raises(RuleSetInvalid) as caught:
        parse_yaml(
            "rules:\n  - id: a\n    trigger: {types: [a.b]}\n"
            "    actions: [{type: add_tag, tag: x}]\n",
            source="f",
        )
    assert caught.value.lines() == ["f:2: rules[0].name: required, but missing"]


def test_a_missing_file_is_one_line() -> None:
    with pytest.raises(HubError) as caught:
        load_file("/nonexistent/rules.yaml")
    assert str(caught.value) == "/nonexistent/rules.yaml: no such file"


def test_shape_is_strict() -> None:
    assert issues_of({"rules": [rule(priority="10")]}) == [
        ("rules[0].priority", "Input should be a valid integer")
    ]
    assert issues_of({"rules": [rule(enabled="yes")]})[0][0] == "rules[0].enabled"
    assert issues_of({"rules": [], "extra": 1}) == [
        ("extra", "unknown key 'extra'; expected rules")
    ]
    assert issues_of([1, 2])[0][1] == "expected a mapping with a 'rules' list"
    assert issues_of({"rules": [rule(actions=[])]})[0][0] == "rules[0].actions"


def test_an_unknown_guard_lists_the_guards() -> None:
    # the guards themselves are tested in test_rule_guards.py
    [(field, message)] = issues_of({"rules": [rule(guards={"cap": "1/7d"})]})
    assert field == "rules[0].guards.cap"
    assert message == "unknown key 'cap'; expected one of frequency, quiet_hours, holdout"


def test_ids_are_checked() -> None:
    assert issues_of({"rules": [rule(id="Has Space")]})[0][0] == "rules[0].id"
    assert "reserved" in issues_of({"rules": [rule(id="vocabulary")]})[0][1]


# conditions


def test_a_condition_node_is_exactly_one_form() -> None:
    [(field, message)] = issues_of(
        {"rules": [rule(conditions={"all": [], "field": "event.type", "op": "eq", "value": "x"})]}
    )
    assert field == "rules[0].conditions" and message.startswith("expected exactly one of")
    [(field, _)] = issues_of({"rules": [rule(conditions={"any": []})]})
    assert field == "rules[0].conditions.any"
    deep: dict[str, Any] = {"field": "event.type", "op": "eq", "value": "a.b"}
    for _ in range(9):
        deep = {"not": deep}
    [(_, message)] = issues_of({"rules": [rule(conditions=deep)]})
    assert "at most 8 levels" in message


def test_fields_cannot_reach_outside_the_vocabulary() -> None:
    for text in ("event.__class__", "profile.traits.__dict__.x", "os.system", "event.properties."):
        with pytest.raises(VocabularyError):
            parse_field(text)
    assert parse_field("event.properties.total").path == ("properties", "total")
    with pytest.raises(VocabularyError, match="unknown channel"):
        parse_field("profile.consent.fax")


def test_history_aggregates_parse_to_typed_values() -> None:
    ref = parse_field("history.sum(property=total, type=order.*, window=90d)")
    assert ref.aggregate == HistoryAggregate(
        "sum", type="order.*", property_name="total", window=ref.aggregate.window
    )
    assert ref.aggregate is not None and ref.aggregate.window is not None
    assert ref.aggregate.window.days == 90 and ref.type == "number"
    assert ref.aggregate.text == "history.sum(type=order.*, property=total, window=90d)"
    for bad, message in (
        ("history.sum(window=30d)", "needs property"),
        ("history.count(type=order.completed, type=a.b)", "given twice"),
        ("history.count(colour=red)", "takes type, channel, window"),
        ("history.median()", "unknown history function"),
        ("history.count(type=Order)", "expected an event type"),
        ("history.count", "expected history.<function>"),
    ):
        with pytest.raises(VocabularyError, match=message):
            parse_field(bad)


T = datetime(2026, 3, 1, 12, tzinfo=UTC)

#: (field, op, value, seen, matches): each operator on every type it applies to
OPERATOR_CASES: list[tuple[str, str, Any, Any, bool]] = [
    ("event.type", "eq", "order.completed", "order.completed", True),
    ("event.type", "eq", "order.completed", "order.refunded", False),
    ("profile.event_count", "eq", 3, 3, True),
    ("profile.event_count", "eq", 3, 3.0, True),
    ("event.traits.vip", "eq", True, True, True),
    ("event.traits.vip", "eq", True, 1, False),  # booleans are not numbers
    ("profile.first_seen_at", "eq", "2026-03-01T12:00:00Z", T, True),
    ("event.type", "ne", "page.viewed", "order.completed", True),
    ("profile.event_count", "ne", 3, 3, False),
    ("event.traits.vip", "ne", True, False, True),
    ("profile.first_seen_at", "ne", "2026-03-01T12:00:00Z", T, False),
    ("profile.event_count", "gt", 2, 3, True),
    ("profile.event_count", "gt", 3, 3, False),
    ("profile.event_count", "gte", 3, 3, True),
    ("profile.event_count", "lt", 3, 2, True),
    ("profile.event_count", "lte", 3, 4, False),
    ("profile.first_seen_at", "gt", "2026-01-01T00:00:00+00:00", T, True),
    ("profile.first_seen_at", "lt", "2026-01-01T00:00:00+00:00", T, False),
    ("profile.first_seen_at", "gte", "2026-03-01T12:00:00Z", T, True),
    ("profile.last_seen_at", "lte", "2026-03-01T11:59:59Z", T, False),
    ("event.properties.total", "gt", 100, 150.5, True),
    ("event.properties.total", "gte", 100, 100, True),
    ("event.properties.total", "lte", 100, 100.5, False),
    ("event.properties.paid_at", "lt", "2026-04-01T00:00:00Z", "2026-03-01T00:00:00Z", True),
    ("profile.event_count", "between", [1, 3], 3, True),
    ("profile.event_count", "between", [1, 3], 4, False),
    ("profile.first_seen_at", "between", ["2026-01-01T00:00:00Z", "2026-12-31T00:00:00Z"], T, True),
    ("event.properties.total", "between", [10, 20], 15, True),
    ("loyalty.tier", "in", ["gold", "silver"], "gold", True),
    ("loyalty.tier", "in", ["gold", "silver"], "bronze", False),
    ("profile.event_count", "in", [1, 2], 2, True),
    ("event.properties.code", "in", ["A", 7], 7, True),
    ("loyalty.tier", "not_in", ["gold"], "bronze", True),
    ("profile.event_count", "not_in", [1, 2], 2, False),
    ("event.properties.code", "not_in", ["A"], "B", True),
    ("event.properties.subject", "contains", "refund", "a refund please", True),
    ("event.source", "contains", "pos", "api", False),
    ("profile.tags", "contains", "vip", ["new", "vip"], True),
    ("profile.segments", "contains", "lapsed", ["new"], False),
    ("event.properties.items", "contains", "sku-1", ["sku-1"], True),
    ("event.type", "starts_with", "order.", "order.completed", True),
    ("event.properties.coupon", "starts_with", "XMAS", "SUMMER10", False),
    ("event.identifiers.email", "matches_glob", "*@example.com", "ann@example.com", True),
    ("event.properties.subject", "matches_glob", "*complain*", "My COMPLAINT", True),
    ("event.properties.subject", "matches_glob", "re: ?", "re: long", False),
    ("profile.traits.name", "exists", True, "Ann", True),
    ("loyalty.tier", "exists", True, "gold", True),
    ("profile.traits.name", "exists", False, MISSING, True),
    ("profile.event_count", "exists", True, MISSING, False),
    ("loyalty.balance", "exists", True, 0, True),
    ("profile.tags", "exists", True, [], True),
    ("event.occurred_at", "exists", True, T, True),
    ("event.traits.vip", "exists", True, False, True),
]


@pytest.mark.parametrize(("field", "op", "value", "seen", "matches"), OPERATOR_CASES)
def test_each_operator_on_its_types(
    field: str, op: str, value: Any, seen: Any, matches: bool
) -> None:
    result = evaluate_leaf(leaf(field, op, value), seen)
    assert result.matched is matches, result


def test_every_operator_and_every_type_is_covered() -> None:
    covered = {(op, parse_field(field).type) for field, op, *_ in OPERATOR_CASES}
    for spec in OPERATORS:
        for kind in spec.types:
            assert (spec.name, kind) in covered, f"{spec.name} on {kind} untested"
    assert set(_OPERATORS) | {"exists"} == {spec.name for spec in OPERATORS}


#: a field of each type
FIELD_OF_TYPE = {
    "string": "loyalty.tier",
    "number": "profile.event_count",
    "time": "profile.first_seen_at",
    "list": "profile.tags",
}


@pytest.mark.parametrize("spec", OPERATORS, ids=lambda spec: spec.name)
def test_operators_on_other_types_are_refused_at_validation(spec: Any) -> None:
    for kind, field in FIELD_OF_TYPE.items():
        if kind in spec.types:
            continue
        value = {"pair": [1, 2], "list": ["a"], "flag": True}.get(spec.value, "a")
        condition = {"field": field, "op": spec.name, "value": value}
        [(path, message)] = issues_of({"rules": [rule(conditions=condition)]})
        assert path == "rules[0].conditions.op"
        assert message.startswith(f"{spec.name} does not apply to {field} ({kind})")


@pytest.mark.parametrize(
    ("field", "op", "value", "message"),
    [
        ("profile.event_count", "eq", "three", "expected a number"),
        ("profile.event_count", "gt", True, "expected a number"),
        ("loyalty.tier", "eq", 3, "expected text"),
        ("event.channel", "eq", "fax", "'fax' never occurs; expected one of email"),
        ("profile.consent.sms", "in", ["yes"], "never occurs"),
        ("profile.first_seen_at", "gt", "2026-01-01", "ISO 8601 time with a zone"),
        ("profile.first_seen_at", "gt", "yesterday", "ISO 8601 time with a zone"),
        ("profile.event_count", "between", [5, 1], "low <= high"),
        ("profile.event_count", "between", [1], "[low, high]"),
        ("event.properties.x", "between", [1, "2026-01-01T00:00:00Z"], "of one type"),
        ("loyalty.tier", "in", [], "non-empty list"),
        ("loyalty.tier", "in", "gold", "non-empty list"),
        ("loyalty.tier", "starts_with", 1, "expected text"),
        ("profile.traits.x", "exists", "yes", "true or false"),
        ("profile.traits.x", "eq", {"a": 1}, "text, a number or true/false"),
        ("profile.traits.x", "eq", None, "compares with a value"),
    ],
)
def test_values_of_the_wrong_type_are_refused(
    field: str, op: str, value: Any, message: str
) -> None:
    condition = {"field": field, "op": op, "value": value}
    [(path, text)] = issues_of({"rules": [rule(conditions=condition)]})
    assert path == "rules[0].conditions.value"
    assert message in text


def test_unknown_operator_lists_the_operators() -> None:
    condition = {"field": "loyalty.tier", "op": "like", "value": "g"}
    [(path, message)] = issues_of({"rules": [rule(conditions=condition)]})
    assert path == "rules[0].conditions.op" and "expected one of eq, ne, gt" in message


def test_missing_values_and_runtime_type_mismatches_do_not_match() -> None:
    total = leaf("event.properties.total", "gt", 10)
    assert evaluate_leaf(total, MISSING).note == "missing"
    mismatch = evaluate_leaf(total, "lots")
    assert (mismatch.matched, mismatch.note) == (False, "type mismatch")
    assert evaluate_leaf(leaf("event.properties.total", "ne", 10), "10").matched is False


def test_evaluation_traces_the_leaves_it_evaluated_with_the_values_seen() -> None:
    rule_set = check_rule_set(
        {
            "rules": [
                rule(
                    conditions={
                        "all": [
                            {"field": "event.properties.total", "op": "gte", "value": 50},
                            {
                                "any": [
                                    {"field": "profile.traits.vip", "op": "eq", "value": True},
                                    {
                                        "field": "history.count(type=order.completed, window=30d)",
                                        "op": "gte",
                                        "value": 3,
                                    },
                                ]
                            },
                            {"not": {"field": "loyalty.tier", "op": "eq", "value": "gold"}},
                        ]
                    }
                )
            ]
        }
    )
    conditions = rule_set.rules[0].conditions
    [aggregate] = aggregates_of(conditions)
    assert aggregate.function == "count" and aggregate.type == "order.completed"
    context = Context(
        event={"type": "order.completed", "properties": {"total": 80}},
        profile={"traits": {"vip": False}},
        loyalty={"tier": "silver"},
        history={aggregate: 3},
    )
    result = evaluate(conditions, context)
    assert result.matched is True
    assert [(leaf.path, leaf.seen, leaf.matched) for leaf in result.trace] == [
        ("conditions.all[0]", 80, True),
        ("conditions.all[1].any[0]", False, False),
        ("conditions.all[1].any[1]", 3, True),
        ("conditions.all[2].not", "silver", False),
    ]
    assert json.dumps(result.view())  # plain data
    # the first leaf fails: all stops there, and the trace says why
    small = evaluate(
        conditions, Context(event={"properties": {"total": 10}}, history={aggregate: 0})
    )
    assert small.matched is False and [leaf.path for leaf in small.trace] == ["conditions.all[0]"]
    with pytest.raises(HubError, match="not computed"):
        evaluate(conditions, Context(event={"properties": {"total": 60}}, profile={"traits": {}}))


def test_no_conditions_always_match() -> None:
    compiled = check_rule_set({"rules": [rule()]}).rules[0]
    assert evaluate(compiled.conditions, Context(event={})).matched is True


# actions and templates


@pytest.mark.parametrize(
    ("action", "path", "message"),
    [
        ({"type": "send_sms", "text": "hi", "to": "x"}, "rules[0].actions[0].to", "takes no 'to'"),
        ({"type": "send_sms", "text": ""}, "rules[0].actions[0].text", "non-empty template"),
        ({"type": "send_email", "subject": "s"}, "rules[0].actions[0]", "needs 'text'"),
        (
            {"type": "send_email", "subject": "s", "text": "t", "reply": "yes"},
            "rules[0].actions[0].reply",
            "true or false",
        ),
        ({"type": "award_points"}, "rules[0].actions[0]", "exactly one of points or per_property"),
        (
            {"type": "award_points", "points": 5, "per_property": "total"},
            "rules[0].actions[0]",
            "exactly one",
        ),
        ({"type": "award_points", "points": -5}, "rules[0].actions[0].points", "above 0"),
        (
            {"type": "award_points", "points": 5, "rate": 2},
            "rules[0].actions[0].rate",
            "goes with per_property",
        ),
        (
            {"type": "award_points", "per_property": "a b"},
            "rules[0].actions[0].per_property",
            "plain property",
        ),
        ({"type": "deduct_points"}, "rules[0].actions[0]", "needs 'points'"),
        (
            {"type": "set_trait", "name": "x", "value": [1]},
            "rules[0].actions[0].value",
            "text, a number",
        ),
        (
            {"type": "emit_webhook", "event": "vip", "data": [1]},
            "rules[0].actions[0].data",
            "mapping",
        ),
        (
            {"type": "send_sms", "text": "{{ event.x }"},
            "rules[0].actions[0].text",
            "template syntax error",
        ),
        (
            {"type": "send_sms", "text": "{{ config }}"},
            "rules[0].actions[0].text",
            "template uses config",
        ),
    ],
)
def test_action_parameters_are_checked(action: dict[str, Any], path: str, message: str) -> None:
    found = issues_of({"rules": [rule(actions=[action])]})
    assert any(p == path and message in m for p, m in found), found


def test_every_action_type_accepts_its_parameters() -> None:
    actions = [
        {
            "type": "send_email",
            "subject": "Hi {{ profile.traits.name }}",
            "text": "t",
            "html": "<p>t</p>",
            "reply": True,
        },
        {"type": "send_sms", "text": "{{ loyalty.balance }} points"},
        {"type": "award_points", "per_property": "total", "rate": 0.5, "reason": "order"},
        {"type": "award_points", "points": 50},
        {"type": "deduct_points", "points": 10, "reason": "refund"},
        {"type": "set_tier", "tier": "gold"},
        {"type": "add_tag", "tag": "vip"},
        {"type": "remove_tag", "tag": "vip"},
        {"type": "set_trait", "name": "segment", "value": "a"},
        {"type": "enter_segment", "segment": "s"},
        {"type": "exit_segment", "segment": "s"},
        {"type": "emit_webhook", "event": "customer.vip", "data": {"level": 2}},
    ]
    compiled = check_rule_set({"rules": [rule(actions=actions)]}).rules[0]
    assert {a.type for a in compiled.actions} == {spec.type for spec in ACTIONS}


def test_the_vocabulary_is_exported_as_plain_data() -> None:
    exported = json.loads(json.dumps(export_vocabulary()))
    assert {o["name"] for o in exported["operators"]} == {spec.name for spec in OPERATORS}
    gt = next(o for o in exported["operators"] if o["name"] == "gt")
    assert gt["types"] == ["number", "time", "any"]
    assert {a["type"] for a in exported["actions"]} == {spec.type for spec in ACTIONS}
    sms = next(a for a in exported["actions"] if a["type"] == "send_sms")
    assert sms["params"][0] == {
        "name": "text",
        "type": "template",
        "required": True,
        "description": sms["params"][0]["description"],
    }
    names = {f["name"] for f in exported["fields"]}
    assert {
        "event.properties.<name>",
        "profile.identifiers.<kind>",
        "loyalty.balance",
        "loyalty.tier",
    } <= names
    assert {h["name"] for h in exported["history"]} == {
        "history.count",
        "history.sum",
        "history.days_since",
    }
    assert set(exported["value_types"]) == set(VALUE_TYPES)
    for example in exported["history"]:
        parse_field(example["example"])


# triggers and the index


def test_trigger_patterns() -> None:
    for good in ("order.completed", "order.*", "loyalty.tier.*", "*"):
        check_type_pattern(good)
    for bad in ("order*", "*.completed", "Order.Completed", "order", "order.*.x", ""):
        with pytest.raises(VocabularyError):
            check_type_pattern(bad)
    assert type_matches("order.*", "order.completed")
    assert not type_matches("order.*", "orders.completed")
    assert not type_matches("order.completed", "order.completed_late")
    assert type_matches("*", "page.viewed")


def compiled(rule_id: str, types: list[str], **more: Any) -> CompiledRule:
    return check_rule_set(
        {"rules": [rule(id=rule_id, trigger={"types": types, **more.pop("trigger", {})}, **more)]}
    ).rules[0]


def test_the_index_gives_only_matching_rules_in_priority_order() -> None:
    rules = [
        compiled("exact", ["order.completed"], priority=10),
        compiled("prefix", ["order.*"], priority=50),
        compiled("deep", ["loyalty.tier.*"]),
        compiled("every", ["*"], priority=1),
        compiled("both", ["order.completed", "order.*"], priority=50),  # listed once
        compiled("pos-only", ["order.completed"], trigger={"channels": ["pos"]}),
        compiled("off", ["order.completed"], enabled=False),
        compiled("pages", ["page.viewed"]),
    ]
    index = RuleIndex(rules)
    assert index.size == 7
    ids = [r.id for r in index.candidates("order.completed")]
    assert ids == ["pos-only", "both", "prefix", "exact", "every"]
    assert [r.id for r in index.candidates("order.completed", "web")] == [
        "both",
        "prefix",
        "exact",
        "every",
    ]
    assert [r.id for r in index.candidates("order.refunded", "pos")] == ["both", "prefix", "every"]
    assert [r.id for r in index.candidates("loyalty.tier.changed")] == ["deep", "every"]
    assert [r.id for r in index.candidates("loyalty.tier")] == ["every"]
    assert [r.id for r in index.candidates("orders.completed")] == ["every"]
    assert index.candidates("order.completed") is index.candidates("order.completed")  # cached
