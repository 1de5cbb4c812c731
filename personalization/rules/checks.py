"""The meaning of a rule set, checked against the vocabulary, and compiled.

:func:`check_rule_set` takes plain data (parsed YAML or JSON) and returns a
:class:`~personalization.rules.schema.RuleSet` or raises
:class:`~personalization.rules.schema.RuleSetInvalid` listing *every* problem, each at the
path of the key to fix and saying what was expected. Shape errors (pydantic) come first;
when the shape is right, each rule's meaning is checked: ids, trigger patterns and
channels, fields, operators on their field types, values, action parameters, and
templates (Jinja2 syntax parsed in a sandboxed environment, names limited to
``event``, ``profile`` and ``loyalty``), and guards (caps and their periods, quiet hours
as ``"HH:MM"`` in a known IANA time zone, the holdout percentage).
"""

from __future__ import annotations

import re
import types
from datetime import time
from typing import Any, Union, get_args, get_origin

import pydantic
from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from personalization.rules.schema import (
    AllOf,
    AnyOf,
    Cap,
    CompiledRule,
    Condition,
    ConditionModel,
    GuardsModel,
    Leaf,
    Loc,
    NotOf,
    QuietHours,
    QuietHoursModel,
    RuleAction,
    RuleGuards,
    RuleIssue,
    RuleModel,
    RuleSet,
    RuleSetInvalid,
    format_loc,
    time_value,
    time_zone,
)
from personalization.rules.vocabulary import (
    ACTIONS,
    ACTIONS_BY_TYPE,
    ANY,
    CHANNELS,
    LIST,
    MAX_CAP_COUNT,
    MAX_CAPS,
    MAX_HOLDOUT,
    NUMBER,
    OPERATOR_NAMES,
    OPERATORS_BY_NAME,
    STRING,
    TEMPLATE_NAMES,
    TIME,
    FieldRef,
    VocabularyError,
    check_type_pattern,
    parse_field,
)
from pipeline.caps import PERIOD_HINT, parse_period

_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
#: ids a rule may not take: they are routes (``GET /v1/rules/vocabulary``)
RESERVED_IDS = frozenset({"vocabulary"})
MAX_DEPTH = 8
MAX_RULES = 5000
MAX_LIST_VALUES = 1000
_PROPERTY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_TEMPLATES = ImmutableSandboxedEnvironment(autoescape=False)
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


def check_rule_set(data: Any) -> RuleSet:
    """Validate and compile a whole rule set, or raise :class:`RuleSetInvalid` (all issues).

    Each rule is checked on its own, so one rule's shape error does not hide another
    rule's meaning errors.
    """
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise RuleSetInvalid([RuleIssue((), "expected a mapping with a 'rules' list")])
    issues = [
        RuleIssue((key,), f"unknown key {key!r}; expected rules") for key in data if key != "rules"
    ]
    if len(data["rules"]) > MAX_RULES:
        issues.append(RuleIssue(("rules",), f"at most {MAX_RULES} rules in one set"))
    compiled = []
    seen: dict[str, int] = {}
    for index, item in enumerate(data["rules"]):
        loc: Loc = ("rules", index)
        rule_id = item.get("id") if isinstance(item, dict) else None
        if isinstance(rule_id, str):
            if rule_id in seen:
                issues.append(
                    RuleIssue(
                        (*loc, "id"), f"id {rule_id!r} is already used by rules[{seen[rule_id]}]"
                    )
                )
            seen.setdefault(rule_id, index)
        try:
            rule = RuleModel.model_validate(item)
        except pydantic.ValidationError as exc:
            issues.extend(_shape_issue(error, loc) for error in exc.errors())
            continue
        checker = _RuleChecker(loc)
        result = checker.rule(rule)
        issues.extend(checker.issues)
        if result is not None:
            compiled.append(result)
    if issues:
        raise RuleSetInvalid(issues)
    return RuleSet(tuple(compiled))


