"""What a rule file looks like (pydantic models) and what a checked rule compiles to.

A rule file is a mapping with a ``rules`` list; each rule::

    id: points-per-order              # lower-case, unique in the workspace
    name: Points for every order
    enabled: true                     # default true
    priority: 100                     # higher first (ties: by id); default 100
    stop: false                       # true: no later rule runs for this event
    trigger: {types: [order.completed], channels: [pos, web]}   # order.* and * allowed
    conditions:                       # optional: all / any / not over leaves
      all:
        - {field: event.properties.total, op: gt, value: 0}
        - not: {field: profile.traits.employee, op: eq, value: true}
    actions:
      - {type: award_points, per_property: total, rate: 1}
    guards:                           # optional; each key optional
      frequency: {max: 1, per: 7d}    # or a list of caps; per: Nm, Nh, Nd or Nw (<= 365d)
      quiet_hours: {start: "21:00", end: "08:00", timezone: Europe/Berlin}
      holdout: 10                     # percent of profiles held out (0 < x <= 50)
    trace: false                      # true: near misses are recorded too

Guards are decided in :mod:`personalization.rules.guards`: caps count the profile's
firings of the rule whose actions ran, quiet hours (in the profile's time zone, the
guard's ``timezone`` when it has none) delay a message rather than drop it, and the
holdout group is a stable hash of rule and profile.

Validation has two passes. The models here check the *shape* (keys, JSON types; unknown
keys are refused, ``strict`` so ``"10"`` is not a number); :mod:`personalization.rules.checks`
then checks the *meaning* against the vocabulary (fields, operators on their types, values,
action parameters, templates) and compiles each rule into the frozen dataclasses below,
which evaluation and the index use. Both passes report :class:`RuleIssue` with the path of
the offending key, which :mod:`personalization.rules.loading` turns into a file line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from personalization.rules.vocabulary import FieldRef
from pipeline.caps import Cap as Cap  # re-exported: guards use it (why it lives there: its doc)
from pipeline.errors import HubError

Loc = tuple[str | int, ...]


class ConditionModel(BaseModel):
    """One node: exactly one of ``all``, ``any``, ``not``, or a leaf ``{field, op, value}``."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    all: list[ConditionModel] | None = None
    any: list[ConditionModel] | None = None
    not_: ConditionModel | None = Field(default=None, alias="not")
    field: str | None = None
    op: str | None = None
    value: Any = None


class TriggerModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    types: list[str] = Field(min_length=1, max_length=50)
    channels: list[str] = Field(default_factory=list)


class ActionModel(BaseModel):
    """``{type: send_sms, text: ...}``: the parameters sit beside ``type`` (extra keys)."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str


class QuietHoursModel(BaseModel):
    """``{start: "21:00", end: "08:00", timezone: Europe/Berlin}``; values checked in checks."""

    model_config = ConfigDict(extra="forbid", strict=True)

    start: Any
    end: Any
    timezone: Any


class GuardsModel(BaseModel):
    """The keys of ``guards``; their values are checked (with messages) in checks.

    ``frequency`` is a cap or a list of caps, so its shape is checked there too (a
    pydantic union would report each failed alternative).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    frequency: Any = None
    quiet_hours: QuietHoursModel | None = None
    holdout: Any = None


class RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    enabled: bool = True
    priority: int = Field(default=100, ge=-1_000_000, le=1_000_000)
    stop: bool = False
    trigger: TriggerModel
    conditions: ConditionModel | None = None
    actions: list[ActionModel] = Field(min_length=1, max_length=20)
    #: an empty mapping when not given: stored definitions kept ``guards: {}`` before
    #: guards existed, so their digests (and versions) stay the same
    guards: GuardsModel = Field(default_factory=GuardsModel)
    trace: bool = False


