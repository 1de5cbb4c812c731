"""How a profile's traits are merged: source priority first, then the most recent event.

Each trait keeps the value of the event that set it, with when that event happened
(``trait_times``) and which source sent it (``trait_sources``). A new value replaces the
kept one when its source ranks higher in ``trait_sources`` of the identity configuration
(a CRM import over a web form, say), or ranks the same and its event happened at the same
time or later. Sources not listed rank below every listed one, and equal among
themselves, so with no list at all the most recent event wins. Time is when the event
happened, not when it arrived: a late POS upload does not overwrite a newer web form.
Merging two profiles applies the same rule to what each kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

Rank = Callable[[str], int]


class TraitUpdate(NamedTuple):
    """Traits one event (or one merged profile) brings."""

    occurred_at: datetime
    values: Mapping[str, Any]
    source: str = ""


class MergedTraits(NamedTuple):
    traits: dict[str, Any]
    times: dict[str, str]
    sources: dict[str, str]


def _no_priority(_source: str) -> int:
    return 0


def merge_traits(
    traits: Mapping[str, Any],
    times: Mapping[str, str],
    updates: Iterable[TraitUpdate],
    sources: Mapping[str, str] | None = None,
    rank: Rank = _no_priority,
) -> MergedTraits:
    """Apply ``updates`` to what a profile keeps (see the module docstring)."""
    merged = MergedTraits(dict(traits), dict(times), dict(sources or {}))
    for update in sorted(updates, key=lambda item: item.occurred_at):
        stamp, new_rank = update.occurred_at.isoformat(), rank(update.source)
        for name, value in update.values.items():
            kept = merged.times.get(name)
            if kept is not None:
                kept_rank = rank(merged.sources.get(name, ""))
                if new_rank > kept_rank or (new_rank == kept_rank and stamp < kept):
                    continue
            merged.traits[name] = value
            merged.times[name] = stamp
            if update.source:
                merged.sources[name] = update.source
    return merged


def as_updates(
    traits: Mapping[str, Any], times: Mapping[str, str], sources: Mapping[str, str] | None = None
) -> list[TraitUpdate]:
    """A profile's traits as the updates :func:`merge_traits` takes (to merge two)."""
    sources = sources or {}
    return [
        TraitUpdate(datetime.fromisoformat(times[name]), {name: value}, sources.get(name, ""))
        for name, value in traits.items()
        if name in times
    ]


__all__ = ["MergedTraits", "TraitUpdate", "as_updates", "merge_traits"]