def _shape_issue(error: Any, prefix: Loc) -> RuleIssue:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "missing":
        return RuleIssue(prefix + loc, "required, but missing")
    if kind == "extra_forbidden":
        expected = _expected_keys(loc[:-1])
        hint = f"; expected one of {', '.join(expected)}" if expected else ""
        return RuleIssue(prefix + loc, f"unknown key {loc[-1]!r}{hint}")
    if kind == "model_type":
        return RuleIssue(prefix + loc, "expected a mapping of keys to values")
    return RuleIssue(prefix + loc, str(error["msg"]))


def _expected_keys(loc: Loc) -> list[str]:
    """The keys the model at ``loc`` (within a rule) accepts, for "unknown key" messages."""
    current: Any = RuleModel
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, pydantic.BaseModel)):
            return []
        fields = {info.alias or name: info for name, info in current.model_fields.items()}
        if part not in fields:
            return []
        current = fields[part].annotation
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, pydantic.BaseModel):
        return [info.alias or name for name, info in current.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) in (list, Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation


class _RuleChecker:
    """Checks one rule, collecting issues (never stopping at the first)."""

    def __init__(self, loc: Loc) -> None:
        self.loc = loc
        self.issues: list[RuleIssue] = []

    def fail(self, loc: Loc, message: str) -> None:
        self.issues.append(RuleIssue(self.loc + loc, message))

    def rule(self, rule: RuleModel) -> CompiledRule | None:
        if not _RULE_ID.match(rule.id) or rule.id in RESERVED_IDS:
            self.fail(
                ("id",),
                "expected lower-case letters, digits, '.', '_' or '-' (starting with a letter "
                "or digit, at most 63 characters)"
                + (f"; {rule.id!r} is reserved" if rule.id in RESERVED_IDS else ""),
            )
        for index, pattern in enumerate(rule.trigger.types):
            try:
                check_type_pattern(pattern)
            except VocabularyError as exc:
                self.fail(("trigger", "types", index), str(exc))
        for index, channel in enumerate(rule.trigger.channels):
            if channel not in CHANNELS:
                self.fail(
                    ("trigger", "channels", index),
                    f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}",
                )
        conditions = (
            self.condition(rule.conditions, ("conditions",), 1) if rule.conditions else None
        )
        actions = [self.action(action, ("actions", i)) for i, action in enumerate(rule.actions)]
        guards = self.guards(rule.guards, ("guards",))
        if self.issues or guards is None:
            return None
        definition = rule.model_dump(mode="json", by_alias=True, exclude_none=True)
        if not rule.trace:
            # left out when off, so definitions stored before ``trace`` existed keep their
            # digests (an apply of an unchanged file makes no new versions)
            definition.pop("trace", None)
        return CompiledRule(
            id=rule.id,
            name=rule.name,
            enabled=rule.enabled,
            priority=rule.priority,
            stop=rule.stop,
            types=tuple(dict.fromkeys(rule.trigger.types)),
            channels=frozenset(rule.trigger.channels),
            conditions=conditions,
            actions=tuple(a for a in actions if a is not None),
            definition=definition,
            guards=guards,
            trace=rule.trace,
        )

    # guards

    def guards(self, guards: GuardsModel, loc: Loc) -> RuleGuards | None:
        before = len(self.issues)
        frequency = self.caps(guards.frequency, (*loc, "frequency"))
        quiet = (
            self.quiet_hours(guards.quiet_hours, (*loc, "quiet_hours"))
            if guards.quiet_hours is not None
            else None
        )
        holdout = 0.0
        if guards.holdout is not None:
            value = guards.holdout
            if not _is_number(value) or not 0 < value <= MAX_HOLDOUT:
                self.fail(
                    (*loc, "holdout"),
                    f"expected a percentage of profiles above 0 and at most {MAX_HOLDOUT}, e.g. 10",
                )
            else:
                holdout = float(value)
        if len(self.issues) > before:
            return None
        return RuleGuards(frequency=frequency, quiet_hours=quiet, holdout=holdout)

    def caps(self, value: Any, loc: Loc) -> tuple[Cap, ...]:
        """``{max, per}`` or a list of them (each cap must leave room)."""
        if value is None:
            return ()
        if isinstance(value, dict):
            cap = self.cap(value, loc)
            return () if cap is None else (cap,)
        if not isinstance(value, list) or not value:
            self.fail(loc, "expected a cap {max: 1, per: 7d} or a list of caps")
            return ()
        if len(value) > MAX_CAPS:
            self.fail(loc, f"at most {MAX_CAPS} caps")
            return ()
        caps = [self.cap(item, (*loc, i)) for i, item in enumerate(value)]
        return tuple(cap for cap in caps if cap is not None)

    def cap(self, value: Any, loc: Loc) -> Cap | None:
        if not isinstance(value, dict):
            self.fail(loc, "expected a cap {max: 1, per: 7d}")
            return None
        before = len(self.issues)
        for key in value:
            if key not in ("max", "per"):
                self.fail((*loc, str(key)), f"unknown key {key!r}; expected max, per")
        count, per = value.get("max"), value.get("per")
        if "max" not in value:
            self.fail((*loc, "max"), "required, but missing: how many times at most")
        elif not isinstance(count, int) or isinstance(count, bool) or count < 1:
            self.fail((*loc, "max"), "expected a whole number of times, at least 1")
        elif count > MAX_CAP_COUNT:
            self.fail((*loc, "max"), f"at most {MAX_CAP_COUNT}")
        period = None
        if "per" not in value:
            self.fail((*loc, "per"), f"required, but missing: the period, {PERIOD_HINT}")
        else:
            try:
                period = parse_period(per)
            except ValueError as exc:
                self.fail((*loc, "per"), str(exc))
        if len(self.issues) > before or period is None or not isinstance(count, int):
            return None
        return Cap(count, period)

    def quiet_hours(self, quiet: QuietHoursModel, loc: Loc) -> QuietHours | None:
        start = self.clock(quiet.start, (*loc, "start"))
        end = self.clock(quiet.end, (*loc, "end"))
        zone = time_zone(quiet.timezone)
        if zone is None:
            self.fail(
                (*loc, "timezone"),
                f"unknown time zone {quiet.timezone!r}; expected an IANA name such as "
                "Europe/Berlin or UTC (used when the profile has no time zone)",
            )
        if start is None or end is None or zone is None:
            return None
        if start == end:
            self.fail(
                (*loc, "end"),
                "expected an end other than the start (21:00 to 08:00 crosses midnight; "
                "a window of no time guards nothing)",
            )
            return None
        return QuietHours(start, end, str(quiet.timezone))

    def clock(self, value: Any, loc: Loc) -> time | None:
        found = _CLOCK.match(value) if isinstance(value, str) else None
        if found is None:
            hint = ""
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1440:
                # YAML 1.1 reads an unquoted 21:00 as a base-60 number
                hint = f" (YAML reads an unquoted {value // 60}:{value % 60:02d} as {value})"
            self.fail(loc, f'expected a time of day "HH:MM" in quotes, e.g. "21:00"{hint}')
            return None
        return time(int(found.group(1)), int(found.group(2)))

    # conditions

    def condition(self, node: ConditionModel, loc: Loc, depth: int) -> Condition | None:
        path = format_loc(loc)
        if depth > MAX_DEPTH:
            self.fail(loc, f"conditions nest at most {MAX_DEPTH} levels deep")
            return None
        given = [key for key in ("all", "any", "not", "field") if _given(node, key)]
        leaf_keys = [key for key in ("op", "value") if _given(node, key)]
        if len(given) != 1 or (given != ["field"] and leaf_keys):
            self.fail(
                loc,
                "expected exactly one of all: [...], any: [...], not: {...} or a leaf "
                "{field, op, value}",
            )
            return None
        if node.all is not None or node.any is not None:
            key = "all" if node.all is not None else "any"
            children = node.all if node.all is not None else (node.any or [])
            if not children:
                self.fail((*loc, key), "expected at least one condition")
                return None
            items = [
                self.condition(child, (*loc, key, i), depth + 1) for i, child in enumerate(children)
            ]
            if any(item is None for item in items):
                return None
            kept = tuple(item for item in items if item is not None)
            return AllOf(path, kept) if key == "all" else AnyOf(path, kept)
        if node.not_ is not None:
            inner = self.condition(node.not_, (*loc, "not"), depth + 1)
            return None if inner is None else NotOf(path, inner)
        return self.leaf(node, loc, path)

    def leaf(self, node: ConditionModel, loc: Loc, path: str) -> Leaf | None:
        try:
            ref = parse_field(node.field or "")
        except VocabularyError as exc:
            self.fail((*loc, "field"), str(exc))
            return None
        if node.op is None:
            self.fail((*loc, "op"), f"required; expected one of {', '.join(OPERATOR_NAMES)}")
            return None
        spec = OPERATORS_BY_NAME.get(node.op)
        if spec is None:
            self.fail(
                (*loc, "op"),
                f"unknown operator {node.op!r}; expected one of {', '.join(OPERATOR_NAMES)}",
            )
            return None
        if ref.type not in spec.types:
            fitting = [name for name in OPERATOR_NAMES if ref.type in OPERATORS_BY_NAME[name].types]
            self.fail(
                (*loc, "op"),
                f"{node.op} does not apply to {ref.text} ({ref.type}); expected one of "
                f"{', '.join(fitting)}",
            )
            return None
        value, problem = _leaf_value(ref, node.op, spec.value, node.value, _given(node, "value"))
        if problem:
            self.fail((*loc, "value"), problem)
            return None
        return Leaf(path, ref, node.op, value)

    # actions

    def action(self, action: Any, loc: Loc) -> RuleAction | None:
        spec = ACTIONS_BY_TYPE.get(action.type)
        if spec is None:
            choices = ", ".join(spec.type for spec in ACTIONS)
            self.fail((*loc, "type"), f"unknown action {action.type!r}; expected one of {choices}")
            return None
        params: dict[str, Any] = dict(action.model_extra or {})
        before = len(self.issues)
        names = [p.name for p in spec.params]
        for name, value in params.items():
            param = spec.param(name)
            if param is None:
                self.fail(
                    (*loc, name), f"{spec.type} takes no {name!r}; expected {', '.join(names)}"
                )
                continue
            problem = _param_problem(param.type, value)
            if problem:
                self.fail((*loc, name), problem)
        for param in spec.params:
            if param.required and param.name not in params:
                self.fail(loc, f"{spec.type} needs {param.name!r}")
        if spec.one_of and sum(name in params for name in spec.one_of) != 1:
            self.fail(loc, f"{spec.type} needs exactly one of {' or '.join(spec.one_of)}")
        if spec.type == "award_points":
            if "rate" in params and "per_property" not in params:
                self.fail((*loc, "rate"), "rate goes with per_property")
            if "per_property" in params and not _PROPERTY.match(str(params["per_property"])):
                self.fail((*loc, "per_property"), "expected a plain property name, e.g. total")
        if len(self.issues) > before:
            return None
        return RuleAction(spec.type, params)


