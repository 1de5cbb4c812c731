"""Estimating m/u and the prior (identity.estimate) and configuring them (identity.config).

EM is checked on synthetic comparison data whose true m, u and match share are known;
the configuration on what it accepts, what it refuses (naming the key) and what it
changes in a decision.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import yaml

from identity.config import IdentityConfig, IdentityConfigError
from identity.estimate import (
    MISSING,
    EstimationError,
    candidate_pairs,
    corrected_u,
    estimate,
    estimate_u,
    expectation_maximisation,
    levels,
    pattern_weight,
    random_pairs,
)
from identity.matching import (
    DEFAULT_FIELDS,
    DEFAULT_PRIOR,
    FieldSpec,
    Level,
    MatchModel,
    prior_from_probability,
    probability_from_prior,
)

# --- synthetic comparison data with known parameters ------------------------------------

#: three independent fields: true m and u per level
TRUE_M = ((0.85, 0.10, 0.05), (0.70, 0.20, 0.10), (0.90, 0.10))
TRUE_U = ((0.01, 0.04, 0.95), (0.05, 0.15, 0.80), (0.20, 0.80))


def toy_model(
    m: tuple[tuple[float, ...], ...], u: tuple[tuple[float, ...], ...], prior: float
) -> MatchModel:
    names = ("a", "b", "c")
    fields = tuple(
        FieldSpec(
            name,
            "exact",
            tuple(Level(f"l{k}", mk, uk) for k, (mk, uk) in enumerate(zip(mf, uf, strict=True))),
        )
        for name, mf, uf in zip(names, m, u, strict=True)
    )
    return MatchModel(fields=fields, prior=prior_from_probability(prior))


def draw(probabilities: tuple[float, ...], rng: random.Random) -> int:
    return rng.choices(range(len(probabilities)), weights=probabilities)[0]


def synthetic_pairs(
    n: int, share: float, seed: int, missing: float = 0.1
) -> tuple[Counter[tuple[int, ...]], int]:
    """``n`` comparison patterns, a ``share`` of them matches; returns them and the matches."""
    rng = random.Random(seed)
    counts: Counter[tuple[int, ...]] = Counter()
    matches = 0
    for _ in range(n):
        is_match = rng.random() < share
        matches += is_match
        table = TRUE_M if is_match else TRUE_U
        counts[tuple(MISSING if rng.random() < missing else draw(p, rng) for p in table)] += 1
    return counts, matches


def test_em_recovers_the_true_m_and_match_share() -> None:
    counts, matches = synthetic_pairs(60_000, share=0.25, seed=7)
    # start far from the truth: flat-ish m, a prior of 1 in 100
    start = toy_model(((0.5, 0.3, 0.2), (0.5, 0.3, 0.2), (0.6, 0.4)), TRUE_U, prior=0.01)
    result = expectation_maximisation(start, counts, TRUE_U)
    assert result.converged
    assert result.prior_probability == pytest.approx(matches / 60_000, abs=0.01)
    for found, truth in zip(result.m, TRUE_M, strict=True):
        assert found is not None
        assert found == pytest.approx(truth, abs=0.02)
        assert sum(found) == pytest.approx(1.0)


def test_em_from_a_wrong_start_does_not_stay_there() -> None:
    """The recovered m is the data's, not the starting values'."""
    counts, _ = synthetic_pairs(40_000, share=0.4, seed=11)
    starts = (
        ((0.34, 0.33, 0.33), (0.34, 0.33, 0.33), (0.5, 0.5)),
        ((0.98, 0.01, 0.01), (0.98, 0.01, 0.01), (0.99, 0.01)),
    )
    results = [
        expectation_maximisation(toy_model(m, TRUE_U, prior=0.5), counts, TRUE_U) for m in starts
    ]
    for result in results:
        assert result.m[0] == pytest.approx(TRUE_M[0], abs=0.02)
        assert result.prior_probability == pytest.approx(0.4, abs=0.015)


def test_u_from_random_pairs_is_the_level_share_smoothed() -> None:
    rng = random.Random(3)
    counts: Counter[tuple[int, ...]] = Counter(
        tuple(draw(p, rng) for p in TRUE_U) for _ in range(50_000)
    )
    model = toy_model(TRUE_M, TRUE_U, prior=0.1)
    found = estimate_u(model, counts)
    for u, truth in zip(found, TRUE_U, strict=True):
        assert u is not None and u == pytest.approx(truth, abs=0.01)
    # a level no pair reached still gets a little probability (half a pair)
    never = Counter({(0, 0, 0): 999, (0, 0, 1): 1})
    sparse = estimate_u(model, never)[0]
    assert sparse is not None and 0 < sparse[2] < 1e-3
    # too few comparisons: not estimated
    assert estimate_u(model, Counter({(0, 0, 0): 10}), min_comparisons=100) == [None] * 3


def test_corrected_u_takes_the_matches_out_of_random_pairs() -> None:
    true_u, m, share = (0.001, 0.009, 0.99), (0.9, 0.05, 0.05), 0.01
    observed = tuple((1 - share) * uk + share * mk for uk, mk in zip(true_u, m, strict=True))
    assert corrected_u(observed, m, share, 1e-9) == pytest.approx(true_u, rel=1e-6)
    assert corrected_u(observed, m, 0.0, 1e-9) == observed
    floored = corrected_u((0.001, 0.009, 0.99), (0.9, 0.05, 0.05), 0.01, 1e-5)
    assert min(floored) >= 1e-5 * 0.99 and sum(floored) == pytest.approx(1.0)


def test_random_pairs_are_seeded_distinct_and_exhaustive_when_few() -> None:
    drawn = list(random_pairs(1000, 500, seed=4))
    assert drawn == list(random_pairs(1000, 500, seed=4))
    assert drawn != list(random_pairs(1000, 500, seed=5))
    assert all(0 <= i < j < 1000 for i, j in drawn) and len(drawn) == 500
    assert sorted(random_pairs(5, 100, seed=1)) == [
        (i, j) for i in range(5) for j in range(i + 1, 5)
    ]


def test_candidate_pairs_share_a_key_and_skip_big_blocks() -> None:
    a = {"given_name": "ann", "surname": "lee", "date_of_birth": "19800101"}
    b = {"given_name": "anne", "surname": "leigh", "date_of_birth": "19800101"}
    c = {"given_name": "bob", "surname": "ray", "date_of_birth": "19700101"}
    assert candidate_pairs([a, b, c]) == [(0, 1)]
    crowd = [{**a, "given_name": f"x{i}", "surname": f"y{i}"} for i in range(5)]
    assert len(candidate_pairs(crowd)) == 10
    assert candidate_pairs(crowd, max_block=4) == []


# --- synthetic people: the hub's own fields ---------------------------------------------

GIVEN = ("amelia", "oliver", "charlotte", "jack", "isla", "noah", "ava", "william", "mia")
SURNAMES = ("smith", "jones", "williams", "brown", "wilson", "taylor", "nguyen", "kelly")
STREETS = ("wattle grove", "banksia road", "kurrajong avenue", "acacia street", "jarrah close")
SUBURBS = ("ashfield", "newtown", "marrickville", "glebe", "leichhardt", "balmain")


def typo(value: str, rng: random.Random) -> str:
    if len(value) < 2:
        return value + "x"
    i = rng.randrange(len(value) - 1)
    return value[:i] + value[i + 1] + value[i] + value[i + 2 :]  # a transposition


def people(count: int, seed: int) -> list[tuple[int, dict[str, str]]]:
    """``count`` people (their number, a record), each with one to three records; copies
    carry a typo or a gap."""
    rng = random.Random(seed)
    records = []
    for number in range(count):
        born = f"{rng.randint(1940, 2005)}-{rng.randint(1, 12):02}-{rng.randint(1, 28):02}"
        person = {
            "given_name": rng.choice(GIVEN),
            "surname": rng.choice(SURNAMES),
            "date_of_birth": born,
            "soc_sec_id": str(rng.randint(1_000_000, 9_999_999)),
            "street_number": str(rng.randint(1, 200)),
            "address_1": rng.choice(STREETS),
            "suburb": rng.choice(SUBURBS),
            "postcode": str(rng.randint(2000, 2999)),
            "state": "nsw",
        }
        records.append((number, person))
        for _ in range(rng.choice((0, 1, 1, 2))):
            copy = dict(person)
            field = rng.choice(sorted(copy))
            if rng.random() < 0.2:
                del copy[field]
            else:
                copy[field] = typo(copy[field], rng)
            records.append((number, copy))
    return records


def normalized(records: list[tuple[int, dict[str, str]]]) -> list[dict[str, str]]:
    model = MatchModel()
    return [model.normalize(r) for _, r in records]


def test_pattern_weight_is_what_compare_adds() -> None:
    """EM's E-step scores a pair exactly as the hub does (group cap, crossed names)."""
    model = MatchModel()
    records = normalized(people(60, seed=2))
    records.append(
        {**records[0], "given_name": records[0]["surname"], "surname": records[0]["given_name"]}
    )
    pairs = [(i, j) for i in range(0, len(records), 3) for j in range(len(records)) if i < j]
    pairs.append((0, len(records) - 1))
    for i, j in pairs:
        found = model.compare(records[i], records[j], "p")
        pattern = levels(model, records[i], records[j])
        assert pattern_weight(model, pattern) == pytest.approx(found.weight, abs=1e-9)
    crossed = levels(model, records[0], records[-1])
    assert crossed[0] == 0 and crossed[1] == 0  # both names exact once crossed


