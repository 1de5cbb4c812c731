"""The rules vocabulary, declared in code: fields, operators, history aggregates, actions.

Why declared, and exported (:func:`export_vocabulary`, ``GET /v1/rules/vocabulary``): a rule
can only name what is listed here, so a UI built from the export can only build valid
rules, and evaluation never looks a name up dynamically (no ``eval``, no ``getattr``).

A field is written as a dotted name. Three shapes exist:

- fixed: ``event.type``, ``profile.event_count``, ``loyalty.balance`` …
- keyed: ``event.properties.<name>``, ``profile.traits.<name>``, ``profile.identifiers.<kind>``
  (the key is a plain identifier: letters, digits, ``_``, ``-``);
- a history aggregate over the profile's events up to the triggering event:
  ``history.count(type=order.completed, window=30d)``, ``history.sum(property=total,
  window=90d)``, ``history.days_since(type=page.viewed)``.

Each field has a value type (:data:`VALUE_TYPES`); each operator names the types it applies
to, so ``{field: profile.event_count, op: starts_with}`` is refused at validation. Keyed
fields over free-form data (properties, traits) are ``any``: the value given decides how
it compares, and a value of another type seen at run time simply does not match.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any, Final

from pipeline.caps import MAX_PERIOD, PERIOD_HINT
from pipeline.envelope import Channel

STRING: Final = "string"
NUMBER: Final = "number"
TIME: Final = "time"
LIST: Final = "list"
ANY: Final = "any"
#: field types; true/false live in free-form data, compared through ``any`` fields
VALUE_TYPES = (STRING, NUMBER, TIME, LIST, ANY)

CHANNELS: tuple[str, ...] = tuple(member.value for member in Channel)

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
#: an event type as the envelope spells it (``order.completed``) and a pattern's prefix
_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_PREFIX = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_WINDOW = re.compile(r"^([1-9][0-9]{0,4})([hdw])$")
_WINDOW_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


class VocabularyError(ValueError):
    """A name that is not in the vocabulary (the message says what was expected)."""


@dataclass(frozen=True)
class FieldSpec:
    """One field a condition may read."""

    name: str
    type: str
    description: str
    #: ``<name>`` in the name: the part a rule supplies (a property, trait or identifier)
    keyed: bool = False
    #: the only values it takes (compared values must be among them)
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class FieldRef:
    """A field a rule names, parsed: ``scope`` and ``path`` are looked up in the context."""

    text: str
    #: ``event``, ``profile``, ``loyalty`` or ``history``
    scope: str
    #: keys within the scope, e.g. ``("properties", "total")``; empty for history
    path: tuple[str, ...]
    type: str
    aggregate: HistoryAggregate | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class HistoryAggregate:
    """A count, sum or recency over the profile's events at or before the triggering one.

    ``type`` may be a pattern (``order.*``); ``window`` bounds how far back (``None``: all
    the profile's history). Hashable, so a batch computes each distinct aggregate once.
    """

    function: str
    type: str | None = None
    channel: str | None = None
    #: the numeric event property ``sum`` adds up (``property=`` in the rule)
    property_name: str | None = None
    window: timedelta | None = None

    @property
    def text(self) -> str:
        parts = [
            f"{name}={value}"
            for name, value in (
                ("type", self.type),
                ("channel", self.channel),
                ("property", self.property_name),
                ("window", _window_text(self.window)),
            )
            if value is not None
        ]
        return f"history.{self.function}({', '.join(parts)})"


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("event.type", STRING, "the event's type, e.g. order.completed"),
    FieldSpec("event.channel", STRING, "the touchpoint", choices=CHANNELS),
    FieldSpec("event.source", STRING, "the connector or integration that sent the event"),
    FieldSpec("event.occurred_at", TIME, "when the event happened"),
    FieldSpec("event.properties.<name>", ANY, "a property of the event", keyed=True),
    FieldSpec("event.traits.<name>", ANY, "a trait the event carried", keyed=True),
    FieldSpec("event.identifiers.<kind>", STRING, "an identifier the event carried", keyed=True),
    FieldSpec("profile.traits.<name>", ANY, "a trait of the unified profile", keyed=True),
    FieldSpec(
        "profile.identifiers.<kind>",
        STRING,
        "the profile's identifier of that kind (the most recently seen one)",
        keyed=True,
    ),
    FieldSpec("profile.event_count", NUMBER, "events counted in the profile"),
    FieldSpec("profile.first_seen_at", TIME, "the profile's first event"),
    FieldSpec("profile.last_seen_at", TIME, "the profile's latest event"),
    FieldSpec("profile.channels.<channel>", NUMBER, "events on that channel", keyed=True),
    FieldSpec(
        "profile.consent.<channel>",
        STRING,
        "consent of the profile's address on email or sms",
        keyed=True,
        choices=("opted_in", "opted_out", "unknown"),
    ),
    FieldSpec("profile.segments", LIST, "segments the profile is in"),
    FieldSpec("profile.tags", LIST, "tags of the profile"),
    FieldSpec("loyalty.balance", NUMBER, "the profile's points balance"),
    FieldSpec("loyalty.tier", STRING, "the profile's loyalty tier"),
)
_FIXED = {spec.name: spec for spec in FIELDS if not spec.keyed}
_KEYED = {spec.name.rsplit(".", 1)[0]: spec for spec in FIELDS if spec.keyed}


@dataclass(frozen=True)
class AggregateSpec:
    """One history function and the parameters it takes."""

    function: str
    type: str
    description: str
    params: tuple[str, ...]
    required: tuple[str, ...] = ()


AGGREGATES: tuple[AggregateSpec, ...] = (
    AggregateSpec(
        "count",
        NUMBER,
        "how many of the profile's events (the triggering one included) match",
        ("type", "channel", "window"),
    ),
    AggregateSpec(
        "sum",
        NUMBER,
        "the sum of a numeric property over the matching events (the triggering one included)",
        ("property", "type", "channel", "window"),
        required=("property",),
    ),
    AggregateSpec(
        "days_since",
        NUMBER,
        "days since the latest matching event before the triggering one (missing if none)",
        ("type", "channel", "window"),
    ),
)
_AGGREGATES = {spec.function: spec for spec in AGGREGATES}
_HISTORY = re.compile(r"^history\.([a-z_]+)\((.*)\)$")


def parse_field(text: str) -> FieldRef:
    """The typed field a rule names, or :class:`VocabularyError` saying what was expected."""
    if not isinstance(text, str) or not text:
        raise VocabularyError("expected a field name such as event.type")
    if text.startswith("history."):
        aggregate = parse_aggregate(text)
        spec = _AGGREGATES[aggregate.function]
        return FieldRef(text, "history", (), spec.type, aggregate)
    fixed = _FIXED.get(text)
    if fixed is not None:
        scope, *rest = text.split(".")
        return FieldRef(text, scope, tuple(rest), fixed.type, choices=fixed.choices)
    prefix, _, key = text.rpartition(".")
    keyed = _KEYED.get(prefix)
    if keyed is not None:
        if not _KEY.match(key):
            raise VocabularyError(f"{key!r} is not a plain name (letters, digits, _ and -)")
        if prefix in ("profile.channels", "profile.consent") and key not in _keyed_choices(prefix):
            choices = ", ".join(_keyed_choices(prefix))
            raise VocabularyError(f"unknown channel {key!r}; expected one of {choices}")
        scope, *rest = prefix.split(".")
        return FieldRef(text, scope, (*rest, key), keyed.type, choices=keyed.choices)
    names = ", ".join(spec.name for spec in FIELDS)
    functions = ", ".join(f"history.{spec.function}(...)" for spec in AGGREGATES)
    raise VocabularyError(f"unknown field {text!r}; expected one of {names}, {functions}")


def _keyed_choices(prefix: str) -> tuple[str, ...]:
    return CHANNELS if prefix == "profile.channels" else ("email", "sms")


def parse_aggregate(text: str) -> HistoryAggregate:
    """``history.count(type=order.completed, window=30d)`` as a :class:`HistoryAggregate`."""
    found = _HISTORY.match(text.replace(" ", ""))
    if found is None:
        raise VocabularyError(
            "expected history.<function>(name=value, ...), e.g. "
            "history.count(type=order.completed, window=30d)"
        )
    function, arguments = found.groups()
    spec = _AGGREGATES.get(function)
    if spec is None:
        choices = ", ".join(spec.function for spec in AGGREGATES)
        raise VocabularyError(f"unknown history function {function!r}; expected one of {choices}")
    params: dict[str, str] = {}
    for argument in filter(None, arguments.split(",")):
        name, equals, value = argument.partition("=")
        if not equals or not value:
            raise VocabularyError(f"history.{function}: expected name=value, got {argument!r}")
        if name not in spec.params:
            allowed = ", ".join(spec.params)
            raise VocabularyError(f"history.{function} takes {allowed}, not {name!r}")
        if name in params:
            raise VocabularyError(f"history.{function}: {name} given twice")
        params[name] = value
    for name in spec.required:
        if name not in params:
            raise VocabularyError(f"history.{function} needs {name}=...")
    if "type" in params:
        check_type_pattern(params["type"])
    if "channel" in params and params["channel"] not in CHANNELS:
        raise VocabularyError(f"unknown channel {params['channel']!r}; expected one of {CHANNELS}")
    if "property" in params and not _KEY.match(params["property"]):
        raise VocabularyError(f"{params['property']!r} is not a plain property name")
    return HistoryAggregate(
        function,
        type=params.get("type"),
        channel=params.get("channel"),
        property_name=params.get("property"),
        window=parse_window(params["window"]) if "window" in params else None,
    )


def parse_window(text: str) -> timedelta:
    """``12h``, ``30d`` or ``8w`` as a duration."""
    found = _WINDOW.match(text)
    if found is None:
        raise VocabularyError(f"window {text!r}: expected a number and h, d or w, e.g. 30d")
    amount, unit = found.groups()
    return timedelta(**{_WINDOW_UNITS[unit]: int(amount)})


def _window_text(window: timedelta | None) -> str | None:
    if window is None:
        return None
    seconds = int(window.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds // 3600}h"


def check_type_pattern(pattern: str) -> str:
    """An event type (``order.completed``), a prefix pattern (``order.*``) or ``*``."""
    if pattern == "*":
        return pattern
    prefix = pattern.endswith(".*")
    if not (_PREFIX if prefix else _TYPE).match(pattern[:-2] if prefix else pattern):
        raise VocabularyError(
            f"{pattern!r}: expected an event type like order.completed, a pattern like "
            "order.* (a last segment of *) or * for every event"
        )
    return pattern


def type_matches(pattern: str, event_type: str) -> bool:
    """Does ``event_type`` match a checked pattern (see :func:`check_type_pattern`)?"""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return event_type == pattern


@dataclass(frozen=True)
class OperatorSpec:
    """One operator, the field types it applies to and the value it takes."""

    name: str
    types: tuple[str, ...]
    #: ``scalar`` (one value), ``list`` (values), ``pair`` ([low, high]), ``flag`` (bool,
    #: optional), ``text`` (a string)
    value: str
    description: str


_ORDERED = (NUMBER, TIME, ANY)
OPERATORS: tuple[OperatorSpec, ...] = (
    OperatorSpec("eq", (STRING, NUMBER, TIME, ANY), "scalar", "equals"),
    OperatorSpec("ne", (STRING, NUMBER, TIME, ANY), "scalar", "differs from"),
    OperatorSpec("gt", _ORDERED, "scalar", "greater than (later than, for times)"),
    OperatorSpec("gte", _ORDERED, "scalar", "greater than or equal"),
    OperatorSpec("lt", _ORDERED, "scalar", "less than (earlier than, for times)"),
    OperatorSpec("lte", _ORDERED, "scalar", "less than or equal"),
    OperatorSpec("between", _ORDERED, "pair", "within [low, high], both included"),
    OperatorSpec("in", (STRING, NUMBER, ANY), "list", "is one of the values"),
    OperatorSpec("not_in", (STRING, NUMBER, ANY), "list", "is none of the values"),
    OperatorSpec("contains", (STRING, LIST, ANY), "scalar", "has the substring (or element)"),
    OperatorSpec("starts_with", (STRING, ANY), "text", "begins with the text"),
    OperatorSpec(
        "matches_glob", (STRING, ANY), "text", "matches a glob (* any run, ? one), any case"
    ),
    OperatorSpec("exists", VALUE_TYPES, "flag", "has a value (exists: false, has none)"),
)
OPERATOR_NAMES = tuple(spec.name for spec in OPERATORS)
OPERATORS_BY_NAME = {spec.name: spec for spec in OPERATORS}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of an action."""

    name: str
    #: ``string``, ``number``, ``integer``, ``boolean``, ``template``, ``mapping``, ``scalar``
    type: str
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class ActionSpec:
    """One action type a rule may take, and its parameters."""

    type: str
    description: str
    params: tuple[ParamSpec, ...]
    #: of the optional parameters, exactly one of these must be given (when not empty)
    one_of: tuple[str, ...] = ()

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)


