"""Conditions compiled into plain Python closures, once per rule set.

Why: walking the condition tree for every (rule, event) pair, checking each node's class
and looking the operator up each time, was the largest cost of evaluating a rule that does
not match. A closure per node binds the operator, the value and the field's path when the
rules are loaded; evaluating is then a few calls. The semantics are exactly
:func:`personalization.rules.evaluate.evaluate`'s (its module doc); the trace of a match
is still built by ``evaluate``, only for the pairs that match.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from personalization.rules.evaluate import _MISMATCH, _OPERATORS, MISSING, Context
from personalization.rules.schema import AllOf, AnyOf, Condition, Leaf, NotOf
from pipeline.errors import HubError

Predicate = Callable[[Context], bool]


def compile_conditions(conditions: Condition | None) -> Predicate:
    """A function of the context that is true when ``conditions`` hold (none: always)."""
    if conditions is None:
        return _always
    return _compile(conditions)


def _always(context: Context) -> bool:
    return True


def _compile(node: Condition) -> Predicate:
    if isinstance(node, Leaf):
        return _leaf(node)
    if isinstance(node, AllOf):
        items = tuple(_compile(item) for item in node.items)
        if len(items) == 1:
            return items[0]
        return lambda context: all(item(context) for item in items)
    if isinstance(node, AnyOf):
        items = tuple(_compile(item) for item in node.items)
        if len(items) == 1:
            return items[0]
        return lambda context: any(item(context) for item in items)
    if isinstance(node, NotOf):
        inner = _compile(node.item)
        return lambda context: not inner(context)
    raise HubError(f"not a condition: {node!r}")  # pragma: no cover


def _reader(leaf: Leaf) -> Callable[[Context], Any]:
    ref = leaf.field
    aggregate = ref.aggregate
    if aggregate is not None:
        text = ref.text

        def read_history(context: Context) -> Any:
            try:
                value = context.history[aggregate]
            except KeyError:
                raise HubError(f"{text} was not computed for this context") from None
            return MISSING if value is None else value

        return read_history
    scope, path = ref.scope, ref.path

    def read(context: Context) -> Any:
        value: Any = (
            context.event
            if scope == "event"
            else context.profile
            if scope == "profile"
            else context.loyalty
        )
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
            if value is None:
                return MISSING
        return MISSING if value is None else value

    return read


def _leaf(leaf: Leaf) -> Predicate:
    read, expected = _reader(leaf), leaf.value
    if leaf.op == "exists":
        return lambda context: (read(context) is not MISSING) == expected
    operator = _OPERATORS[leaf.op]

    def holds(context: Context) -> bool:
        seen = read(context)
        if seen is MISSING:
            return False
        outcome = operator(seen, expected)
        return outcome is not _MISMATCH and bool(outcome)

    return holds


__all__ = ["Predicate", "compile_conditions"]
