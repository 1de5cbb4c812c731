"""Rules indexed by trigger, so an event meets only the rules that can fire for it.

Why: with hundreds of rules, scanning every rule for every event would cost more than the
rest of processing. Exact trigger types sit in a dict; a pattern ``order.*`` sits under its
prefix ``order.``, and an event of type ``a.b.c`` looks up its prefixes ``a.`` and
``a.b.`` (as many lookups as the type has dots), plus the rules triggered by ``*``. The
answer for a type is computed once and kept (a hub sees a few dozen types).
"""

from __future__ import annotations

from collections.abc import Iterable

from personalization.rules.schema import CompiledRule

#: event types whose candidates are kept (then the cache starts over)
_CACHE_TYPES = 4096


class RuleIndex:
    """The enabled rules of a workspace, by trigger; candidates come in evaluation order."""

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        self._exact: dict[str, list[CompiledRule]] = {}
        self._prefix: dict[str, list[CompiledRule]] = {}
        self._every: list[CompiledRule] = []
        self._cache: dict[str, tuple[CompiledRule, ...]] = {}
        self.size = 0
        for rule in rules:
            if not rule.enabled:
                continue
            self.size += 1
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