_REASON = ParamSpec("reason", "string", description="why (kept in the ledger)")
ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec(
        "send_email",
        "queue an email to the profile's address (or a reply to the triggering email)",
        (
            ParamSpec("subject", "template", True, "Jinja2 template of the subject"),
            ParamSpec("text", "template", True, "Jinja2 template of the plain-text body"),
            ParamSpec("html", "template", description="Jinja2 template of an HTML body"),
            ParamSpec("reply", "boolean", description="answer the triggering email (threaded)"),
        ),
    ),
    ActionSpec(
        "send_sms",
        "queue an SMS to the profile's phone number",
        (ParamSpec("text", "template", True, "Jinja2 template of the message"),),
    ),
    ActionSpec(
        "award_points",
        "add points to the profile's loyalty balance",
        (
            ParamSpec("points", "number", description="a fixed number of points"),
            ParamSpec("per_property", "string", description="points per unit of this property"),
            ParamSpec("rate", "number", description="points per unit (default 1)"),
            _REASON,
        ),
        one_of=("points", "per_property"),
    ),
    ActionSpec(
        "deduct_points",
        "take points from the profile's loyalty balance",
        (ParamSpec("points", "number", True, "how many points"), _REASON),
    ),
    ActionSpec("set_tier", "set the loyalty tier", (ParamSpec("tier", "string", True),)),
    ActionSpec("add_tag", "tag the profile", (ParamSpec("tag", "string", True),)),
    ActionSpec("remove_tag", "remove a tag from the profile", (ParamSpec("tag", "string", True),)),
    ActionSpec(
        "set_trait",
        "set a trait of the profile",
        (ParamSpec("name", "string", True), ParamSpec("value", "scalar", True)),
    ),
    ActionSpec(
        "enter_segment", "put the profile in a segment", (ParamSpec("segment", "string", True),)
    ),
    ActionSpec(
        "exit_segment", "take the profile out of a segment", (ParamSpec("segment", "string", True),)
    ),
    ActionSpec(
        "emit_webhook",
        "emit a custom event to webhook subscribers",
        (
            ParamSpec("event", "string", True, "the event name subscribers receive"),
            ParamSpec("data", "mapping", description="extra fields sent with it"),
        ),
    ),
)
ACTIONS_BY_TYPE = {spec.type: spec for spec in ACTIONS}
#: the names a template may use
TEMPLATE_NAMES = frozenset({"event", "profile", "loyalty"})

