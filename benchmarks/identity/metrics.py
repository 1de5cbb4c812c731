"""Linkage quality: pairwise and B-cubed scores, over-merge counters.

Why counted from a contingency table and never from enumerated pairs: an over-merging
matcher may put thousands of records in one profile, whose pairs (millions) would not fit
in memory, while the counts per (predicted cluster, true entity) cell give every figure
exactly. Pure Python, no dependency: the unit tests import this module alone.

Conventions, chosen to be honest rather than flattering:

* a record the system did not place anywhere counts as a singleton cluster;
* precision is ``None`` when the system predicts no pair (undefined, not perfect) and
  recall ``None`` when the truth holds no pair; F1 is ``2·TP / (predicted + true)``, which
  is 0 when no pair is predicted and the truth has some;
* a pair is unordered, ``(a, b)`` and ``(b, a)`` are the same, and ``(a, a)`` is no pair.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class PairScores:
    """Pairwise precision, recall and F1 of predicted same-entity pairs."""

    true_positives: int
    predicted_pairs: int
    true_pairs: int

    @property
    def precision(self) -> float | None:
        if self.predicted_pairs == 0:
            return None
        return self.true_positives / self.predicted_pairs

    @property
    def recall(self) -> float | None:
        if self.true_pairs == 0:
            return None
        return self.true_positives / self.true_pairs

    @property
    def f1(self) -> float | None:
        total = self.predicted_pairs + self.true_pairs
        if total == 0:
            return None
        return 2 * self.true_positives / total


@dataclass(frozen=True)
class ClusterScores:
    """Every figure the benchmark reports for one clustering of the records."""

    pairwise: PairScores
    bcubed_precision: float
    bcubed_recall: float
    #: records in the largest predicted cluster
    largest_cluster: int
    #: predicted clusters holding records of more than one true entity (over-merges)
    impure_clusters: int
    clusters: int
    records: int

    @property
    def bcubed_f1(self) -> float:
        total = self.bcubed_precision + self.bcubed_recall
        return 0.0 if total == 0 else 2 * self.bcubed_precision * self.bcubed_recall / total


def _choose2(n: int) -> int:
    return n * (n - 1) // 2


def unordered(pairs: Iterable[tuple[Key, Key]]) -> set[frozenset[Key]]:
    """Each pair once, whatever its order; self-pairs dropped."""
    return {frozenset(pair) for pair in pairs if pair[0] != pair[1]}


def true_pair_count(truth: Mapping[Key, Hashable]) -> int:
    """How many unordered pairs of records share a true entity."""
    return sum(_choose2(n) for n in Counter(truth.values()).values())


def score_pairs(pairs: Iterable[tuple[Key, Key]], truth: Mapping[Key, Hashable]) -> PairScores:
    """Score predicted pairs (a peer's links at its threshold) against the true entities.

    Every record of a pair must be in ``truth`` (a typo in a key would silently score as a
    false positive otherwise, so it raises ``KeyError``).
    """
    predicted = unordered(pairs)
    hits = 0
    for pair in predicted:
        a, b = tuple(pair)
        if truth[a] == truth[b]:
            hits += 1
    return PairScores(hits, len(predicted), true_pair_count(truth))


def complete(assignment: Mapping[Key, Hashable], records: Iterable[Key]) -> dict[Key, Hashable]:
    """The assignment with every unplaced record in a cluster of its own."""
    # a tuple never equals the systems' cluster ids (strings), so it joins no cluster
    return {record: assignment.get(record, ("singleton", record)) for record in records}


def score_clusters(
    assignment: Mapping[Key, Hashable], truth: Mapping[Key, Hashable]
) -> ClusterScores:
    """Score a clustering (record → cluster id) against the truth (record → entity id).

    The records scored are those of ``truth``; any of them missing from ``assignment`` is
    a singleton, and records of ``assignment`` not in ``truth`` are ignored.
    """
    placed = complete(assignment, truth)
    cells = Counter((placed[record], truth[record]) for record in truth)
    cluster_sizes = Counter(placed[record] for record in truth)
    entity_sizes = Counter(truth.values())
    hits = sum(_choose2(n) for n in cells.values())
    predicted = sum(_choose2(n) for n in cluster_sizes.values())
    # B-cubed: the n records of cell (c, t) each have precision n/|c| and recall n/|t|
    records = len(truth)
    precision_sum = sum(n * n / cluster_sizes[c] for (c, _), n in cells.items())
    recall_sum = sum(n * n / entity_sizes[t] for (_, t), n in cells.items())
    entities_per_cluster = Counter(c for c, _ in cells)
    return ClusterScores(
        pairwise=PairScores(hits, predicted, true_pair_count(truth)),
        bcubed_precision=precision_sum / records if records else 0.0,
        bcubed_recall=recall_sum / records if records else 0.0,
        largest_cluster=max(cluster_sizes.values(), default=0),
        impure_clusters=sum(1 for n in entities_per_cluster.values() if n > 1),
        clusters=len(cluster_sizes),
        records=records,
    )


def clusters_from_pairs(pairs: Iterable[tuple[Key, Key]]) -> dict[Key, Key]:
    """Connected components of the pairs: record → a representative record.

    Only for records that appear in some pair; :func:`score_clusters` makes the rest
    singletons.
    """
    parent: dict[Key, Key] = {}

    def find(x: Key) -> Key:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for a, b in pairs:
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra
    return {record: find(record) for record in parent}
