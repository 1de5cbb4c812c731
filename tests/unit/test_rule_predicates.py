"""Compiled conditions decide exactly as the traced evaluation does, operator by operator."""

from __future__ import annotations

from typing import Any

import pytest
from test_rule_schema import OPERATOR_CASES, leaf, rule

from personalization.rules import Context, check_rule_set, evaluate
from personalization.rules.evaluate import MISSING
from personalization.rules.predicates import compile_conditions


def context_with(field: str, seen: Any) -> Context:
    """A context where ``field`` (``scope.a.b``) holds ``seen`` (MISSING: nothing there)."""
    scope, *path = field.split(".")
    scopes: dict[str, dict[str, Any]] = {"event": {}, "profile": {}, "loyalty": {}}
    if seen is not MISSING:
        target = scopes[scope]
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = seen
    return Context(event=scopes["event"], profile=scopes["profile"], loyalty=scopes["loyalty"])


@pytest.mark.parametrize(("field", "op", "value", "seen", "matches"), OPERATOR_CASES)
def test_a_compiled_leaf_matches_as_evaluate_does(
    field: str, op: str, value: Any, seen: Any, matches: bool
) -> None:
    condition = leaf(field, op, value)
    context = context_with(field, seen)
    assert compile_conditions(condition)(context) is matches
    assert evaluate(condition, context).matched is matches


def test_all_any_not_and_missing_values_compile_the_same() -> None:
    conditions = {
        "any": [
            {
                "all": [
                    {"field": "event.properties.total", "op": "gt", "value": 100},
                    {"not": {"field": "profile.tags", "op": "contains", "value": "staff"}},
                ]
            },
            {"field": "loyalty.tier", "op": "in", "value": ["gold"]},
        ]
    }
    compiled = check_rule_set({"rules": [rule(conditions=conditions)]}).rules[0].conditions
    holds = compile_conditions(compiled)
    cases = [
        ({"properties": {"total": 150}}, {"tags": ["new"]}, {}, True),
        ({"properties": {"total": 150}}, {"tags": ["staff"]}, {}, False),
        ({"properties": {"total": 150}}, {}, {}, True),  # no tags: not contains holds
        ({"properties": {"total": "150"}}, {}, {"tier": "gold"}, True),  # a text total
        ({"properties": {"total": "150"}}, {}, {"tier": "silver"}, False),
        ({}, {}, {}, False),
    ]
    for event, profile, loyalty, expected in cases:
        context = Context(event=event, profile=profile, loyalty=loyalty)
        assert holds(context) is expected, (event, profile, loyalty)
        assert evaluate(compiled, context).matched is expected
    assert compile_conditions(None)(Context(event={})) is True