@dataclass(frozen=True)
class RuleIssue:
    """One thing wrong with a rule set: where (path of keys) and what was expected."""

    loc: Loc
    message: str
    #: 1-based line in the source file when it was YAML, else ``None``
    line: int | None = None

    @property
    def path(self) -> str:
        return format_loc(self.loc)

    def view(self) -> dict[str, Any]:
        return {"field": self.path, "line": self.line, "message": self.message}


def format_loc(loc: Loc) -> str:
    """``("rules", 0, "trigger", "types", 1)`` -> ``rules[0].trigger.types[1]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top)"


class RuleSetInvalid(HubError):
    """A rule set that cannot be accepted; ``issues`` lists every problem found."""

    def __init__(self, issues: list[RuleIssue], source: str | None = None) -> None:
        self.issues, self.source = issues, source
        first = issues[0]
        where = f"{source}:{first.line}: " if source and first.line else ""
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        super().__init__(f"{where}{first.path}: {first.message}{more}")

    def lines(self) -> list[str]:
        """``FILE:LINE: field: message`` per issue (the CLI's output)."""
        source = self.source or "<rules>"
        return [
            f"{source}:{issue.line or '?'}: {issue.path}: {issue.message}" for issue in self.issues
        ]


# Compiled forms: what evaluation and the index work on (plain, frozen, checked).


@dataclass(frozen=True)
class Leaf:
    #: where it sits in the rule (``conditions.all[0]``): named in traces
    path: str
    field: FieldRef
    op: str
    #: checked and normalized: ``datetime`` for times, ``tuple`` for lists and pairs
    value: Any


@dataclass(frozen=True)
class AllOf:
    path: str
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    path: str
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class NotOf:
    path: str
    item: Condition


Condition = Leaf | AllOf | AnyOf | NotOf


@dataclass(frozen=True)
class RuleAction:
    type: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class QuietHours:
    """A daily window (wall-clock ``start`` to ``end``) in which messages wait.

    ``start > end`` crosses midnight (21:00-08:00). ``timezone`` is used for a profile
    whose own time zone is missing or invalid.
    """

    start: time
    end: time
    timezone: str


@dataclass(frozen=True)
class RuleGuards:
    """What may hold a matched rule's actions back (no guards: nothing does)."""

    #: each cap must leave room; counted over the profile's firings of the rule that ran
    frequency: tuple[Cap, ...] = ()
    quiet_hours: QuietHours | None = None
    #: percent of profiles (0 = none) whose firings are recorded but whose actions never run
    holdout: float = 0.0


@dataclass(frozen=True)
class CompiledRule:
    """A checked rule, ready for the index and evaluation."""

    id: str
    name: str
    enabled: bool
    priority: int
    stop: bool
    types: tuple[str, ...]
    #: empty: every channel
    channels: frozenset[str]
    conditions: Condition | None
    actions: tuple[RuleAction, ...]
    #: the rule as stored (JSON-ready, defaults filled in): what versions compare
    definition: Mapping[str, Any]
    #: the stored version (``None`` for a rule read from a file, not yet applied)
    version: int | None = None
    guards: RuleGuards = RuleGuards()
    #: record near misses (conditions evaluated, not matched) too
    trace: bool = False

    @property
    def origin(self) -> str:
        """What an action records as its cause: ``rule:{id}@{version}``."""
        return f"rule:{self.id}@{self.version}"


@dataclass(frozen=True)
class RuleSet:
    """A checked rule file: its rules in file order."""

    rules: tuple[CompiledRule, ...]

    def by_id(self) -> dict[str, CompiledRule]:
        return {rule.id: rule for rule in self.rules}


def time_zone(name: object) -> ZoneInfo | None:
    """The IANA time zone named ``name`` (``Europe/Berlin``), or ``None`` if there is none."""
    if not isinstance(name, str) or not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def time_value(value: Any) -> datetime | None:
    """An aware ``datetime`` from a datetime or ISO 8601 text, else ``None``."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    return None