def test_estimate_on_people_is_deterministic_and_finds_the_true_match_share() -> None:
    generated = people(400, seed=5)
    records = normalized(generated)
    first = estimate(records, sample=20_000, seed=9)
    again = estimate(records, sample=20_000, seed=9)
    assert first.config() == again.config()
    other = estimate(records, sample=20_000, seed=10)
    assert other.config() != first.config()
    assert first.records == len(records) and first.random_pairs == 20_000
    assert first.converged
    # EM's share of matches among the pairs blocking finds is the true one (few names
    # and suburbs here: most pairs sharing a key are two people)
    pairs = candidate_pairs(records)
    truth = sum(generated[i][0] == generated[j][0] for i, j in pairs) / len(pairs)
    assert 0.1 < truth < 0.5
    assert first.prior_probability == pytest.approx(truth, abs=0.03)
    fields = {f.name: f for f in first.fields}
    ssn = fields["soc_sec_id"].after
    assert ssn[0].m > 0.7 and ssn[0].u < 1e-4 and ssn[0].weight > 12
    state = fields["state"].after  # everyone lives in nsw: agreement says little
    assert state[0].u > 0.8 and abs(state[0].weight) < 0.5
    assert all(f.m_estimated and f.u_estimated for f in first.fields)
    # the estimated model is a model the hub can run
    model = first.model
    assert model.prior == pytest.approx(prior_from_probability(first.prior_probability))
    assert model.compare(records[0], records[0], "p").probability > 0.99


