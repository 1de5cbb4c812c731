"""The identity benchmark's scoring, on small examples worked out by hand.

Only ``benchmarks.identity.metrics`` and ``.touchpoints`` are imported: neither needs the
``bench`` extra (Splink, recordlinkage), so these run in the ordinary test suite.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# benchmarks/ is not an installed package; the repository root makes it importable
ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.identity.metrics import (  # noqa: E402
    clusters_from_pairs,
    score_clusters,
    score_pairs,
    true_pair_count,
)
from benchmarks.identity.touchpoints import touchpoint  # noqa: E402
from pipeline import Touchpoint  # noqa: E402

# three people: X has a, b, c; Y has d, e; Z has f alone (4 true pairs: ab ac bc de)
TRUTH = {"a": "X", "b": "X", "c": "X", "d": "Y", "e": "Y", "f": "Z"}


def test_true_pairs_are_counted_per_entity() -> None:
    assert true_pair_count(TRUTH) == 4
    assert true_pair_count({}) == 0


def test_a_mixed_clustering_scores_as_worked_out_by_hand() -> None:
    # {a b} right, {c d} and {e f} each join two people
    scores = score_clusters({"a": "1", "b": "1", "c": "2", "d": "2", "e": "3", "f": "3"}, TRUTH)
    pairs = scores.pairwise
    assert (pairs.true_positives, pairs.predicted_pairs, pairs.true_pairs) == (1, 3, 4)
    assert pairs.precision == pytest.approx(1 / 3)
    assert pairs.recall == pytest.approx(1 / 4)
    assert pairs.f1 == pytest.approx(2 / 7)
    # per record precision 1 1 ½ ½ ½ ½; recall ⅔ ⅔ ⅓ ½ ½ 1
    assert scores.bcubed_precision == pytest.approx(2 / 3)
    assert scores.bcubed_recall == pytest.approx(11 / 18)
    assert scores.bcubed_f1 == pytest.approx(44 / 69)
    assert (scores.largest_cluster, scores.impure_clusters, scores.clusters) == (2, 2, 3)


def test_all_singletons_have_no_precision_and_no_recall() -> None:
    scores = score_clusters({r: r for r in TRUTH}, TRUTH)
    assert scores.pairwise.precision is None  # undefined, not perfect
    assert scores.pairwise.recall == 0 and scores.pairwise.f1 == 0
    # recall per record: ⅓ ⅓ ⅓ ½ ½ 1
    assert scores.bcubed_precision == 1 and scores.bcubed_recall == pytest.approx(1 / 2)
    assert scores.bcubed_f1 == pytest.approx(2 / 3)
    assert (scores.largest_cluster, scores.impure_clusters, scores.clusters) == (1, 0, 6)


def test_one_profile_for_everybody_is_an_over_merge() -> None:
    scores = score_clusters(dict.fromkeys(TRUTH, "all"), TRUTH)
    assert scores.pairwise.predicted_pairs == 15 and scores.pairwise.true_positives == 4
    assert scores.pairwise.precision == pytest.approx(4 / 15) and scores.pairwise.recall == 1
    # precision per record: 3/6 (three times), 2/6 (twice), 1/6
    assert scores.bcubed_precision == pytest.approx(7 / 18) and scores.bcubed_recall == 1
    assert (scores.largest_cluster, scores.impure_clusters, scores.clusters) == (6, 1, 1)


def test_perfect_clustering_scores_one_whatever_the_cluster_names() -> None:
    scores = score_clusters({"a": 7, "b": 7, "c": 7, "d": 8, "e": 8, "f": 9}, TRUTH)
    assert scores.pairwise.f1 == 1 and scores.bcubed_f1 == 1 and scores.impure_clusters == 0


def test_unplaced_records_are_singletons_and_strangers_are_ignored() -> None:
    placed = {"a": "1", "b": "1", "d": "2", "e": "2", "zz": "1"}  # c, f unplaced
    scores = score_clusters(placed, TRUTH)
    assert scores.records == 6 and scores.clusters == 4
    assert (scores.pairwise.true_positives, scores.pairwise.predicted_pairs) == (2, 2)
    assert scores.pairwise.recall == pytest.approx(2 / 4)


def test_pairs_are_unordered_and_self_pairs_do_not_count() -> None:
    pairs = [("a", "b"), ("b", "a"), ("a", "a"), ("c", "d"), ("a", "c")]
    scores = score_pairs(pairs, TRUTH)
    assert (scores.true_positives, scores.predicted_pairs, scores.true_pairs) == (2, 3, 4)
    assert scores.precision == pytest.approx(2 / 3) and scores.recall == pytest.approx(1 / 2)
    assert scores.f1 == pytest.approx(4 / 7)


def test_a_pair_naming_an_unknown_record_is_an_error() -> None:
    with pytest.raises(KeyError):
        score_pairs([("a", "nobody")], TRUTH)


def test_no_pairs_anywhere_leaves_every_ratio_undefined() -> None:
    scores = score_pairs([], {"a": "X", "b": "Y"})
    assert (scores.precision, scores.recall, scores.f1) == (None, None, None)


def test_clusters_from_pairs_are_connected_components() -> None:
    clusters = clusters_from_pairs([("a", "b"), ("b", "c"), ("d", "e"), ("c", "a")])
    assert clusters["a"] == clusters["b"] == clusters["c"]
    assert clusters["d"] == clusters["e"] != clusters["a"]
    assert "f" not in clusters
    # chaining a-b, b-c makes a-c a predicted pair too once clustered
    scores = score_clusters(clusters_from_pairs([("a", "b"), ("b", "c"), ("c", "d")]), TRUTH)
    assert (scores.pairwise.true_positives, scores.pairwise.predicted_pairs) == (3, 6)


def test_a_febrl_touchpoint_carries_no_ground_truth_and_is_valid() -> None:
    fields = {"given_name": "michaela", "surname": "neumann", "soc_sec_id": "5304218"}
    item = touchpoint(3, "febrl4a", fields, "0123abcd")
    assert item["identifiers"] == {"anonymous_id": "anon-0123abcd"}
    assert item["traits"] == fields  # soc_sec_id is a noisy trait, not an identifier
    assert "rec-" not in repr(item)
    Touchpoint.model_validate(item)