def _given(node: ConditionModel, key: str) -> bool:
    return ("not_" if key == "not" else key) in node.model_fields_set


def _leaf_value(
    ref: FieldRef, op: str, shape: str, value: Any, given: bool
) -> tuple[Any, str | None]:
    """The checked, normalized value of a leaf, or an error saying what was expected."""
    if shape == "flag":
        if not given:
            return True, None
        if not isinstance(value, bool):
            return None, "expected true or false (exists: false means no value)"
        return value, None
    if not given or value is None:
        return None, f"required: {op} compares with a value"
    if shape == "list":
        if not isinstance(value, list) or not value:
            return None, f"expected a non-empty list of values for {op}"
        if len(value) > MAX_LIST_VALUES:
            return None, f"at most {MAX_LIST_VALUES} values"
        checked = []
        for item in value:
            one, problem = _scalar(ref, op, item)
            if problem:
                return None, problem
            checked.append(one)
        return tuple(checked), None
    if shape == "pair":
        if not isinstance(value, list) or len(value) != 2:
            return None, "expected [low, high]"
        low, problem = _scalar(ref, op, value[0])
        high, problem2 = _scalar(ref, op, value[1])
        if problem or problem2:
            return None, problem or problem2
        if type(low) is not type(high) and not (_is_number(low) and _is_number(high)):
            return None, "expected low and high of one type (two numbers or two times)"
        if low > high:
            return None, "expected low <= high"
        return (low, high), None
    if shape == "text":
        if not isinstance(value, str):
            return None, f"expected text for {op}"
        return value, None
    return _scalar(ref, op, value)


