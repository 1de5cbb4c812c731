"""Run the benchmark and print one table (``python -m benchmarks.identity --help``).

Why every system runs in the same process and run: records/s are only comparable on the
same machine under the same load, and quality only on the same cleaned data.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.identity.data import DATASETS, Dataset, load, subset
from benchmarks.identity.metrics import ClusterScores, PairScores, score_clusters, score_pairs

PEERS = ("splink", "recordlinkage")


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    dataset: str
    system: str
    pairs: PairScores
    #: None for pairwise-only rows (B-cubed and cluster counters need clusters)
    clusters: ClusterScores | None
    records_per_second: float


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.identity",
        description="Identity resolution quality on FEBRL: the hub beside Splink and "
        "recordlinkage (pairwise P/R/F1, B-cubed F1, over-merges, records/s).",
    )
    parser.add_argument("--dataset", choices=[*DATASETS, "both"], default="both")
    parser.add_argument(
        "--orders", type=int, default=3, help="shuffled arrival orders fed to the hub"
    )
    parser.add_argument("--seed", type=int, default=1, help="order k uses seed + k - 1")
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="comma-separated peers to run beside the hub (empty: none)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="events per ingest for the quality runs (1: one at a time)",
    )
    parser.add_argument(
        "--throughput-batch",
        type=int,
        default=500,
        help="one extra hub run with this many events per ingest, for records/s (0: none)",
    )
    parser.add_argument(
        "--splink-threshold",
        type=float,
        default=0.99,
        help="match probability for Splink's pairs and clusters",
    )
    parser.add_argument(
        "--estimate",
        action="store_true",
        help="also run the hub's orders with m/u and prior estimated from the records (EM)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=0,
        help="only about this many records per data set, whole entities (a quick try)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown or args.orders < 0 or args.batch_size < 1 or args.throughput_batch < 0:
        what = f"unknown peer {unknown[0]!r}" if unknown else "bad --orders/--batch-size"
        print(f"benchmarks.identity: {what}", file=sys.stderr)
        return 2
    from pipeline.logs import configure_logging

    configure_logging("WARNING")
    logging.getLogger("splink").setLevel(logging.ERROR)
    names = list(DATASETS) if args.dataset == "both" else [args.dataset]
    rows: list[Row] = []
    notes: list[str] = []
    for name in names:
        dataset = load(name)
        if args.limit:
            dataset = subset(dataset, args.limit)
            notes.append(f"{name}: subset of {len(dataset.records)} records (not comparable)")
        rows += _hub_rows(dataset, args, notes)
        for peer in peers:
            rows += _peer_rows(dataset, peer, args, notes)
    print(render(rows))
    for note in dict.fromkeys(notes):
        print(f"  {note}")
    return 0


def _hub_rows(dataset: Dataset, args: argparse.Namespace, notes: list[str]) -> list[Row]:
    from benchmarks.identity.hub import estimated_config, run_hub
    from identity.config import IdentityConfig

    rows: list[Row] = []
    runs: list[tuple[str, int, int, IdentityConfig | None]] = [
        (f"hub order {k + 1}", args.seed + k, args.batch_size, None) for k in range(args.orders)
    ]
    if args.throughput_batch:
        runs.append((f"hub batch={args.throughput_batch}", args.seed, args.throughput_batch, None))
    if args.estimate:
        _progress(f"{dataset.name}: estimating m/u and the prior from the records (EM)")
        config, found = estimated_config(dataset, seed=args.seed)
        notes.append(
            f"{dataset.name} hub EM: m/u and prior estimated in {found.seconds:.1f} s from"
            f" {found.records:,} records ({found.candidate_pairs:,} candidate pairs,"
            f" {found.random_pairs:,} random pairs, {found.iterations} EM iterations,"
            f" converged: {found.converged}); prior {found.prior_probability:.4f}"
            f" (default {found.base.prior_probability:.4f}); no ground truth used"
        )
        runs += [
            (f"hub EM order {k + 1}", args.seed + k, args.batch_size, config)
            for k in range(args.orders)
        ]
    for label, seed, batch, config in runs:
        _progress(f"{dataset.name}: {label} (seed {seed}, {batch} event(s) per ingest)")
        run = run_hub(dataset, seed=seed, batch_size=batch, config=config)
        scores = score_clusters(run.assignment, dataset.truth)
        rows.append(Row(dataset.name, label, scores.pairwise, scores, run.records_per_second))
        notes.append(
            f"{dataset.name} {label}: seed {seed}, {batch} event(s) per ingest+relay+process;"
            f" {run.records_per_second:,.0f} records/s ingest→resolved,"
            f" {run.resolved_per_second:,.0f}/s in process_batches alone;"
            f" {run.unassigned} record(s) in no profile"
        )
    for prefix in ("hub order", "hub EM order"):
        quality = [r for r in rows if r.system.startswith(prefix)]
        if len(quality) > 1:
            f1s = [r.pairs.f1 or 0.0 for r in quality]
            notes.append(
                f"{dataset.name} {prefix.removesuffix(' order')} order sensitivity: pairwise"
                f" F1 {min(f1s):.4f}..{max(f1s):.4f} (spread {max(f1s) - min(f1s):.4f})"
                f" over {len(f1s)} orders"
            )
    return rows


def _peer_rows(
    dataset: Dataset, peer: str, args: argparse.Namespace, notes: list[str]
) -> list[Row]:
    _progress(f"{dataset.name}: {peer}")
    if peer == "splink":
        from benchmarks.identity.splink_peer import run_splink

        run = run_splink(dataset, threshold=args.splink_threshold)
    else:
        from benchmarks.identity.recordlinkage_peer import run_recordlinkage

        run = run_recordlinkage(dataset)
    notes.append(run.note)
    n = len(dataset.records)
    clustered = score_clusters(run.clusters, dataset.truth)
    return [
        Row(
            dataset.name,
            f"{peer} pairwise",
            score_pairs(run.pairs, dataset.truth),
            None,
            n / run.pairwise_seconds,
        ),
        Row(
            dataset.name,
            f"{peer} clustered",
            clustered.pairwise,
            clustered,
            n / run.clustered_seconds,
        ),
    ]


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


HEADER = (
    "dataset",
    "system",
    "precision",
    "recall",
    "F1",
    "B3 F1",
    "largest",
    ">1 person",
    "records/s",
)


def render(rows: Sequence[Row]) -> str:
    """The table as aligned plain text (Markdown-compatible pipes)."""
    body = [
        (
            row.dataset,
            row.system,
            _ratio(row.pairs.precision),
            _ratio(row.pairs.recall),
            _ratio(row.pairs.f1),
            "-" if row.clusters is None else f"{row.clusters.bcubed_f1:.4f}",
            "-" if row.clusters is None else str(row.clusters.largest_cluster),
            "-" if row.clusters is None else str(row.clusters.impure_clusters),
            f"{row.records_per_second:,.0f}",
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [HEADER, *body]) for i in range(len(HEADER))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(HEADER), rule, *(line(cells) for cells in body)])
