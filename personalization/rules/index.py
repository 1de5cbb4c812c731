"""Rules indexed by trigger, so an event meets only the rules that can fire for it.

Why: with hundreds of rules, scanning every rule for every event would cost more than the
rest of processing. Exact trigger types sit in a dict; a pattern ``order.*`` sits under its
prefix ``order.``, and an event of type ``a.b.c`` looks up its prefixes ``a.`` and
``a.b.`` (as many lookups as the type has dots), plus the rules triggered by ``*``. The
answer for a type is computed once and kept (a hub sees a few dozen types).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from personalization.labels.names import ACTION_CHANGES
from personalization.rules.evaluate import aggregates_of, leaves
from personalization.rules.predicates import Predicate, compile_conditions
from personalization.rules.schema import CompiledRule
from personalization.rules.vocabulary import ACTIONS_BY_TYPE, HistoryAggregate

#: actions that change points or tiers (the batch then locks the profiles' accounts)
LEDGER_ACTIONS = frozenset({"award_points", "deduct_points", "set_tier"})
#: templates naming these may read labels (rule-set traits extend ``profile.traits``)
_LABEL_WORDS = re.compile(r"\b(traits|tags|segments)\b")
#: actions that read nothing of the profile (its id only): points, tiers, labels, events
_PROFILE_FREE_ACTIONS = LEDGER_ACTIONS | frozenset(ACTION_CHANGES) | {"emit_webhook"}
#: event types whose candidates are kept (then the cache starts over)
_CACHE_TYPES = 4096


@dataclass(frozen=True)
class Candidates:
    """The rules an event of one type and channel meets, and what they need to read."""

    rules: tuple[CompiledRule, ...]
    #: each rule's compiled conditions, in the same order
    predicates: tuple[Predicate, ...]
    #: the profile keys their conditions read (``channels`` costs a query)
    profile_reads: frozenset[str]
    aggregates: frozenset[HistoryAggregate]
    #: some action changes points or tiers
    ledger: bool
    #: tags, segments or rule-set traits are read (conditions, templates) or changed
    labels: bool
    #: points or tier are read (conditions, templates) or changed
    loyalty: bool
    #: the profile's row, identifiers or consent are read (conditions, templates,
    #: messages, quiet hours); else the batch does not read them for this event
    profile: bool = True


class RuleIndex:
    """The enabled rules of a workspace, by trigger; candidates come in evaluation order."""

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        self._exact: dict[str, list[CompiledRule]] = {}
        self._prefix: dict[str, list[CompiledRule]] = {}
        self._every: list[CompiledRule] = []
        self._cache: dict[str, tuple[CompiledRule, ...]] = {}
        self._plans: dict[tuple[str, str | None], Candidates] = {}
        self._predicates: dict[str, Predicate] = {}
        self.size = 0
        for rule in rules:
            if not rule.enabled:
                continue
            self.size += 1
            self._predicates[rule.id] = compile_conditions(rule.conditions)
            for pattern in rule.types:
                if pattern == "*":
                    self._every.append(rule)
                elif pattern.endswith(".*"):
                    self._prefix.setdefault(pattern[:-1], []).append(rule)
                else:
                    self._exact.setdefault(pattern, []).append(rule)

    def candidates(self, event_type: str, channel: str | None = None) -> tuple[CompiledRule, ...]:
        """Rules whose trigger matches, highest ``priority`` first (ties: by id)."""
        by_type = self._cache.get(event_type)
        if by_type is None:
            if len(self._cache) >= _CACHE_TYPES:
                self._cache.clear()
            by_type = self._cache[event_type] = self._for_type(event_type)
        if channel is None:
            return by_type
        return tuple(rule for rule in by_type if not rule.channels or channel in rule.channels)

    def plan(self, event_type: str, channel: str | None) -> Candidates:
        """:meth:`candidates` with their compiled conditions and needs (kept per key)."""
        key = (event_type, channel)
        found = self._plans.get(key)
        if found is None:
            if len(self._plans) >= _CACHE_TYPES:
                self._plans.clear()
            rules = self.candidates(event_type, channel)
            found = self._plans[key] = Candidates(
                rules,
                tuple(self._predicates[rule.id] for rule in rules),
                frozenset(
                    leaf.field.path[0]
                    for rule in rules
                    for leaf in leaves(rule.conditions)
                    if leaf.field.scope == "profile" and leaf.field.path
                ),
                frozenset().union(*(aggregates_of(rule.conditions) for rule in rules)),
                any(a.type in LEDGER_ACTIONS for rule in rules for a in rule.actions),
                any(_uses_labels(rule) for rule in rules),
                any(_uses_loyalty(rule) for rule in rules),
                any(_uses_profile(rule) for rule in rules),
            )
        return found

    def _for_type(self, event_type: str) -> tuple[CompiledRule, ...]:
        found = {rule.id: rule for rule in self._exact.get(event_type, ())}
        dot = event_type.find(".")
        while dot != -1:
            for rule in self._prefix.get(event_type[: dot + 1], ()):
                found[rule.id] = rule
            dot = event_type.find(".", dot + 1)
        for rule in self._every:
            found[rule.id] = rule
        return tuple(sorted(found.values(), key=lambda rule: (-rule.priority, rule.id)))


def _templates(rule: CompiledRule) -> list[str]:
    """The rule's template texts (the parameters the vocabulary declares as templates)."""
    return [
        value
        for action in rule.actions
        for spec in ACTIONS_BY_TYPE[action.type].params
        if spec.type == "template" and isinstance(value := action.params.get(spec.name), str)
    ]


def _uses_labels(rule: CompiledRule) -> bool:
    """Does the rule change labels, or read tags, segments or traits (which labels extend)?"""
    if any(action.type in ACTION_CHANGES for action in rule.actions):
        return True
    if any(_LABEL_WORDS.search(text) for text in _templates(rule)):
        return True
    return any(
        leaf.field.scope == "profile"
        and leaf.field.path[:1] in (("tags",), ("segments",), ("traits",))
        for leaf in leaves(rule.conditions)
    )


def _uses_profile(rule: CompiledRule) -> bool:
    """Does the rule read the profile: its conditions, or an action other than points,
    tiers, labels and custom events (messages need its address, consent and templates)?"""
    if rule.guards.quiet_hours is not None:  # the time zone trait
        return True
    if any(action.type not in _PROFILE_FREE_ACTIONS for action in rule.actions):
        return True
    if _templates(rule):
        return True
    return any(leaf.field.scope == "profile" for leaf in leaves(rule.conditions))


def _uses_loyalty(rule: CompiledRule) -> bool:
    """Does the rule change points or tiers, or read them (conditions, templates)?"""
    if any(action.type in LEDGER_ACTIONS for action in rule.actions):
        return True
    if any("loyalty" in text for text in _templates(rule)):
        return True
    return any(leaf.field.scope == "loyalty" for leaf in leaves(rule.conditions))
