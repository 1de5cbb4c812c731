"""``ecrm identity estimate``: learn the matcher's m/u and prior from the hub's own records.

Reads a workspace's records (:func:`identity.estimate.read_records`), estimates u from
random pairs and m and the prior by EM over the pairs blocking finds, prints each field
level's current and estimated m, u and weight, and writes the ``matching:`` block of the
identity configuration (``ECRM_IDENTITY_CONFIG``) to ``--out`` or to standard output.
Nothing in the database changes; the hub uses the estimate once the block is in its
configuration file (try it first with ``ecrm identity simulate --config``).
"""

from __future__ import annotations

from pathlib import Path

import click

from identity.estimate import DEFAULT_MAX_RECORDS, DEFAULT_SAMPLE, Estimate
from workers.process import load_runtime, one_line_errors

#: bounds of ``--sample`` (random pairs for u) and ``--max-records``
_SAMPLE_RANGE = (1_000, 50_000_000)
_RECORDS_RANGE = (100, 5_000_000)


@click.command("estimate")
@click.option("--workspace", default="default", show_default=True)
@click.option(
    "--sample",
    default=DEFAULT_SAMPLE,
    show_default=True,
    type=int,
    help="Random pairs of records compared to estimate u.",
)
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of the random pairs.")
@click.option(
    "--max-records",
    default=DEFAULT_MAX_RECORDS,
    show_default=True,
    type=int,
    help="Read at most this many records (the oldest first).",
)
@click.option(
    "--from",
    "source",
    type=click.Choice(["events", "profiles"]),
    default="events",
    show_default=True,
    help="Records: each event's traits (duplicates included), or each live profile's.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the matching: block here (default: standard output, the table to stderr).",
)
@one_line_errors
def estimate_command(
    workspace: str, sample: int, seed: int, max_records: int, source: str, out: Path | None
) -> None:
    """Estimate m/u per field level and the prior from a workspace's records (EM)."""
    from sqlalchemy.exc import DBAPIError

    from identity.estimate import estimate, read_records
    from identity.matching import MatchModel
    from pipeline import HubError

    for name, value, (low, high) in (
        ("--sample", sample, _SAMPLE_RANGE),
        ("--max-records", max_records, _RECORDS_RANGE),
    ):
        if not low <= value <= high:
            raise HubError(f"{name} must be between {low:,} and {high:,}, got {value:,}")
    runtime = load_runtime(migrate=False)
    current = runtime.identity.matching
    model = current or MatchModel()
    try:
        with runtime.db.read() as session:
            records = read_records(
                session,
                workspace,
                model,
                source="profiles" if source == "profiles" else "events",
                limit=max_records,
            )
    except DBAPIError as exc:
        where = runtime.settings.masked()["ECRM_DATABASE_URL"]
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise HubError(f"cannot read the database {where}: {reason}") from None
    try:
        found = estimate(records, model, sample=sample, seed=seed)
    except HubError as exc:
        raise HubError(f"workspace {workspace!r}: {exc}") from None
    block = found.yaml(
        enabled=current is not None, source=f" ({source} of workspace {workspace!r}, seed {seed})"
    )
    report = render(found, configured=runtime.settings.identity_config is not None)
    if out is None:
        click.echo(report, err=True)
        click.echo(block, nl=False)
        return
    try:
        out.write_text(block, encoding="utf-8")
    except OSError as exc:
        raise HubError(f"{out}: cannot write: {exc.strerror}") from None
    click.echo(report)
    click.echo(f"wrote the matching: block to {out}; put it in ECRM_IDENTITY_CONFIG to use it")


def render(found: Estimate, *, configured: bool = False) -> str:
    """The estimate as an operator reads it: per field level, m, u and weight now and after."""
    now = "ECRM_IDENTITY_CONFIG" if configured else "the built-in defaults"
    lines = [
        f"Estimated from {found.records:,} records in {found.seconds:.1f} s:"
        f" {found.candidate_pairs:,} pairs sharing a blocking key (EM, {found.iterations}"
        f" iterations, {'converged' if found.converged else 'NOT converged'}),"
        f" {found.random_pairs:,} random pairs (u). 'now' is {now}.",
        f"prior (probability that a blocked pair is one person):"
        f" now {found.base.prior_probability:.6g}, estimated {found.prior_probability:.6g}",
        "",
        f"{'field':<14} {'level':<10} {'m now':>8} {'u now':>9} {'w now':>7}"
        f" {'m est':>8} {'u est':>9} {'w est':>7}",
    ]
    for estimate in found.fields:
        kept = [] if estimate.m_estimated else ["m"]
        kept += [] if estimate.u_estimated else ["u"]
        for index, (before, after) in enumerate(zip(estimate.before, estimate.after, strict=True)):
            lines.append(
                f"{estimate.name if index == 0 else '':<14} {before.label:<10}"
                f" {before.m:>8.4f} {before.u:>9.6f} {before.weight:>7.2f}"
                f" {after.m:>8.4f} {after.u:>9.6f} {after.weight:>7.2f}"
            )
        if kept:
            lines.append(
                f"{'':<14} ({' and '.join(kept)} kept: too few comparisons"
                f" of {estimate.name}, {estimate.comparisons:,} random pairs had it)"
            )
    return "\n".join(lines)
