"""The matcher's m/u probabilities and prior, estimated from the hub's own records.

Fellegi-Sunter needs, for each level of each field, u (how often two *different* people
land there) and m (how often two records of *one* person do), plus the prior (how many
of the pairs blocking finds are one person). This module learns them without labels,
the way Splink does:

* **u by random sampling** (Splink's ``estimate_u_using_random_sampling``): two records
  drawn at random are almost always two people, so the share of random pairs at each
  level estimates u. A level no random pair reached gets half a pair (add-0.5
  smoothing), so its weight stays finite.
* **m and the prior by expectation-maximisation** over the *candidate pairs*, the pairs
  that share a blocking key (:func:`identity.matching.blocking_keys`, blocks larger than
  :data:`~identity.matching.MAX_BLOCK` skipped as the hub skips them), with u held fixed.
  The E-step scores each pair exactly as :meth:`MatchModel.compare` does (the address
  group's cap included), the M-step counts levels weighted by the match probability.
  Pairs with the same levels are counted once with their number, so an iteration costs
  the number of distinct level patterns, not of pairs.
* **u corrected for the matches among random pairs**: on a data set with many
  duplicates the random pairs hold a few true matches, which makes an exact national id
  look far more common among strangers than it is. EM's estimate of how many matches
  there are (λ times the candidate pairs, over all pairs) says what share of random
  pairs are matches; that share of m is taken out of u and EM runs again
  (:data:`U_CORRECTION_ROUNDS` times).

Simplifications, each deliberate:

* A pair's given name and surname are compared crossed when that fits better under the
  starting model (:meth:`MatchModel.swapped_names`), decided once; the crossed levels
  count as the fields' own levels, as ``compare`` scores them.
* The group cap is applied in the E-step only: the M-step estimates each field's m on
  its own, as if the fields were independent (the model EM assumes).
* Blocks are cut by their final size; the hub, deciding record by record, also used a
  block before it grew past the limit.
* A field with too few comparisons (:data:`MIN_COMPARISONS` random pairs, or less than
  one expected match among the candidates) keeps its current m/u.

The functions below work on plain lists of normalized records (``MatchModel.normalize``)
and are deterministic for a seed; :func:`read_records` reads a workspace's records from
the database in chunks. ``ecrm identity estimate`` prints the result and writes the
``matching:`` block of the identity configuration.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from identity.matching import (
    GROUP_CAPS,
    MAX_BLOCK,
    FieldSpec,
    Level,
    MatchModel,
    blocking_keys,
    level_of,
    prior_from_probability,
)
from identity.models import PROFILE_EVENTS, PROFILES
from pipeline.errors import HubError
from pipeline.models import EVENTS

#: a field's level is -1 in a pattern when either record lacks the field
MISSING = -1
#: the fewest matchable records worth estimating from
MIN_RECORDS = 100
#: the fewest candidate pairs EM can learn m from
MIN_CANDIDATE_PAIRS = 20
#: random pairs comparing a field before its u is estimated (else it keeps its u)
MIN_COMPARISONS = 100
#: random pairs compared for u (Splink's examples use 1e6-1e7; 200,000 take seconds)
DEFAULT_SAMPLE = 200_000
#: records read at most from the database (the oldest first)
DEFAULT_MAX_RECORDS = 200_000
#: the least m or u a level gets (a configured probability must be above 0)
FLOOR = 1e-6
#: how often u is corrected for the matches among random pairs, EM rerun each time
U_CORRECTION_ROUNDS = 2
#: add-k smoothing of the random pairs' level counts
SMOOTHING = 0.5
#: records read per query
_CHUNK = 2000

Pattern = tuple[int, ...]
Probabilities = tuple[float, ...]


class EstimationError(HubError):
    """Too little data to estimate from (the reason is one line)."""


def levels(model: MatchModel, a: Mapping[str, str], b: Mapping[str, str]) -> Pattern:
    """The level index of each of ``model.fields`` for two records (:data:`MISSING`: absent).

    The same levels :meth:`MatchModel.compare` scores, names crossed when that fits better.
    """
    swapped = model.swapped_names(a, b)
    found = []
    for spec in model.fields:
        left, right = a.get(spec.name), b.get(spec.name)
        if left is None or right is None:
            found.append(MISSING)
        elif swapped is not None and spec.name == "given_name":
            found.append(swapped[0])
        elif swapped is not None and spec.name == "surname":
            found.append(swapped[1])
        else:
            found.append(level_of(spec, left, right))
    return tuple(found)


def tally(
    model: MatchModel, records: Sequence[Mapping[str, str]], pairs: Iterator[tuple[int, int]]
) -> Counter[Pattern]:
    """How many of ``pairs`` (indexes into ``records``) fall in each level pattern."""
    counts: Counter[Pattern] = Counter()
    for i, j in pairs:
        counts[levels(model, records[i], records[j])] += 1
    return counts


def random_pairs(n: int, count: int, seed: int) -> Iterator[tuple[int, int]]:
    """``count`` pairs of distinct indexes below ``n``, drawn with a seeded generator.

    Every pair when there are no more than ``count`` of them; otherwise uniform draws
    (with replacement, like Splink's sampling).
    """
    if n * (n - 1) // 2 <= count:
        yield from ((i, j) for i in range(n) for j in range(i + 1, n))
        return
    rng = random.Random(seed)
    for _ in range(count):
        i = rng.randrange(n)
        j = rng.randrange(n - 1)
        j += j >= i
        yield (i, j) if i < j else (j, i)


def candidate_pairs(
    records: Sequence[Mapping[str, str]], max_block: int = MAX_BLOCK
) -> list[tuple[int, int]]:
    """Pairs of records sharing a blocking key whose block holds at most ``max_block``."""
    blocks: dict[str, list[int]] = {}
    for index, values in enumerate(records):
        for key in blocking_keys(values):
            blocks.setdefault(key, []).append(index)
    pairs: set[tuple[int, int]] = set()
    for members in blocks.values():
        if 2 <= len(members) <= max_block:
            pairs.update(
                (members[x], members[y])
                for x in range(len(members))
                for y in range(x + 1, len(members))
            )
    return sorted(pairs)


def estimate_u(
    model: MatchModel,
    counts: Counter[Pattern],
    *,
    smoothing: float = SMOOTHING,
    min_comparisons: int = MIN_COMPARISONS,
) -> list[Probabilities | None]:
    """u per field level from random pairs' patterns (None: too few comparisons)."""
    found: list[Probabilities | None] = []
    for f, spec in enumerate(model.fields):
        size = len(spec.levels)
        per_level = [0.0] * size
        for pattern, count in counts.items():
            if pattern[f] != MISSING:
                per_level[pattern[f]] += count
        total = sum(per_level)
        if total < min_comparisons:
            found.append(None)
            continue
        found.append(_floored([(c + smoothing) / (total + smoothing * size) for c in per_level]))
    return found


@dataclass(frozen=True)
class EMResult:
    """What expectation-maximisation found."""

    #: per field, m per level (None: too little evidence, the starting m is kept)
    m: tuple[Probabilities | None, ...]
    #: λ, the share of candidate pairs that are matches
    prior_probability: float
    iterations: int
    converged: bool


def expectation_maximisation(
    model: MatchModel,
    counts: Counter[Pattern],
    u: Sequence[Probabilities],
    *,
    max_iterations: int = 200,
    tolerance: float = 1e-6,
) -> EMResult:
    """m per field level and λ over candidate pairs' patterns, ``u`` held fixed.

    Starts from ``model``'s m and prior; stops when no m and not λ move by more than
    ``tolerance`` in an iteration, or after ``max_iterations``.
    """
    patterns = sorted(counts.items())
    if not patterns:
        raise EstimationError("no candidate pairs to learn m from")
    fields = model.fields
    m = [[level.m for level in spec.levels] for spec in fields]
    kept = [False] * len(fields)
    share = model.prior_probability
    total = float(sum(count for _, count in patterns))
    groups = [spec.group if spec.group in GROUP_CAPS else None for spec in fields]
    converged = False
    iteration = 0
    while iteration < max_iterations:
        iteration += 1
        weights = [
            [math.log2(mi / ui) for mi, ui in zip(mf, uf, strict=True)]
            for mf, uf in zip(m, u, strict=True)
        ]
        prior = prior_from_probability(share)
        matched = [[0.0] * len(spec.levels) for spec in fields]
        expected = 0.0
        for pattern, count in patterns:
            weight = _score(pattern, weights, groups)
            score = prior + weight
            p = 1.0 / (1.0 + math.pow(2.0, -score)) if score > -1000 else 0.0
            p *= count
            expected += p
            for f, level in enumerate(pattern):
                if level != MISSING:
                    matched[f][level] += p
        new_m = []
        for f, per_level in enumerate(matched):
            evidence = sum(per_level)
            if evidence < 1.0:  # less than one expected match compared this field
                new_m.append(m[f])
                kept[f] = True
                continue
            kept[f] = False
            new_m.append(list(_floored([x / evidence for x in per_level])))
        new_share = min(max(expected / total, FLOOR), 1.0 - FLOOR)
        moved = max(
            abs(new_share - share),
            *(
                abs(a - b)
                for old, new in zip(m, new_m, strict=True)
                for a, b in zip(old, new, strict=True)
            ),
        )
        m, share = new_m, new_share
        if moved < tolerance:
            converged = True
            break
    return EMResult(
        m=tuple(None if kept[f] else tuple(mf) for f, mf in enumerate(m)),
        prior_probability=share,
        iterations=iteration,
        converged=converged,
    )


def corrected_u(
    observed: Probabilities,
    m: Probabilities,
    match_share: float,
    floor: float,
) -> Probabilities:
    """u with the matches among random pairs taken out.

    A share ``match_share`` of random pairs are matches, which land on the levels as m
    says: ``observed = (1 - share) * u + share * m``, solved for u (at least ``floor``).
    """
    if match_share <= 0.0:
        return observed
    raw = [
        max((o - match_share * mi) / (1.0 - match_share), floor)
        for o, mi in zip(observed, m, strict=True)
    ]
    return _floored(raw)


@dataclass(frozen=True)
class FieldEstimate:
    """One field's levels: the model's m/u before and after estimation."""

    name: str
    before: tuple[Level, ...]
    after: tuple[Level, ...]
    #: whether m / u were estimated (False: too little data, the current values kept)
    m_estimated: bool
    u_estimated: bool
    #: random pairs in which both records had the field
    comparisons: int


@dataclass(frozen=True)
class Estimate:
    """The parameters learned from some records, and how."""

    base: MatchModel
    fields: tuple[FieldEstimate, ...]
    #: λ: the probability that a candidate pair is a match (the configuration's ``prior``)
    prior_probability: float
    records: int
    candidate_pairs: int
    random_pairs: int
    #: EM iterations, every round together
    iterations: int
    converged: bool
    seconds: float

    @property
    def model(self) -> MatchModel:
        """The base model (thresholds and all) with the estimated m/u and prior."""
        after = {estimate.name: estimate.after for estimate in self.fields}
        return replace(
            self.base,
            fields=tuple(replace(spec, levels=after[spec.name]) for spec in self.base.fields),
            prior=prior_from_probability(self.prior_probability),
        )

    def config(self, *, enabled: bool = True) -> dict[str, Any]:
        """The ``matching:`` section of the identity configuration, as data."""
        fields = {
            estimate.name: {
                level.label: [_round(level.m), _round(level.u)] for level in estimate.after
            }
            for estimate in self.fields
            if estimate.m_estimated or estimate.u_estimated
        }
        return {
            "matching": {
                "enabled": enabled,
                "upper": self.base.upper,
                "lower": self.base.lower,
                "min_fields": self.base.min_fields,
                "prior": _round(self.prior_probability),
                "fields": fields,
            }
        }

    def yaml(self, *, enabled: bool = True, source: str = "") -> str:
        """:meth:`config` as YAML with a comment saying where it came from."""
        head = (
            f"# estimated by `ecrm identity estimate` from {self.records:,} records{source}:"
            f" {self.candidate_pairs:,} candidate pairs (EM), {self.random_pairs:,} random"
            " pairs (u)\n"
        )
        body = yaml.safe_dump(
            self.config(enabled=enabled), sort_keys=False, default_flow_style=None, width=100
        )
        return head + body


def estimate(
    records: Sequence[Mapping[str, str]],
    model: MatchModel | None = None,
    *,
    sample: int = DEFAULT_SAMPLE,
    seed: int = 1,
    correct_u: bool = True,
    max_block: int = MAX_BLOCK,
) -> Estimate:
    """Learn u (random pairs), then m and the prior (EM over candidate pairs).

    ``records`` are normalized values (``model.normalize``); those ``model.matchable``
    refuses are left out, as the hub leaves them out. ``model`` (default: the built-in
    one) gives the fields, the starting m/u and prior, and the thresholds kept.
    Raises :class:`EstimationError` when there is too little to learn from.
    """
    started = time.perf_counter()
    base = model or MatchModel()
    usable = [dict(values) for values in records if base.matchable(values)]
    if len(usable) < MIN_RECORDS:
        raise EstimationError(
            f"{len(usable):,} records with a name and {base.min_fields} comparable fields;"
            f" estimating needs at least {MIN_RECORDS}"
        )
    pairs = candidate_pairs(usable, max_block)
    if len(pairs) < MIN_CANDIDATE_PAIRS:
        raise EstimationError(
            f"only {len(pairs):,} pairs of records share a blocking key;"
            f" estimating m needs at least {MIN_CANDIDATE_PAIRS}"
        )
    candidates = tally(base, usable, iter(pairs))
    randoms = tally(base, usable, random_pairs(len(usable), sample, seed))
    drawn = sum(randoms.values())
    observed = estimate_u(base, randoms)
    comparisons = [
        sum(c for pattern, c in randoms.items() if pattern[f] != MISSING)
        for f in range(len(base.fields))
    ]
    current_u = [tuple(level.u for level in spec.levels) for spec in base.fields]
    u = [found or now for found, now in zip(observed, current_u, strict=True)]
    result = expectation_maximisation(base, candidates, u)
    iterations = result.iterations
    all_pairs = len(usable) * (len(usable) - 1) / 2
    for _ in range(U_CORRECTION_ROUNDS if correct_u else 0):
        share = min(result.prior_probability * len(pairs) / all_pairs, 0.5)
        m = _m_or_current(base, result)
        u = [
            corrected_u(seen, mf, share, SMOOTHING / (n + SMOOTHING * len(mf)))
            if seen is not None
            else now
            for seen, mf, n, now in zip(observed, m, comparisons, current_u, strict=True)
        ]
        start = _with(base, m, u, result.prior_probability)
        result = expectation_maximisation(start, candidates, u)
        iterations += result.iterations
    m = _m_or_current(base, result)
    fields = tuple(
        FieldEstimate(
            name=spec.name,
            before=spec.levels,
            after=tuple(
                Level(level.label, mi, ui)
                for level, mi, ui in zip(spec.levels, m[f], u[f], strict=True)
            ),
            m_estimated=result.m[f] is not None,
            u_estimated=observed[f] is not None,
            comparisons=comparisons[f],
        )
        for f, spec in enumerate(base.fields)
    )
    return Estimate(
        base=base,
        fields=fields,
        prior_probability=result.prior_probability,
        records=len(usable),
        candidate_pairs=len(pairs),
        random_pairs=drawn,
        iterations=iterations,
        converged=result.converged,
        seconds=time.perf_counter() - started,
    )


RecordSource = Literal["events", "profiles"]


def read_records(
    session: Session,
    workspace_id: str,
    model: MatchModel,
    *,
    source: RecordSource = "events",
    limit: int = DEFAULT_MAX_RECORDS,
    chunk: int = _CHUNK,
) -> list[dict[str, str]]:
    """A workspace's matchable records, normalized, oldest first, at most ``limit``.

    ``events`` (the default): each event's traits, once per profile and distinct values
    (a customer's hundred orders with the same name and address are one record). These
    are the records as they arrived, duplicates included: what EM learns m from.
    ``profiles``: the traits of each live profile. A hub that has been matching has
    merged most duplicates away, so its profiles underestimate m; use them when the
    profiles are the records (a hub that ran with matching off).
    """
    if source == "profiles":
        return _read_profiles(session, workspace_id, model, limit=limit, chunk=chunk)
    seen: set[tuple[str | None, tuple[tuple[str, str], ...]]] = set()
    found: list[dict[str, str]] = []
    last = 0
    events = EVENTS.c
    while len(found) < limit:
        rows = session.execute(
            select(events.id, events.traits, PROFILE_EVENTS.c.profile_id)
            .outerjoin(PROFILE_EVENTS, PROFILE_EVENTS.c.event_id == events.id)
            .where(events.workspace_id == workspace_id, events.id > last)
            .order_by(events.id)
            .limit(chunk)
        ).all()
        if not rows:
            break
        last = rows[-1][0]
        for _, traits, profile_id in rows:
            if not traits:
                continue
            values = model.normalize(traits)
            key = (profile_id, tuple(sorted(values.items())))
            if model.matchable(values) and key not in seen:
                seen.add(key)
                found.append(values)
                if len(found) >= limit:
                    break
    return found


def _read_profiles(
    session: Session, workspace_id: str, model: MatchModel, *, limit: int, chunk: int
) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    last = ""
    profiles = PROFILES.c
    while len(found) < limit:
        rows = session.execute(
            select(profiles.id, profiles.traits)
            .where(
                profiles.workspace_id == workspace_id,
                profiles.merged_into.is_(None),
                profiles.id > last,
            )
            .order_by(profiles.id)
            .limit(chunk)
        ).all()
        if not rows:
            break
        last = rows[-1][0]
        for _, traits in rows:
            values = model.normalize(traits or {})
            if model.matchable(values):
                found.append(values)
                if len(found) >= limit:
                    break
    return found


def pattern_weight(model: MatchModel, pattern: Pattern) -> float:
    """The weight ``model`` gives a level pattern: what :meth:`MatchModel.compare` adds."""
    weights = [[level.weight for level in spec.levels] for spec in model.fields]
    groups = [spec.group if spec.group in GROUP_CAPS else None for spec in model.fields]
    return _score(pattern, weights, groups)


def _score(
    pattern: Pattern, weights: Sequence[Sequence[float]], groups: Sequence[str | None]
) -> float:
    """A pattern's weight as :meth:`MatchModel.compare` adds it (group caps included)."""
    total = 0.0
    agreeing: dict[str, float] = {}
    for f, level in enumerate(pattern):
        if level == MISSING:
            continue
        weight = weights[f][level]
        group = groups[f]
        if group is not None and weight > 0:
            agreeing[group] = agreeing.get(group, 0.0) + weight
        else:
            total += weight
    for group, weight in agreeing.items():
        total += min(weight, GROUP_CAPS[group])
    return total


def _floored(values: Sequence[float]) -> Probabilities:
    """Each value at least :data:`FLOOR`, then scaled to sum to 1."""
    raised = [max(v, FLOOR) for v in values]
    total = sum(raised)
    return tuple(v / total for v in raised)


def _m_or_current(model: MatchModel, result: EMResult) -> list[Probabilities]:
    return [
        found if found is not None else tuple(level.m for level in spec.levels)
        for found, spec in zip(result.m, model.fields, strict=True)
    ]


def _with(
    model: MatchModel,
    m: Sequence[Probabilities],
    u: Sequence[Probabilities],
    prior_probability: float,
) -> MatchModel:
    """``model`` with these m/u and prior (EM's next starting point)."""
    fields: list[FieldSpec] = [
        replace(
            spec,
            levels=tuple(
                Level(level.label, mi, ui)
                for level, mi, ui in zip(spec.levels, m[f], u[f], strict=True)
            ),
        )
        for f, spec in enumerate(model.fields)
    ]
    return replace(model, fields=tuple(fields), prior=prior_from_probability(prior_probability))


def _round(value: float) -> float:
    """Six significant digits: enough for a weight, short in a file."""
    return float(f"{value:.6g}")


__all__ = [
    "DEFAULT_MAX_RECORDS",
    "DEFAULT_SAMPLE",
    "MIN_RECORDS",
    "MISSING",
    "EMResult",
    "Estimate",
    "EstimationError",
    "FieldEstimate",
    "candidate_pairs",
    "corrected_u",
    "estimate",
    "estimate_u",
    "expectation_maximisation",
    "levels",
    "pattern_weight",
    "random_pairs",
    "read_records",
    "tally",
]
