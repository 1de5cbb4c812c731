"""Probabilistic matching of records without a shared identifier (Fellegi-Sunter).

A POS receipt with a name and an address, a call-centre record, a web form: when an
event's identifiers find no profile, its traits are compared with the traits of profiles
found through *blocking keys* (exact keys such as a postcode with a surname, or a date of
birth, looked up by index, never by scanning). Each field comparison falls into a level
(exact, close, different; a missing value says nothing), each level has an m probability
(how often true matches land there) and a u probability (how often non-matches do), and
the evidence is the sum of log2(m/u) over the fields, plus the prior odds of a match
among blocked candidates. The probability is ``1 / (1 + 2^-(prior + weight))``.

The default m/u values are set for person records of the kind shops collect (names with
typos, swapped given name and surname, dates with one digit wrong). The identity
configuration can replace the m/u of any field's levels and the prior
(:func:`configured_fields`, :func:`prior_from_probability`), for instance with the values
:mod:`identity.estimate` learns from the hub's own records. Above ``upper`` the profiles merge
(audited with every field's level and weight); between ``lower`` and ``upper`` a review
item waits for a person; below, the records stay apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import jellyfish
from rapidfuzz.distance import OSA, JaroWinkler


@dataclass(frozen=True)
class Level:
    """One outcome of comparing a field, with its m and u probabilities."""

    label: str
    m: float
    u: float

    @property
    def weight(self) -> float:
        return math.log2(self.m / self.u)


@dataclass(frozen=True)
class FieldSpec:
    """A trait compared between records: how, and what each outcome is worth."""

    name: str
    comparator: str  # name | code | date | exact | text
    levels: tuple[Level, ...]
    #: other trait names that mean the same (``first_name`` for ``given_name``)
    aliases: tuple[str, ...] = ()
    #: fields of one group are not independent evidence (see ``GROUP_CAPS``)
    group: str | None = None


def _levels(*triples: tuple[str, float, float]) -> tuple[Level, ...]:
    return tuple(Level(label, m, u) for label, m, u in triples)


DEFAULT_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(
        "given_name",
        "name",
        _levels(
            ("exact", 0.80, 0.004),
            ("jw92", 0.10, 0.004),
            ("jw80", 0.05, 0.03),
            ("else", 0.05, 0.962),
        ),
        ("first_name", "firstname", "firstName"),
    ),
    FieldSpec(
        "surname",
        "name",
        _levels(
            ("exact", 0.80, 0.002),
            ("jw92", 0.10, 0.003),
            ("jw80", 0.05, 0.02),
            ("else", 0.05, 0.975),
        ),
        ("last_name", "lastname", "lastName", "family_name"),
    ),
    FieldSpec(
        "date_of_birth",
        "date",
        _levels(("exact", 0.80, 0.0004), ("one_edit", 0.17, 0.006), ("else", 0.03, 0.9936)),
        ("dob", "birthday", "birth_date"),
    ),
    FieldSpec(
        "soc_sec_id",
        "code",
        _levels(
            ("exact", 0.80, 0.00001),
            ("one_edit", 0.12, 0.0001),
            ("two_edits", 0.04, 0.001),
            ("else", 0.04, 0.99889),
        ),
        ("national_id", "ssn"),
    ),
    FieldSpec(
        "postcode",
        "code",
        _levels(
            ("exact", 0.85, 0.002),
            ("one_edit", 0.10, 0.02),
            ("two_edits", 0.02, 0.1),
            ("else", 0.03, 0.878),
        ),
        ("postal_code", "postalCode", "zip", "zipcode"),
        group="address",
    ),
    FieldSpec(
        "street_number",
        "exact",
        _levels(("exact", 0.85, 0.02), ("else", 0.15, 0.98)),
        ("house_number",),
        group="address",
    ),
    FieldSpec(
        "address_1",
        "text",
        _levels(("jw95", 0.80, 0.001), ("jw85", 0.12, 0.01), ("else", 0.08, 0.989)),
        ("street", "address", "address_line1"),
        group="address",
    ),
    FieldSpec(
        "suburb",
        "text",
        _levels(("jw95", 0.85, 0.004), ("jw85", 0.08, 0.02), ("else", 0.07, 0.976)),
        ("city", "town", "locality"),
        group="address",
    ),
    FieldSpec(
        "state",
        "exact",
        _levels(("exact", 0.95, 0.25), ("else", 0.05, 0.75)),
        ("region", "province"),
        group="address",
    ),
)
#: Most a group's agreeing fields may add (bits). People of one household share every
#: part of an address: counted as independent, those parts alone would merge a mother and
#: her daughter; capped, the address counts about as much as one strong field.
GROUP_CAPS: Mapping[str, float] = {"address": 14.0}
#: odds of a match among blocked candidates before any field is compared (log2)
DEFAULT_PRIOR = math.log2(1 / 500)
#: a block naming more profiles than this says little: it is not used to find candidates
MAX_BLOCK = 60
#: how far a configured field's m (or u) probabilities may sum away from 1
SUM_TOLERANCE = 0.01


def prior_from_probability(probability: float) -> float:
    """The prior (log2 odds) of a probability that two blocked candidates are one person."""
    if not 0.0 < probability < 1.0:
        raise ValueError("a prior probability is between 0 and 1 (exclusive)")
    return float(math.log2(probability / (1.0 - probability)))


def probability_from_prior(prior: float) -> float:
    """The probability a prior in log2 odds stands for (the inverse of the above)."""
    return 1.0 / (1.0 + math.pow(2.0, -prior))


def configured_fields(
    overrides: Mapping[str, Mapping[str, Sequence[float]]],
    base: Sequence[FieldSpec] = DEFAULT_FIELDS,
) -> tuple[FieldSpec, ...]:
    """``base`` with the m/u of the fields in ``overrides`` (field -> level -> [m, u]).

    A field given lists every one of its levels, each m and u strictly between 0 and 1,
    its m summing to 1 (so do its u, both within :data:`SUM_TOLERANCE`); fields not given
    keep their levels. Raises :class:`ValueError` naming the key at fault.
    """
    by_name = {spec.name: spec for spec in base}
    for name in overrides:
        if name not in by_name:
            raise ValueError(f"{name}: unknown field; the fields are {', '.join(by_name)}")
    specs = []
    for spec in base:
        given = overrides.get(spec.name)
        if given is None:
            specs.append(spec)
            continue
        labels = [level.label for level in spec.levels]
        for label in given:
            if label not in labels:
                raise ValueError(
                    f"{spec.name}.{label}: unknown level; {spec.name} has {', '.join(labels)}"
                )
        missing = [label for label in labels if label not in given]
        if missing:
            raise ValueError(
                f"{spec.name}: level {missing[0]} missing (give all of {', '.join(labels)})"
            )
        levels = []
        for label in labels:
            pair = tuple(given[label])
            if len(pair) != 2 or not all(0.0 < p < 1.0 for p in pair):
                raise ValueError(
                    f"{spec.name}.{label}: give [m, u], each between 0 and 1 (exclusive)"
                )
            levels.append(Level(label, float(pair[0]), float(pair[1])))
        for which, total in (
            ("m", sum(level.m for level in levels)),
            ("u", sum(level.u for level in levels)),
        ):
            if abs(total - 1.0) > SUM_TOLERANCE:
                raise ValueError(f"{spec.name}: its {which} values sum to {total:.4g}, not 1")
        specs.append(replace(spec, levels=tuple(levels)))
    return tuple(specs)


#: Segment's address trait's keys, as the fields above name them
_SEGMENT_ADDRESS: Mapping[str, str] = {
    "street": "address_1",
    "city": "suburb",
    "postalCode": "postcode",
}
#: the fields a swapped-names slip crosses (see ``MatchModel.swapped_names``)
_NAMES = ("given_name", "surname")
_SPACES = re.compile(r"\s+")
_NOT_DIGIT = re.compile(r"\D")
_NOT_CODE = re.compile(r"[\s\-./]")


@dataclass(frozen=True)
class Candidate:
    """A profile compared with a record, the probability they are one person, and why."""

    profile_id: str
    probability: float
    weight: float
    fields: Mapping[str, Mapping[str, Any]]

    def evidence(self) -> dict[str, Any]:
        return {
            "rule": "probabilistic",
            "probability": round(self.probability, 6),
            "weight": round(self.weight, 3),
            "fields": {name: dict(found) for name, found in self.fields.items()},
        }


@dataclass(frozen=True)
class MatchModel:
    """The fields, their levels and the thresholds (see the module docstring)."""

    fields: tuple[FieldSpec, ...] = DEFAULT_FIELDS
    prior: float = DEFAULT_PRIOR
    upper: float = 0.99
    lower: float = 0.80
    #: fields that must be present on both sides before a record is compared at all
    min_fields: int = 3
    _by_alias: Mapping[str, FieldSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = {}
        for spec in self.fields:
            for name in (spec.name, *spec.aliases):
                names[name] = spec
        object.__setattr__(self, "_by_alias", names)

    def normalize(self, traits: Mapping[str, Any]) -> dict[str, str]:
        """The record's comparable values, keyed by canonical field name.

        Segment's ``address`` trait (``street``, ``city``, ``postalCode``, ``state``) is
        read as the address fields it holds.
        """
        values: dict[str, str] = {}
        address = traits.get("address")
        if isinstance(address, dict):
            parts = {_SEGMENT_ADDRESS.get(str(k), str(k)): v for k, v in address.items()}
            traits = {**parts, **traits}
        for name, raw in traits.items():
            spec = self._by_alias.get(name)
            if spec is None or spec.name in values or raw is None or isinstance(raw, dict | list):
                continue
            value = _clean(spec.comparator, str(raw))
            if value:
                values[spec.name] = value
        return values

    def matchable(self, values: Mapping[str, str]) -> bool:
        """Enough to compare: a name and ``min_fields`` fields in all."""
        return len(values) >= self.min_fields and ("surname" in values or "given_name" in values)

    @classmethod
    def configured(
        cls,
        *,
        fields: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
        prior_probability: float | None = None,
        upper: float = 0.99,
        lower: float = 0.80,
        min_fields: int = 3,
    ) -> MatchModel:
        """The default model with configured m/u per field level (see :func:`configured_fields`)
        and prior (a probability); raises :class:`ValueError` naming the key at fault."""
        return cls(
            fields=configured_fields(fields or {}),
            prior=DEFAULT_PRIOR
            if prior_probability is None
            else prior_from_probability(prior_probability),
            upper=upper,
            lower=lower,
            min_fields=min_fields,
        )

    @property
    def prior_probability(self) -> float:
        """The prior as a probability (what the configuration's ``prior`` gives)."""
        return probability_from_prior(self.prior)

    def swapped_names(self, a: Mapping[str, str], b: Mapping[str, str]) -> tuple[int, int] | None:
        """Levels of given name and surname compared crossed, when that fits better.

        A data-entry slip puts the given name in the surname's box: when both records
        have both names and crossing them weighs more than comparing them straight, the
        crossed levels (given name's, surname's) are returned; otherwise None.
        """
        ga, sa, gb, sb = (
            a.get("given_name"),
            a.get("surname"),
            b.get("given_name"),
            b.get("surname"),
        )
        if ga is None or sa is None or gb is None or sb is None:
            return None
        given, surname = self._by_alias["given_name"], self._by_alias["surname"]
        crossed = level_of(given, ga, sb), level_of(surname, sa, gb)
        crossed_weight = given.levels[crossed[0]].weight + surname.levels[crossed[1]].weight
        straight = (
            given.levels[level_of(given, ga, gb)].weight
            + surname.levels[level_of(surname, sa, sb)].weight
        )
        return crossed if crossed_weight > straight else None

    def compare(self, a: Mapping[str, str], b: Mapping[str, str], profile_id: str) -> Candidate:
        """Fellegi-Sunter weight of two records (missing values add nothing)."""
        swapped = self.swapped_names(a, b)
        total = 0.0
        agreeing: dict[str, float] = {}
        found: dict[str, dict[str, Any]] = {}
        for spec in self.fields:
            left, right = a.get(spec.name), b.get(spec.name)
            if left is None or right is None:
                continue
            suffix = ""
            if swapped is not None and spec.name in _NAMES:
                index, suffix = swapped[_NAMES.index(spec.name)], "_swapped"
            else:
                index = level_of(spec, left, right)
            level = spec.levels[index]
            if spec.group is not None and spec.group in GROUP_CAPS and level.weight > 0:
                agreeing[spec.group] = agreeing.get(spec.group, 0.0) + level.weight
            else:
                total += level.weight
            found[spec.name] = {"level": level.label + suffix, "weight": round(level.weight, 3)}
        for group, weight in agreeing.items():
            total += min(weight, GROUP_CAPS[group])
        score = self.prior + total
        probability = 1.0 / (1.0 + 2.0 ** (-score)) if score > -1000 else 0.0
        return Candidate(profile_id, probability, total, found)


def _clean(comparator: str, raw: str) -> str:
    text = _SPACES.sub(" ", raw.strip().casefold())
    if comparator == "date":
        return _NOT_DIGIT.sub("", text)
    if comparator == "code":
        return _NOT_CODE.sub("", text)
    return text


def level_of(spec: FieldSpec, a: str, b: str) -> int:
    """Index in ``spec.levels`` of the level two values fall in (the last means different)."""
    if a == b:
        return 0
    kind = spec.comparator
    last = len(spec.levels) - 1
    if kind == "name":
        similarity = JaroWinkler.similarity(a, b)
        return 1 if similarity >= 0.92 else 2 if similarity >= 0.80 else last
    if kind == "text":
        similarity = JaroWinkler.similarity(a, b)
        return 0 if similarity >= 0.95 else 1 if similarity >= 0.85 else last
    if kind == "code":
        edits = OSA.distance(a, b, score_cutoff=2)  # a transposition is one edit
        return min(edits, last) if edits <= 2 else last
    if kind == "date":
        if OSA.distance(a, b, score_cutoff=1) <= 1 or _day_month_swapped(a, b):
            return 1
        return last
    return last


def _day_month_swapped(a: str, b: str) -> bool:
    return len(a) == len(b) == 8 and a[:4] == b[:4] and a[4:6] == b[6:8] and a[6:8] == b[4:6]


def blocking_keys(values: Mapping[str, str]) -> list[str]:
    """Exact keys under which a record is found again despite a typo in most fields."""
    keys = []
    given, surname = values.get("given_name"), values.get("surname")
    dob, postcode, ssn = (
        values.get("date_of_birth"),
        values.get("postcode"),
        values.get("soc_sec_id"),
    )
    if ssn:
        keys.append(f"ssn:{ssn}")
    if dob:
        keys.append(f"dob:{dob}")
    if given and surname:
        codes = sorted((jellyfish.soundex(given), jellyfish.soundex(surname)))
        keys.append(f"names:{codes[0]}|{codes[1]}")
    if postcode and given:
        keys.append(f"given_pc:{given}|{postcode}")
    if postcode and surname:
        keys.append(f"surname_pc:{surname}|{postcode}")
    number = values.get("street_number")
    if postcode and number:
        keys.append(f"pc_number:{postcode}|{number}")
    return keys


@dataclass
class CandidatePool:
    """Profiles that blocking found for a batch, plus the batch's own new records."""

    model: MatchModel
    #: profile id -> its comparable values
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    #: block -> the profiles filed under it
    blocks: dict[str, set[str]] = field(default_factory=dict)

    def add(self, profile_id: str, values: Mapping[str, str]) -> None:
        """File a profile under its blocks (a record the batch just placed)."""
        self.values[profile_id] = dict(values)
        for key in blocking_keys(values):
            self.blocks.setdefault(key, set()).add(profile_id)

    def best(self, values: Mapping[str, str], exclude: str, live: Any) -> Candidate | None:
        """The most probable candidate for a record (``live`` maps a merged id to its survivor)."""
        seen: set[str] = set()
        best: Candidate | None = None
        for key in blocking_keys(values):
            members = self.blocks.get(key, ())
            if len(members) > MAX_BLOCK:
                continue
            for member in members:
                profile_id = live(member)
                if profile_id == exclude or profile_id in seen or member not in self.values:
                    continue
                seen.add(profile_id)
                found = self.model.compare(values, self.values[member], profile_id)
                if best is None or found.probability > best.probability:
                    best = found
        return best


def all_blocks(records: Iterable[Mapping[str, str]]) -> set[str]:
    """Every blocking key of some records (what to look up for a batch)."""
    return {key for values in records for key in blocking_keys(values)}


__all__ = [
    "DEFAULT_FIELDS",
    "DEFAULT_PRIOR",
    "GROUP_CAPS",
    "MAX_BLOCK",
    "Candidate",
    "CandidatePool",
    "FieldSpec",
    "Level",
    "MatchModel",
    "all_blocks",
    "blocking_keys",
    "configured_fields",
    "level_of",
    "prior_from_probability",
    "probability_from_prior",
]