def test_too_few_records_or_pairs_is_one_clear_error() -> None:
    with pytest.raises(EstimationError, match="at least 100"):
        estimate(normalized(people(20, seed=1)))
    loners = [
        {
            "given_name": f"g{i}",
            "surname": f"s{i}",
            "date_of_birth": f"19{i:06}",
            "postcode": f"{i}",
        }
        for i in range(150)
    ]
    with pytest.raises(EstimationError, match="share a blocking key"):
        estimate(loners)


def test_the_yaml_block_is_a_valid_configuration_of_the_estimated_model() -> None:
    found = estimate(normalized(people(300, seed=8)), sample=10_000, seed=1)
    text = found.yaml(source=" (test)")
    assert text.startswith("# estimated by `ecrm identity estimate` from")
    config = IdentityConfig.from_mapping(yaml.safe_load(text))
    assert config.matching is not None
    assert config.matching.prior == pytest.approx(found.model.prior, abs=1e-4)
    for loaded, estimated in zip(config.matching.fields, found.model.fields, strict=True):
        for a, b in zip(loaded.levels, estimated.levels, strict=True):
            assert (a.label, a.m, a.u) == (
                b.label,
                pytest.approx(b.m, rel=1e-5),
                pytest.approx(b.u, rel=1e-5),
            )


# --- configuring m/u --------------------------------------------------------------------