#: limits of guards (checked in :mod:`personalization.rules.checks`, exported for UIs)
MAX_CAPS = 5
MAX_CAP_COUNT = 10_000
MAX_HOLDOUT = 50


@dataclass(frozen=True)
class GuardSpec:
    """One key of a rule's ``guards`` and what it takes."""

    name: str
    #: ``caps`` (a cap or a list of caps), ``mapping`` (the params) or ``number``
    type: str
    description: str
    params: tuple[ParamSpec, ...] = ()
    example: Any = None


GUARDS: tuple[GuardSpec, ...] = (
    GuardSpec(
        "frequency",
        "caps",
        f"at most max firings per period per profile, counting firings whose actions ran; "
        f"one cap {{max, per}} or a list of up to {MAX_CAPS}, each must leave room",
        (
            ParamSpec("max", "integer", True, f"how many times at most (1 to {MAX_CAP_COUNT})"),
            ParamSpec("per", "period", True, f"the sliding window: {PERIOD_HINT}"),
        ),
        {"max": 1, "per": "7d"},
    ),
    GuardSpec(
        "quiet_hours",
        "mapping",
        "a daily window in the profile's time zone in which messages are delayed to its "
        "end, not dropped; start after end crosses midnight",
        (
            ParamSpec("start", "clock", True, 'wall-clock time "HH:MM" the window starts'),
            ParamSpec("end", "clock", True, 'wall-clock time "HH:MM" it ends (not the start)'),
            ParamSpec("timezone", "time_zone", True, "used for profiles without a time zone"),
        ),
        {"start": "21:00", "end": "08:00", "timezone": "Europe/Berlin"},
    ),
    GuardSpec(
        "holdout",
        "number",
        f"percent of profiles (above 0, at most {MAX_HOLDOUT}) whose firings are recorded "
        "with the actions held back, the same profiles every time: the control group",
        example=10,
    ),
)
#: value types that only guards use, for a UI's inputs
GUARD_VALUE_TYPES = {
    "integer": "a whole number",
    "period": f"{PERIOD_HINT}; at most {MAX_PERIOD.days}d",
    "clock": 'a time of day "HH:MM" (00:00 to 23:59), quoted in YAML',
    "time_zone": "an IANA time zone name (time_zones lists them)",
}


