"""Evaluate a rule's conditions against one event's context: pure, typed, traced.

Why no ``eval`` and no ``getattr``: a field was parsed at validation into a scope and a
path of keys (:class:`~personalization.rules.vocabulary.FieldRef`), and here it is read
with mapping lookups only, from the plain mappings of a :class:`Context`; operators are a
closed table of functions. A rule can therefore read nothing the vocabulary does not list.

Semantics, in short:

- a field with no value (missing key, ``None``, no such event for ``days_since``) matches
  only ``exists: false``; every other operator is false on it;
- a value of another type than the rule compares with (a trait that holds text where the
  rule says ``gt: 10``) does not match either: the trace notes ``type mismatch``;
- ``true`` and ``1`` are different values (booleans are not numbers);
- text compares exactly, except ``matches_glob``, which ignores case (``*complaint*``
  matches "Complaint about my order");
- ``all`` and ``any`` stop at the first leaf that decides them, so the trace lists the
  leaves that were evaluated, in order, each with the value seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from personalization.rules.schema import AllOf, AnyOf, Condition, Leaf, NotOf, time_value
from personalization.rules.vocabulary import HistoryAggregate
from pipeline.errors import HubError


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_MISMATCH: Any = object()


@dataclass(frozen=True)
class Context:
    """What conditions may see for one event, as plain mappings.

    ``event``: ``type``, ``channel``, ``source``, ``occurred_at``, ``properties``, ``traits``,
    ``identifiers``. ``profile``: ``traits``, ``identifiers`` (kind → value), ``event_count``,
    ``first_seen_at``, ``last_seen_at``, ``channels`` (channel → count), ``consent``
    (channel → status), ``segments``, ``tags``. ``loyalty``: ``balance``, ``tier``.
    ``history``: each aggregate the rules need (see :func:`aggregates_of`), computed as of
    the event's ``occurred_at`` (:func:`personalization.rules.history.history_value`).
    """

    event: Mapping[str, Any]
    profile: Mapping[str, Any] = field(default_factory=dict)
    loyalty: Mapping[str, Any] = field(default_factory=dict)
    history: Mapping[HistoryAggregate, Any] = field(default_factory=dict)

    def read(self, leaf: Leaf) -> Any:
        """The value a leaf's field names, or :data:`MISSING`."""
        ref = leaf.field
        if ref.aggregate is not None:
            if ref.aggregate not in self.history:
                raise HubError(f"{ref.text} was not computed for this context")
            value = self.history[ref.aggregate]
        else:
            value = (
                self.event
                if ref.scope == "event"
                else self.profile
                if ref.scope == "profile"
                else self.loyalty
            )
            for key in ref.path:
                value = value.get(key) if isinstance(value, Mapping) else None
                if value is None:
                    break
        return MISSING if value is None else value


@dataclass(frozen=True)
class LeafResult:
    """One evaluated leaf: what it compared, the value seen, and whether it matched."""

    path: str
    field: str
    op: str
    value: Any
    seen: Any
    matched: bool
    #: ``missing`` or ``type mismatch`` when that decided it
    note: str | None = None

    def view(self) -> dict[str, Any]:
        view = {
            "path": self.path,
            "field": self.field,
            "op": self.op,
            "value": _plain(self.value),
            "seen": None if self.seen is MISSING else _plain(self.seen),
            "matched": self.matched,
        }
        if self.note:
            view["note"] = self.note
        return view


@dataclass(frozen=True)
class Evaluation:
    matched: bool
    trace: tuple[LeafResult, ...]

    def view(self) -> dict[str, Any]:
        return {"matched": self.matched, "trace": [leaf.view() for leaf in self.trace]}


def matches(conditions: Condition | None, context: Context) -> bool:
    """Do ``conditions`` hold? As :func:`evaluate`, without building the trace.

    Why both: most (rule, event) pairs a trigger selects do not match, and only a firing
    (or a traced near miss) keeps a trace, so the worker asks this first.
    """
    return conditions is None or _holds(conditions, context)


def _holds(node: Condition, context: Context) -> bool:
    if isinstance(node, Leaf):
        seen = context.read(node)
        if node.op == "exists":
            return bool((seen is not MISSING) == node.value)
        if seen is MISSING:
            return False
        outcome = _OPERATORS[node.op](seen, node.value)
        return outcome is not _MISMATCH and bool(outcome)
    if isinstance(node, AllOf):
        return all(_holds(item, context) for item in node.items)
    if isinstance(node, AnyOf):
        return any(_holds(item, context) for item in node.items)
    if isinstance(node, NotOf):
        return not _holds(node.item, context)
    raise HubError(f"not a condition: {node!r}")  # pragma: no cover


