"""How identity resolution is allowed to join records: priorities, limits, blocked values.

Why limits per kind: a person has one customer id and one loyalty card, a few email
addresses and phone numbers. Two profiles whose union would hold two customer ids are two
people who happen to share something (a family phone, a shop's walk-in card), so a merge
that would break a limit does not happen; the conflict is recorded instead.

Why blocked values: some identifiers are known in advance to belong to nobody in
particular (``test@…``, ``0000000000``, a shop's own ``info@`` address). A blocked value
is kept on its event but never attaches to a profile, never finds one and never merges.

The file is YAML (``ECRM_IDENTITY_CONFIG``)::

    priority: [user_id, customer_id, email, phone, loyalty_card, device_id, anonymous_id]
    limits: {customer_id: 1, loyalty_card: 1, email: 5, phone: 3}
    default_limit: 10          # kinds not listed
    shared_after: 2            # seen on more distinct people than this: flagged as shared
    trait_sources: [crm-import, pos]   # their traits win over other sources' (newest wins)
    matching: {enabled: true, upper: 0.99, lower: 0.80, min_fields: 3}
    email_rules: [gmail]       # or rules of your own (see identity.email_rules); none by default
    blocked:
      email: ["test@.*", "info@shop\\\\.example"]   # full-match regular expressions
      phone: ["\\\\+1?0+"]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from identity.email_rules import GMAIL, NO_RULES, EmailRule, EmailRules
from identity.matching import MatchModel
from pipeline.errors import HubError

DEFAULT_PRIORITY = (
    "user_id",
    "customer_id",
    "email",
    "phone",
    "loyalty_card",
    "card_fingerprint",
    "device_id",
    "anonymous_id",
)
DEFAULT_LIMITS: Mapping[str, int] = MappingProxyType(
    {
        "user_id": 1,
        "customer_id": 1,
        "loyalty_card": 1,
        "email": 5,
        "phone": 3,
        "card_fingerprint": 5,
        "device_id": 20,
        "anonymous_id": 100,
        # one per sale: an anonymous sale and its refund, never two customers
        "pos_transaction": 1000,
    }
)
DEFAULT_LIMIT = 10
#: an identifier seen on more distinct people than this is flagged as shared
DEFAULT_SHARED_AFTER = 2
#: Values no real customer has: placeholder addresses and numbers made of one digit.
DEFAULT_BLOCKED: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "email": (
            r"(test|noreply|no-reply|donotreply|do-not-reply|mailer-daemon|postmaster)@.*",
            r".*@(invalid|localhost)",
        ),
        "phone": (r"\+\d{0,3}?(\d)\1{6,}",),
        "loyalty_card": (r"0+",),
        "customer_id": (r"0+",),
    }
)


class IdentityConfigError(HubError):
    """The identity configuration file is unreadable or wrong (one line, names the key)."""


class _Matching(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    upper: float = Field(default=0.99, gt=0, lt=1)
    lower: float = Field(default=0.80, gt=0, lt=1)
    min_fields: int = Field(default=3, ge=2)
    #: probability that two blocked candidates are one person before any field is
    #: compared (default 1/501, odds of 1 in 500)
    prior: float | None = Field(default=None, gt=0, lt=1)
    #: field -> level -> [m, u] (``ecrm identity estimate`` writes them); others: defaults
    fields: dict[str, dict[str, tuple[float, float]]] = Field(default_factory=dict)

    @field_validator("fields")
    @classmethod
    def _known_levels(
        cls, value: dict[str, dict[str, tuple[float, float]]]
    ) -> dict[str, dict[str, tuple[float, float]]]:
        MatchModel.configured(fields=value)  # names the field or level at fault
        return value

    @model_validator(mode="after")
    def _ordered(self) -> _Matching:
        if self.lower > self.upper:
            raise ValueError("lower must not be above upper")
        return self

    def model(self) -> MatchModel | None:
        """The matcher this section describes (None: matching is off)."""
        if not self.enabled:
            return None
        return MatchModel.configured(
            fields=self.fields,
            prior_probability=self.prior,
            upper=self.upper,
            lower=self.lower,
            min_fields=self.min_fields,
        )


class _EmailRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domains: list[str] = Field(min_length=1)
    canonical_domain: str | None = None
    ignore_dots: bool = False
    ignore_plus_tags: bool = False

    @field_validator("domains")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [domain.strip().casefold() for domain in value]


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    priority: list[str] = Field(default_factory=lambda: list(DEFAULT_PRIORITY))
    limits: dict[str, int] = Field(default_factory=dict)
    default_limit: int = Field(default=DEFAULT_LIMIT, ge=1)
    blocked: dict[str, list[str]] | None = None
    shared_after: int = Field(default=DEFAULT_SHARED_AFTER, ge=1)
    trait_sources: list[str] = Field(default_factory=list)
    matching: _Matching = Field(default_factory=lambda: _Matching())
    email_rules: list[_EmailRule] = Field(default_factory=list)

    @field_validator("email_rules", mode="before")
    @classmethod
    def _presets(cls, value: Any) -> Any:
        """``gmail`` is short for the Gmail rule."""
        return (
            [GMAIL if item == "gmail" else item for item in value]
            if isinstance(value, list)
            else value
        )

    @field_validator("limits")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        for kind, limit in value.items():
            if limit < 1:
                raise ValueError(f"{kind}: a limit is at least 1")
        return value

    @field_validator("priority")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a kind is listed twice")
        return value


@dataclass(frozen=True)
class IdentityConfig:
    """The rules resolution applies; the default is what a fresh hub uses."""

    priority: tuple[str, ...] = DEFAULT_PRIORITY
    limits: Mapping[str, int] = field(default_factory=lambda: DEFAULT_LIMITS)
    default_limit: int = DEFAULT_LIMIT
    shared_after: int = DEFAULT_SHARED_AFTER
    #: sources whose traits win over others', strongest first (see identity.traits)
    trait_sources: tuple[str, ...] = ()
    #: probabilistic matching of records no identifier places (None: off)
    matching: MatchModel | None = field(default_factory=MatchModel)
    blocked: Mapping[str, tuple[re.Pattern[str], ...]] = field(
        default_factory=lambda: _compile(DEFAULT_BLOCKED)
    )
    #: provider rules: the spelling of an address resolution compares (none by default)
    email_rules: EmailRules = NO_RULES
    #: the tombstone key when events carrying an erased person's identifiers are suppressed
    #: (``ECRM_ERASURE_SUPPRESS``, see :mod:`identity.tombstones`); None: resolved as usual
    suppress_erased_key: bytes | None = field(default=None, repr=False)
    _ranks: Mapping[str, int] = field(init=False, repr=False, compare=False)
    _source_ranks: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ranks", {kind: i for i, kind in enumerate(self.priority)})
        object.__setattr__(
            self, "_source_ranks", {source: i for i, source in enumerate(self.trait_sources)}
        )

    def source_rank(self, source: str) -> int:
        """A source's place in ``trait_sources`` (lower wins); unlisted ones come last."""
        return self._source_ranks.get(source, len(self.trait_sources))

    def limit(self, kind: str) -> int:
        """How many identifiers of ``kind`` one profile may hold."""
        return self.limits.get(kind, self.default_limit)

    def rank(self, kind: str) -> int:
        """Position in the priority list; kinds not listed come last."""
        return self._ranks.get(kind, len(self.priority))

    def canonical(self, kind: str, value: str) -> str:
        """The value resolution compares (a normalized email under the provider rules)."""
        return self.email_rules.canonical(value) if kind == "email" else value

    def is_blocked(self, kind: str, value: str) -> bool:
        """Whether a normalized value may never identify anyone."""
        return any(pattern.fullmatch(value) for pattern in self.blocked.get(kind, ()))

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "identity config") -> IdentityConfig:
        """Validate a parsed file; raises :class:`IdentityConfigError` naming the key."""
        try:
            parsed = _File.model_validate(data if data is not None else {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(top)"
            raise IdentityConfigError(f"{source}: {where}: {first['msg']}") from None
        try:
            blocked = _compile(
                DEFAULT_BLOCKED
                if parsed.blocked is None
                else {k: tuple(v) for k, v in parsed.blocked.items()}
            )
        except re.error as exc:
            raise IdentityConfigError(f"{source}: blocked: bad pattern: {exc}") from None
        return cls(
            priority=tuple(parsed.priority),
            limits=MappingProxyType({**DEFAULT_LIMITS, **parsed.limits}),
            default_limit=parsed.default_limit,
            shared_after=parsed.shared_after,
            trait_sources=tuple(parsed.trait_sources),
            matching=parsed.matching.model(),
            blocked=blocked,
            email_rules=EmailRules.of(
                [
                    EmailRule(
                        tuple(rule.domains),
                        rule.canonical_domain.casefold() if rule.canonical_domain else None,
                        rule.ignore_dots,
                        rule.ignore_plus_tags,
                    )
                    for rule in parsed.email_rules
                ]
            ),
        )

    @classmethod
    def load(cls, path: Path | None) -> IdentityConfig:
        """The configuration in ``path``, or the default when there is none."""
        if path is None:
            return cls()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise IdentityConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            # one line: PyYAML's message spans several, with a caret under the spot
            raise IdentityConfigError(f"{path}: not YAML: {' '.join(str(exc).split())}") from None
        return cls.from_mapping(data, source=str(path))


def _compile(patterns: Mapping[str, tuple[str, ...]]) -> Mapping[str, tuple[re.Pattern[str], ...]]:
    return MappingProxyType(
        {
            kind: tuple(re.compile(p, re.IGNORECASE) for p in values)
            for kind, values in patterns.items()
        }
    )


__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_PRIORITY",
    "IdentityConfig",
    "IdentityConfigError",
]
