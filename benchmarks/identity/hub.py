"""The hub as the system under test: FEBRL records through the real ingest path.

Each record becomes a touchpoint (:mod:`benchmarks.identity.touchpoints`) and travels the
way a connector's events do: ``pipeline.ingest`` in a write transaction (the outbox row
is written with it), one relay pass, then ``workers.processing.process_batches`` (what the
Celery task runs), all in this process on a fresh scratch SQLite database. Records arrive
one at a time by default (``batch_size=1``): the matcher must decide incrementally, as in
production, never seeing the records that come later. The profile each event landed in
is read back at the end, after every merge, from the ``profile_events`` table
(``identity.views.profiles_of_events`` follows merged-away profiles to their survivor).
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from benchmarks.identity.data import Dataset
from benchmarks.identity.touchpoints import touchpoint
from identity.config import IdentityConfig
from identity.estimate import Estimate, estimate
from identity.matching import MatchModel
from identity.views import profiles_of_events
from pipeline import Database, ingest
from pipeline.models import EVENTS
from pipeline.outbox import relay
from pipeline.schema import upgrade
from workers.processing import process_batches

WORKSPACE = "default"
#: event ids per read-back query (well under SQLite's bound-parameter limit)
_READ_CHUNK = 900


@dataclass(frozen=True)
class HubRun:
    """Where each record landed, and how long the hub took."""

    seed: int
    batch_size: int
    #: rec_id → the profile its event is counted in after the whole feed
    assignment: dict[str, str]
    #: records whose event was not processed into any profile (failed or still pending)
    unassigned: int
    #: wall time from the first ingest to the last event resolved (ingest, relay, resolve)
    seconds: float
    #: the part of it spent in ``process_batches`` (identity resolution and its writes)
    resolve_seconds: float

    @property
    def records_per_second(self) -> float:
        return len(self.assignment) / self.seconds if self.seconds else 0.0

    @property
    def resolved_per_second(self) -> float:
        return len(self.assignment) / self.resolve_seconds if self.resolve_seconds else 0.0


def feed_order(dataset: Dataset, seed: int) -> list[str]:
    """The records' arrival order for one run: a seeded shuffle of every file together."""
    order = sorted(dataset.records)
    random.Random(seed).shuffle(order)
    return order


def estimated_config(dataset: Dataset, *, seed: int) -> tuple[IdentityConfig, Estimate]:
    """The identity configuration with m/u and prior estimated from the data set's records.

    No ground truth is used: the records are the traits the hub is fed (in the arrival
    order of ``seed``, so not even ``rec_id`` order reaches the estimator), normalized as
    the hub normalizes them; :func:`identity.estimate.estimate` learns u from random
    pairs and m and the prior by EM over the pairs blocking finds.
    """
    model = MatchModel()
    records = [model.normalize(dataset.records[rec_id]) for rec_id in feed_order(dataset, seed)]
    found = estimate(records, model, seed=seed)
    return IdentityConfig(matching=found.model), found


def run_hub(
    dataset: Dataset,
    *,
    seed: int,
    batch_size: int = 1,
    config: IdentityConfig | None = None,
    workdir: Path | None = None,
) -> HubRun:
    """Feed ``dataset`` in the order ``seed`` gives, ``batch_size`` events per ingest."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    rng = random.Random(seed + 1_000_003)  # tokens: reproducible, unrelated to the order
    order = feed_order(dataset, seed)
    items = [
        touchpoint(
            position,
            dataset.sources[rec_id],
            dataset.records[rec_id],
            uuid.UUID(int=rng.getrandbits(128)).hex,
        )
        for position, rec_id in enumerate(order)
    ]
    record_of = {item["message_id"]: rec_id for item, rec_id in zip(items, order, strict=True)}
    scratch = Path(tempfile.mkdtemp(prefix="ecrm-bench-identity-", dir=workdir))
    db = Database.connect(f"sqlite:///{scratch / 'hub.sqlite'}")
    try:
        upgrade(db)
        seconds, resolve_seconds = _feed(db, items, batch_size, config)
        assignment = _read_back(db, record_of)
    finally:
        db.dispose()
        shutil.rmtree(scratch, ignore_errors=True)
    return HubRun(
        seed=seed,
        batch_size=batch_size,
        assignment=assignment,
        unassigned=len(order) - len(assignment),
        seconds=seconds,
        resolve_seconds=resolve_seconds,
    )


def _feed(
    db: Database, items: list[dict[str, object]], batch_size: int, config: IdentityConfig | None
) -> tuple[float, float]:
    """Ingest, relay and process every chunk before the next one arrives."""
    resolving = 0.0
    started = time.perf_counter()
    for first in range(0, len(items), batch_size):
        chunk = items[first : first + batch_size]
        with db.write() as session:
            results = ingest(session, chunk, workspace_id=WORKSPACE, default_region="US")
        refused = [r for r in results if r.status != "accepted"]
        if refused:
            raise RuntimeError(f"ingest refused a FEBRL touchpoint: {refused[0]}")
        published: list[list[int]] = []
        relay(db, published.append, batch_size=max(batch_size, 500), lease_seconds=600)
        began = time.perf_counter()
        for message in published:
            process_batches(db, message, config)
        resolving += time.perf_counter() - began
    return time.perf_counter() - started, resolving


def _read_back(db: Database, record_of: dict[str, str]) -> dict[str, str]:
    """rec_id → profile for every processed event (merged profiles followed)."""
    with db.read() as session:
        rows = session.execute(
            select(EVENTS.c.message_id, EVENTS.c.id).where(EVENTS.c.workspace_id == WORKSPACE)
        ).all()
        event_record = {event_id: record_of[mid] for mid, event_id in rows if mid in record_of}
        ids = sorted(event_record)
        profile_of: dict[int, str] = {}
        for first in range(0, len(ids), _READ_CHUNK):
            profile_of.update(
                profiles_of_events(session, WORKSPACE, ids[first : first + _READ_CHUNK])
            )
    return {event_record[event_id]: profile for event_id, profile in profile_of.items()}