def evaluate(conditions: Condition | None, context: Context) -> Evaluation:
    """Do ``conditions`` hold in ``context``? (no conditions: always), with the trace."""
    if conditions is None:
        return Evaluation(True, ())
    trace: list[LeafResult] = []
    matched = _evaluate(conditions, context, trace)
    return Evaluation(matched, tuple(trace))


def _evaluate(node: Condition, context: Context, trace: list[LeafResult]) -> bool:
    if isinstance(node, Leaf):
        result = evaluate_leaf(node, context.read(node))
        trace.append(result)
        return result.matched
    if isinstance(node, AllOf):
        return all(_evaluate(item, context, trace) for item in node.items)
    if isinstance(node, AnyOf):
        return any(_evaluate(item, context, trace) for item in node.items)
    if isinstance(node, NotOf):
        return not _evaluate(node.item, context, trace)
    raise HubError(f"not a condition: {node!r}")  # pragma: no cover


def evaluate_leaf(leaf: Leaf, seen: Any) -> LeafResult:
    """Apply a leaf's operator to the value seen (:data:`MISSING` when there is none)."""

    def result(matched: bool, note: str | None = None) -> LeafResult:
        return LeafResult(leaf.path, leaf.field.text, leaf.op, leaf.value, seen, matched, note)

    if leaf.op == "exists":
        return result((seen is not MISSING) == leaf.value)
    if seen is MISSING:
        return result(False, "missing")
    outcome = _OPERATORS[leaf.op](seen, leaf.value)
    if outcome is _MISMATCH:
        return result(False, "type mismatch")
    return result(bool(outcome))


def aggregates_of(conditions: Condition | None) -> set[HistoryAggregate]:
    """The history aggregates a condition tree reads (compute these, and only these)."""
    return {leaf.field.aggregate for leaf in leaves(conditions) if leaf.field.aggregate}


def leaves(node: Condition | None) -> Iterator[Leaf]:
    if node is None:
        return
    if isinstance(node, Leaf):
        yield node
    elif isinstance(node, AllOf | AnyOf):
        for item in node.items:
            yield from leaves(item)
    else:
        yield from leaves(node.item)


# Operators: each takes (seen, value) and returns a bool, or _MISMATCH when the seen value
# is of a type the value cannot be compared with.


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "time"
    return "other"


def _like(seen: Any, value: Any) -> Any:
    """``seen`` in the type of ``value`` (times may arrive as ISO text), or _MISMATCH."""
    if isinstance(value, datetime):
        when = time_value(seen)
        return _MISMATCH if when is None else when
    return seen if _kind(seen) == _kind(value) else _MISMATCH


def _ordered(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], Any]:
    def operator(seen: Any, value: Any) -> Any:
        seen = _like(seen, value)
        return _MISMATCH if seen is _MISMATCH else compare(seen, value)

    return operator


def _eq(seen: Any, value: Any) -> Any:
    seen = _like(seen, value)
    return _MISMATCH if seen is _MISMATCH else seen == value


def _ne(seen: Any, value: Any) -> Any:
    seen = _like(seen, value)
    return _MISMATCH if seen is _MISMATCH else seen != value


def _in(seen: Any, values: tuple[Any, ...]) -> Any:
    comparable = [value for value in values if _kind(value) == _kind(seen)]
    if not comparable:
        return _MISMATCH
    return seen in comparable


def _not_in(seen: Any, values: tuple[Any, ...]) -> Any:
    found = _in(seen, values)
    return found if found is _MISMATCH else not found


def _between(seen: Any, pair: tuple[Any, Any]) -> Any:
    low, high = pair
    seen = _like(seen, low)
    return _MISMATCH if seen is _MISMATCH else low <= seen <= high


def _contains(seen: Any, value: Any) -> Any:
    if isinstance(seen, str):
        return value in seen if isinstance(value, str) else _MISMATCH
    if isinstance(seen, list | tuple):
        return any(_kind(item) == _kind(value) and item == value for item in seen)
    return _MISMATCH


def _starts_with(seen: Any, value: str) -> Any:
    return seen.startswith(value) if isinstance(seen, str) else _MISMATCH


def _matches_glob(seen: Any, value: str) -> Any:
    if not isinstance(seen, str):
        return _MISMATCH
    return fnmatchcase(seen.casefold(), value.casefold())


_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": _eq,
    "ne": _ne,
    "gt": _ordered(lambda a, b: a > b),
    "gte": _ordered(lambda a, b: a >= b),
    "lt": _ordered(lambda a, b: a < b),
    "lte": _ordered(lambda a, b: a <= b),
    "between": _between,
    "in": _in,
    "not_in": _not_in,
    "contains": _contains,
    "starts_with": _starts_with,
    "matches_glob": _matches_glob,
}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