GIVEN_LEVELS = {
    "exact": [0.7, 0.01],
    "jw92": [0.2, 0.01],
    "jw80": [0.05, 0.03],
    "else": [0.05, 0.95],
}


def test_configured_levels_and_prior_replace_the_defaults_field_by_field() -> None:
    config = IdentityConfig.from_mapping(
        {"matching": {"prior": 0.01, "upper": 0.95, "fields": {"given_name": GIVEN_LEVELS}}}
    )
    model = config.matching
    assert model is not None and model.upper == 0.95
    assert model.prior == pytest.approx(math.log2(0.01 / 0.99))
    assert model.prior_probability == pytest.approx(0.01)
    given = model.fields[0]
    assert [(lv.label, lv.m, lv.u) for lv in given.levels] == [
        (label, m, u) for label, (m, u) in GIVEN_LEVELS.items()
    ]
    assert given.aliases == DEFAULT_FIELDS[0].aliases  # only the numbers change
    assert model.fields[1:] == DEFAULT_FIELDS[1:]
    default = IdentityConfig.from_mapping({"matching": {}}).matching
    assert default is not None and default.prior == DEFAULT_PRIOR
    assert default.fields == DEFAULT_FIELDS
    assert probability_from_prior(prior_from_probability(0.3)) == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("matching", "where"),
    [
        (
            {"fields": {"nickname": GIVEN_LEVELS}},
            "matching.fields: Value error, nickname: unknown field",
        ),
        (
            {"fields": {"given_name": {**GIVEN_LEVELS, "jw99": [0.1, 0.1]}}},
            "given_name.jw99: unknown level; given_name has exact, jw92, jw80, else",
        ),
        (
            {"fields": {"given_name": {"exact": [0.9, 0.01], "else": [0.1, 0.99]}}},
            "given_name: level jw92 missing",
        ),
        (
            {"fields": {"given_name": {**GIVEN_LEVELS, "exact": [1.0, 0.01]}}},
            "given_name.exact: give [m, u], each between 0 and 1",
        ),
        (
            {"fields": {"given_name": {**GIVEN_LEVELS, "else": [0.05, 0.0]}}},
            "given_name.else: give [m, u], each between 0 and 1",
        ),
        (
            {"fields": {"given_name": {**GIVEN_LEVELS, "exact": [0.5, 0.01]}}},
            "given_name: its m values sum to 0.8, not 1",
        ),
        (
            {"fields": {"given_name": {**GIVEN_LEVELS, "else": [0.05, 0.5]}}},
            "given_name: its u values sum to 0.55, not 1",
        ),
        (
            {"fields": {"given_name": {**GIVEN_LEVELS, "exact": [0.7]}}},
            "matching.fields.given_name.exact.1",
        ),
        ({"prior": 0}, "matching.prior:"),
        ({"prior": 1.2}, "matching.prior:"),
    ],
)
def test_bad_levels_name_the_key(matching: dict[str, object], where: str) -> None:
    with pytest.raises(IdentityConfigError) as error:
        IdentityConfig.from_mapping({"matching": matching}, source="id.yaml")
    assert str(error.value).startswith("id.yaml: matching")
    assert where in str(error.value)


def test_a_configured_model_changes_a_decision() -> None:
    """The same two records: merged by default, kept apart under a lower prior, and no
    longer merged when the surname is configured to say less."""
    model = MatchModel()
    a = model.normalize(
        {"given_name": "Margaret", "surname": "Whitfield", "date_of_birth": "1984-03-17"}
        | {"postcode": "2131"}
    )
    b = {**a, "date_of_birth": "19910702"}  # another birth date
    assert model.compare(a, b, "p").probability >= 0.99
    lower = IdentityConfig.from_mapping({"matching": {"prior": 1e-6}}).matching
    assert lower is not None and lower.compare(a, b, "p").probability < 0.80
    weak = {"exact": [0.8, 0.05], "jw92": [0.1, 0.05], "jw80": [0.05, 0.1], "else": [0.05, 0.8]}
    weaker = IdentityConfig.from_mapping({"matching": {"fields": {"surname": weak}}}).matching
    assert weaker is not None and 0.80 <= weaker.compare(a, b, "p").probability < 0.99
