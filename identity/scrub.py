"""Placeholders and scrubbing: how an erasure rewrites what mentions a person.

An erased identifier's value becomes a placeholder, ``erased:`` and 32 random hex digits:
unique (the identifier rows' unique key holds), the same wherever that identifier
appears (a replay of the log rebuilds the same erased profile), and unguessable (no event
can carry it, so nothing ever joins the erased profile again). :class:`Scrubber` keeps
the placeholders and the person's trait values, and rewrites any text or JSON document
that mentions them. :func:`kept_properties` is the policy for an erased event's
properties: only non-personal aggregates stay.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

#: what a mention of the person in free text becomes
ERASED = "[erased]"
#: an erased identifier's value: this and 32 random hex digits
PLACEHOLDER_PREFIX = "erased:"
_PLACEHOLDER = re.compile(r"erased:[0-9a-f]{32}")
#: what an erased event's context becomes
ERASED_CONTEXT: Mapping[str, Any] = {"erased": True}

#: event properties kept when they are numbers or flags: totals, counts, durations
KEPT_NUMBERS = frozenset(
    {
        "total",
        "subtotal",
        "tax",
        "discount",
        "revenue",
        "value",
        "price",
        "quantity",
        "item_count",
        "duration",
        "talk_seconds",
        "recording_duration",
        "num_media",
        "num_segments",
        "attachment_count",
        "size",
        "mime_defects",
        "text_truncated",
        "auto_reply",
        "bulk",
        "bounce",
        "automated",
    }
)

#: event properties kept when they are short labels from a closed vocabulary
KEPT_LABELS = frozenset(
    {"currency", "kind", "disposition", "direction", "status", "body_format", "store_id", "via"}
)

_MAX_LABEL = 64

Key = tuple[str, str]


def is_placeholder(value: str) -> bool:
    """Whether an identifier value is one an erasure left."""
    return _PLACEHOLDER.fullmatch(value) is not None


def kept_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """The non-personal aggregates among an event's properties: the numbers and flags named
    in :data:`KEPT_NUMBERS`, the short labels (not addresses) named in :data:`KEPT_LABELS`."""
    kept: dict[str, Any] = {}
    for name, value in properties.items():
        number = name in KEPT_NUMBERS and isinstance(value, int | float)  # bools are ints
        label = name in KEPT_LABELS and isinstance(value, str) and len(value) <= _MAX_LABEL
        if number or (label and "@" not in value):
            kept[name] = value
    return kept


class Scrubber:
    """The person's identifiers with their placeholders, and text that must not survive.

    :meth:`placeholder` gives each of the person's identifiers its placeholder, the same
    one wherever it appears; ``held`` are those an identifier row holds (events keep
    them, as placeholders). :meth:`remember` notes trait values. :meth:`text` and
    :meth:`doc` then rewrite any text mentioning the person: an identifier written
    ``kind:value`` becomes ``kind:placeholder``, any other mention ``[erased]`` (values
    under three characters are not searched for).
    """

    def __init__(self) -> None:
        self.placeholders: dict[Key, str] = {}
        self.held: set[Key] = set()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._dirty = False

    def placeholder(self, kind: str, value: str, *, same_as: Key | None = None) -> str:
        """The placeholder of one identifier (``same_as``: share another spelling's)."""
        if is_placeholder(value):
            return value
        found = self.placeholders.get((kind, value))
        if found is None:
            shared = self.placeholders.get(same_as) if same_as else None
            found = shared or PLACEHOLDER_PREFIX + uuid.uuid4().hex
            self.placeholders[(kind, value)] = found
            self._note(value)
        return found

    def originals(self, kind: str) -> set[str]:
        """The person's erased values of one kind (``email``, ``phone`` …), as they were."""
        return {value for (k, value) in self.placeholders if k == kind}

    def remember(self, value: Any) -> None:
        """Note the strings (and numbers of four digits or more) in a trait value."""
        if isinstance(value, str):
            self._note(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if len(str(value)) >= 4:
                self._note(str(value))
        elif isinstance(value, dict):
            for item in value.values():
                self.remember(item)
        elif isinstance(value, list):
            for item in value:
                self.remember(item)

    def _note(self, value: str) -> None:
        value = value.strip()
        if len(value) >= 3 and value not in self._secrets:
            self._secrets.add(value)
            self._dirty = True

    def text(self, value: str) -> str:
        """``value`` with every mention of the person replaced."""
        kind, sep, rest = value.partition(":")
        if sep and (kind, rest) in self.placeholders:
            return f"{kind}:{self.placeholders[(kind, rest)]}"
        if self._dirty:
            words = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, words)), re.IGNORECASE)
            self._dirty = False
        return self._pattern.sub(ERASED, value) if self._pattern else value

    def doc(self, value: Any) -> Any:
        """A JSON document with every string in it (keys too) passed through :meth:`text`."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.doc(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.doc(item) for item in value]
        return value


__all__ = [
    "ERASED",
    "ERASED_CONTEXT",
    "KEPT_LABELS",
    "KEPT_NUMBERS",
    "PLACEHOLDER_PREFIX",
    "Scrubber",
    "is_placeholder",
    "kept_properties",
]
