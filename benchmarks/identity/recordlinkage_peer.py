"""recordlinkage: its FEBRL guide's comparisons, classified by its ECM classifier.

What is documented and what had to be chosen:

* comparisons: exactly those of the library's FEBRL guides ("Link two datasets", "Data
  deduplication"): exact ``given_name``, Jaro-Winkler ≥ 0.85 ``surname``, exact
  ``date_of_birth``, ``suburb`` and ``state``, string ≥ 0.85 ``address_1``; binary, as the
  ECM classifier expects;
* classifier: ``ECMClassifier()`` with its defaults, unsupervised, as in the library's
  "unsupervised learning with the ECM algorithm" example;
* candidate pairs: the guides block on ``given_name`` alone, which can never find a pair
  whose given name has a typo (recall about 0.55-0.65 on these sets). The index here is
  the union of single-column blocks on :data:`BLOCKS` (``given_name`` plus the
  single-column rules of Splink's FEBRL example), so the peer is limited by its classifier
  and not by an index nobody would deploy;
* clustering: link (febrl4) uses the library's ``OneToOneLinking`` (greedy) over the
  links, most probable first; dedupe (febrl3) takes connected components of the links,
  what ``recordlinkage.ConnectedComponents`` computes (done here without its networkx
  dependency).
"""

from __future__ import annotations

import time

from benchmarks.identity.data import Dataset
from benchmarks.identity.metrics import clusters_from_pairs
from benchmarks.identity.peer import PeerRun

BLOCKS = ("given_name", "surname", "date_of_birth", "postcode", "soc_sec_id")


def run_recordlinkage(dataset: Dataset, *, blocks: tuple[str, ...] = BLOCKS) -> PeerRun:
    """Index, compare, classify with ECM, then cluster (see the module docstring)."""
    import recordlinkage as rl

    started = time.perf_counter()
    indexer = rl.Index()
    for column in blocks:
        indexer.block(column)
    candidates = indexer.index(*dataset.frames)
    compare = rl.Compare()
    compare.exact("given_name", "given_name", label="given_name")
    compare.string("surname", "surname", method="jarowinkler", threshold=0.85, label="surname")
    compare.exact("date_of_birth", "date_of_birth", label="date_of_birth")
    compare.exact("suburb", "suburb", label="suburb")
    compare.exact("state", "state", label="state")
    compare.string("address_1", "address_1", threshold=0.85, label="address_1")
    features = compare.compute(candidates, *dataset.frames)
    ecm = rl.ECMClassifier()
    links = ecm.fit_predict(features)
    pairs = [(str(a), str(b)) for a, b in links]
    pairwise_seconds = time.perf_counter() - started
    if dataset.link_type == "link":
        probability = ecm.prob(features.loc[links])
        ordered = probability.sort_values(ascending=False, kind="stable").index
        linked = rl.OneToOneLinking(method="greedy").compute(ordered)
        clusters = clusters_from_pairs((str(a), str(b)) for a, b in linked)
        how = "one-to-one (greedy, most probable first)"
    else:
        clusters = clusters_from_pairs(pairs)
        how = "connected components"
    return PeerRun(
        system="recordlinkage",
        pairs=pairs,
        clusters={record: str(cluster) for record, cluster in clusters.items()},
        pairwise_seconds=pairwise_seconds,
        clustered_seconds=time.perf_counter() - started,
        note=(
            f"recordlinkage: blocks on {', '.join(blocks)}; guide comparisons; "
            f"ECMClassifier() pairs; clusters by {how}"
        ),
    )