def _scalar(ref: FieldRef, op: str, value: Any) -> tuple[Any, str | None]:
    ordered = op in ("gt", "gte", "lt", "lte", "between")
    kind = ref.type
    if kind == NUMBER or (kind == ANY and ordered and _is_number(value)):
        if not _is_number(value):
            return None, f"expected a number ({ref.text} is a number)"
        return value, None
    if kind == TIME or (kind == ANY and ordered):
        when = time_value(value)
        if when is None:
            what = "a number or " if kind == ANY else ""
            return None, f"expected {what}an ISO 8601 time with a zone, e.g. 2026-01-31T00:00:00Z"
        return when, None
    if kind == STRING:
        if not isinstance(value, str):
            return None, f"expected text ({ref.text} is text)"
        if ref.choices and op in ("eq", "ne", "in", "not_in") and value not in ref.choices:
            return None, f"{value!r} never occurs; expected one of {', '.join(ref.choices)}"
        return value, None
    if kind in (ANY, LIST):
        if isinstance(value, str | bool) or _is_number(value):
            return value, None
        return None, "expected text, a number or true/false"
    return None, f"{ref.text} cannot be compared"  # pragma: no cover (every type is above)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _param_problem(kind: str, value: Any) -> str | None:
    if kind == "string":
        return None if isinstance(value, str) and value.strip() else "expected non-empty text"
    if kind == "number":
        if not _is_number(value) or value <= 0:
            return "expected a number above 0"
        return None
    if kind == "boolean":
        return None if isinstance(value, bool) else "expected true or false"
    if kind == "mapping":
        if isinstance(value, dict) and all(isinstance(key, str) for key in value):
            return None
        return "expected a mapping of names to values"
    if kind == "scalar":
        ok = isinstance(value, str | bool) or _is_number(value)
        return None if ok else "expected text, a number or true/false"
    if kind == "template":
        return template_problem(value)
    return f"unknown parameter type {kind}"  # pragma: no cover


def template_problem(source: Any) -> str | None:
    """Why a Jinja2 template cannot be used (syntax, or a name templates do not get)."""
    if not isinstance(source, str) or not source.strip():
        return "expected a non-empty template (text, Jinja2 {{ ... }} allowed)"
    try:
        parsed = _TEMPLATES.parse(source)
    except TemplateSyntaxError as exc:
        return f"template syntax error on its line {exc.lineno}: {exc.message}"
    unknown = sorted(meta.find_undeclared_variables(parsed) - TEMPLATE_NAMES)
    if unknown:
        return (
            f"template uses {', '.join(unknown)}; templates see only "
            f"{', '.join(sorted(TEMPLATE_NAMES))}"
        )
    return None
