"""What a peer library's run hands back to the harness."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PeerRun:
    """A batch matcher's answer on a whole data set: pairs, then its own clusters.

    Times are wall clock from the data frames to the answer, training included (the peers
    learn their parameters from the same unlabelled data they then score).
    """

    system: str
    #: the pairs it calls matches at its decision threshold (rec_id, rec_id)
    pairs: list[tuple[str, str]]
    #: rec_id → cluster after its own clustering step (records in no link may be absent)
    clusters: dict[str, str]
    pairwise_seconds: float
    clustered_seconds: float
    #: how it was run (threshold, clustering), shown under the table
    note: str
