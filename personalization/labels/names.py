"""What a label change is, and which names and values are accepted.

Why validated here and not only in the rule schema: tags can also come from the admin
API (and later the CLI), and a name written wrongly once ("VIP " beside "vip") would be a
second tag forever. Tag and segment names are lower-cased; trait names are kept as written
(``first_name`` and ``firstName`` are different traits) and must be what a rule can read
back as ``profile.traits.<name>``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from pipeline.errors import ValidationError

TAG: Final = "tag"
SEGMENT: Final = "segment"
TRAIT: Final = "trait"
KINDS: Final = (TAG, SEGMENT, TRAIT)

ADD: Final = "add"
REMOVE: Final = "remove"
SET: Final = "set"
UNSET: Final = "unset"
#: the operations each kind takes
OPS: Final[Mapping[str, tuple[str, ...]]] = {
    TAG: (ADD, REMOVE),
    SEGMENT: (ADD, REMOVE),
    TRAIT: (SET, UNSET),
}

#: a tag or segment name, after lower-casing
LABEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,62}$")
#: a trait name: the same keys the rules vocabulary reads as ``profile.traits.<name>``
TRAIT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
MAX_TEXT_VALUE = 1024
MAX_SOURCE = 120
MAX_KEY = 255
_INT_LIMIT = 2**63  # orjson writes 64-bit integers; JSONB stores them exactly
_EXACT_FLOAT = 2**53

#: the rule actions that change labels: action type -> (kind, op, parameter naming it)
ACTION_CHANGES: Final[Mapping[str, tuple[str, str, str]]] = {
    "add_tag": (TAG, ADD, "tag"),
    "remove_tag": (TAG, REMOVE, "tag"),
    "enter_segment": (SEGMENT, ADD, "segment"),
    "exit_segment": (SEGMENT, REMOVE, "segment"),
    "set_trait": (TRAIT, SET, "name"),
}


@dataclass(frozen=True)
class LabelChange:
    """One change asked of one profile's labels.

    ``profile_id`` is the survivor the row is written to (a merged-away id is followed to
    its survivor anyway); ``key`` is the idempotency key, unique per workspace: a change
    whose key was already written is a ``duplicate`` and writes nothing.
    """

    profile_id: str
    kind: str
    name: str
    op: str
    source: str
    key: str
    value: Any = None
    event_id: int | None = None


def check_name(kind: str, name: Any, field: str | None = None) -> str:
    """The name as stored (tags and segments lower-cased); raises :class:`ValidationError`."""
    field = field or (kind if kind in KINDS else "kind")
    if kind not in KINDS:
        raise ValidationError("kind", f"expected one of {', '.join(KINDS)}, not {kind!r}")
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(field, "expected a non-empty name")
    if kind == TRAIT:
        cleaned = name.strip()
        if not TRAIT_NAME.match(cleaned):
            raise ValidationError(
                field, "a trait name is a letter or _ then letters, digits, _ or - (at most 64)"
            )
        return cleaned
    cleaned = name.strip().lower()
    if not LABEL_NAME.match(cleaned):
        raise ValidationError(
            field,
            f"a {kind} name is a letter or digit then letters, digits, _ . : - (at most 63)",
        )
    return cleaned


def check_value(value: Any, field: str = "value") -> Any:
    """A trait value: text, a finite number or true/false (raises :class:`ValidationError`);
    a whole float becomes an integer.

    Why scalars only: a trait is read by rule conditions and templates, and compared with
    ``eq``/``gt``…; documents belong in events.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT_VALUE:
            raise ValidationError(field, f"at most {MAX_TEXT_VALUE} characters")
        return value
    if isinstance(value, int):
        if not -_INT_LIMIT <= value < _INT_LIMIT:
            raise ValidationError(field, "an integer within 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(field, "a finite number")
        # 1.0 is 1: SQLite would store it so anyway, and both databases must agree
        return int(value) if value.is_integer() and abs(value) < _EXACT_FLOAT else value
    raise ValidationError(field, "expected text, a number or true/false")


def check_change(change: LabelChange, field: str = "") -> LabelChange:
    """The change with its name normalized; raises :class:`ValidationError` naming the field
    (``field`` prefixes it, e.g. ``changes[3]``)."""

    def at(name: str) -> str:
        return f"{field}.{name}" if field else name

    if change.kind not in KINDS:
        raise ValidationError(at("kind"), f"expected one of {', '.join(KINDS)}")
    if change.op not in OPS[change.kind]:
        raise ValidationError(
            at("op"), f"a {change.kind} takes {' or '.join(OPS[change.kind])}, not {change.op!r}"
        )
    # the field a rule action or an API path names it by: tag, segment, name (of a trait)
    name = check_name(change.kind, change.name, at("name" if change.kind == TRAIT else change.kind))
    if change.op == SET:
        value = check_value(change.value, at("value"))
    elif change.value is not None:
        raise ValidationError(at("value"), f"{change.op} takes no value")
    else:
        value = None
    for attr, longest in (("profile_id", 40), ("source", MAX_SOURCE), ("key", MAX_KEY)):
        text = getattr(change, attr)
        if not isinstance(text, str) or not 1 <= len(text) <= longest:
            raise ValidationError(at(attr), f"a string of 1 to {longest} characters")
    if change.event_id is not None and (
        isinstance(change.event_id, bool) or not isinstance(change.event_id, int)
    ):
        raise ValidationError(at("event_id"), "an event log id (integer) or none")
    return replace(change, name=name, value=value)


def change_for_action(
    action_type: str,
    params: Mapping[str, Any],
    *,
    profile_id: str,
    source: str,
    key: str,
    event_id: int | None = None,
) -> LabelChange:
    """The label change a rule action asks for (``add_tag {tag}``, ``set_trait {name,
    value}`` …, see :data:`ACTION_CHANGES`); raises :class:`ValidationError` for another
    action type or a bad name or value."""
    try:
        kind, op, param = ACTION_CHANGES[action_type]
    except KeyError:
        raise ValidationError("type", f"{action_type!r} does not change labels") from None
    change = LabelChange(
        profile_id=profile_id,
        kind=kind,
        name=params.get(param),  # type: ignore[arg-type]  # checked below
        op=op,
        source=source,
        key=key,
        value=params.get("value") if op == SET else None,
        event_id=event_id,
    )
    return check_change(change)


__all__ = [
    "ACTION_CHANGES",
    "ADD",
    "KINDS",
    "LABEL_NAME",
    "OPS",
    "REMOVE",
    "SEGMENT",
    "SET",
    "TAG",
    "TRAIT",
    "TRAIT_NAME",
    "UNSET",
    "LabelChange",
    "change_for_action",
    "check_change",
    "check_name",
    "check_value",
]