@cache
def time_zone_names() -> tuple[str, ...]:
    """Every IANA time zone name this machine knows (read once: it walks the tz database)."""
    return tuple(sorted(zoneinfo.available_timezones()))


def export_vocabulary() -> dict[str, Any]:
    """Everything a rule may name, as plain data (what ``GET /v1/rules/vocabulary`` returns)."""
    return {
        "value_types": list(VALUE_TYPES),
        "fields": [
            {
                "name": spec.name,
                "type": spec.type,
                "description": spec.description,
                "keyed": spec.keyed,
                **({"choices": list(spec.choices)} if spec.choices else {}),
            }
            for spec in FIELDS
        ],
        "history": [
            {
                "name": f"history.{spec.function}",
                "type": spec.type,
                "description": spec.description,
                "params": list(spec.params),
                "required": list(spec.required),
                "example": _AGGREGATE_EXAMPLES[spec.function],
            }
            for spec in AGGREGATES
        ],
        "operators": [
            {
                "name": spec.name,
                "types": list(spec.types),
                "value": spec.value,
                "description": spec.description,
            }
            for spec in OPERATORS
        ],
        "actions": [
            {
                "type": spec.type,
                "description": spec.description,
                "params": [
                    {
                        "name": p.name,
                        "type": p.type,
                        "required": p.required,
                        "description": p.description,
                    }
                    for p in spec.params
                ],
                "one_of": list(spec.one_of),
            }
            for spec in ACTIONS
        ],
        "trigger": {
            "types": "event types; order.* matches every order.<x>; * matches every event",
            "channels": list(CHANNELS),
        },
        "template_names": sorted(TEMPLATE_NAMES),
        "guards": [
            {
                "name": spec.name,
                "type": spec.type,
                "description": spec.description,
                "params": [
                    {
                        "name": p.name,
                        "type": p.type,
                        "required": p.required,
                        "description": p.description,
                    }
                    for p in spec.params
                ],
                "example": spec.example,
            }
            for spec in GUARDS
        ],
        "guard_value_types": GUARD_VALUE_TYPES,
        "time_zones": list(time_zone_names()),
    }


_AGGREGATE_EXAMPLES = {
    "count": "history.count(type=order.completed, window=30d)",
    "sum": "history.sum(property=total, type=order.completed, window=90d)",
    "days_since": "history.days_since(type=page.viewed)",
}
