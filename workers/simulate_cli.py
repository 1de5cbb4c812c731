"""``ecrm identity simulate``: what a new identity configuration would merge and split.

A dry run for operators on the hub's host (:mod:`identity.simulate`): the log is replayed
under ``--config`` into a temporary database and compared with today's profiles (or with
a replay under the current configuration, ``--baseline replay``). Nothing is written to
the hub's database. Identifiers are printed as they are (the operator sees the data
anyway); no setting or secret is.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from workers.process import load_runtime, one_line_errors


@click.command("simulate")
@click.option(
    "--config",
    "config_path",
    required=True,
    metavar="NEW.yaml",
    help="The identity configuration to try (the format of ECRM_IDENTITY_CONFIG).",
)
@click.option("--workspace", default="default", show_default=True)
@click.option(
    "--baseline",
    type=click.Choice(["current", "replay"]),
    default="current",
    show_default=True,
    help="Compare with today's profiles, or with a replay under the current configuration.",
)
@click.option("--examples", default=5, show_default=True, type=click.IntRange(0, 100))
@click.option(
    "--batch-size",
    type=click.IntRange(1, 5000),
    help="Events resolved together; default ECRM_BATCH_SIZE, as the workers do under load"
    " (1: one at a time, as a hub fed a trickle of single events).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@one_line_errors
def simulate_command(
    config_path: str,
    workspace: str,
    baseline: str,
    examples: int,
    batch_size: int | None,
    as_json: bool,
) -> None:
    """Replay the event log under NEW.yaml without writing, and report merges and splits."""
    from sqlalchemy.exc import DBAPIError

    from identity.config import IdentityConfig
    from identity.simulate import simulate
    from pipeline import HubError

    new_config = IdentityConfig.from_mapping(_read_yaml(Path(config_path)), source=config_path)
    runtime = load_runtime(migrate=False)
    # what the environment adds to the file (erased people's events suppressed) stays
    new_config = replace(new_config, suppress_erased_key=runtime.identity.suppress_erased_key)
    current = runtime.settings.identity_config
    shown = sys.stderr.isatty() and not as_json

    def progress(done: int, total: int) -> None:
        if shown:
            click.echo(f"\rreplayed {done:,} of {total:,} events", nl=False, err=True)

    try:
        report = simulate(
            runtime.db,
            workspace,
            new_config,
            current_config=runtime.identity,
            baseline=baseline,
            batch_size=batch_size or runtime.settings.batch_size,
            examples=examples,
            progress=progress,
        )
    except DBAPIError as exc:  # the hub's database, or the scratch copy in the temp folder
        where = runtime.settings.masked()["ECRM_DATABASE_URL"]
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        scratch = tempfile.gettempdir()
        raise HubError(f"database error ({where}, scratch in {scratch}): {reason}") from None
    if shown:
        click.echo("\r\033[K", nl=False, err=True)
    if as_json:
        data = report.to_dict()
        data["config"] = config_path
        data["current_config"] = str(current) if current else None
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(render(report.to_dict(), config_path, str(current) if current else None))


def _read_yaml(path: Path) -> Any:
    """The file's YAML; an unreadable file or bad YAML is one line (``HubError``)."""
    import yaml

    from pipeline import HubError

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HubError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise HubError(f"{path}: not YAML: {getattr(exc, 'problem', None) or exc}{where}") from None


def _n(value: int, word: str) -> str:
    return f"{value:,} {word}" + ("" if value == 1 else "s")


def render(report: dict[str, Any], new_name: str, current_name: str | None) -> str:
    """The report as an operator reads it (``report``: :meth:`SimulationReport.to_dict`)."""
    replayed = report["baseline"] == "replay"
    current = f"ECRM_IDENTITY_CONFIG={current_name}" if current_name else "the built-in defaults"
    how = " twice (baseline too)" if replayed else ""
    lines = [
        f"Replayed {_n(report['events'], 'event')}{how} in {report['seconds']:.2f} s"
        f" ({report['events_per_second']:,.0f} events/s) under {new_name}, in batches of"
        f" {report['batch_size']:,}; nothing was written to the hub's database.",
        "Baseline: "
        + (
            f"a replay of the same log under the current configuration ({current})."
            if replayed
            else f"today's profiles in the database (current configuration: {current})."
        ),
        f"Profiles: {report['profiles_before']:,} {'in the baseline' if replayed else 'now'}"
        f" -> {report['profiles_after']:,} under {new_name}",
        f"Merges: {report['merges']:,}"
        + (
            f" ({_n(report['merged_profiles'], 'profile')} into {report['merges']:,})"
            if report["merges"]
            else ""
        ),
        f"Splits: {report['splits']:,}"
        + (
            f" ({_n(report['splits'], 'profile')} into {report['split_parts']:,})"
            if report["splits"]
            else ""
        ),
        f"Events changing profile: {report['moved_events']:,}; into a profile from none:"
        f" {report['joined_events']:,}; out of every profile: {report['left_events']:,}",
        "Conflicts: " + _changes(report["conflicts_before"], report["conflicts_after"]),
        f"Reviews: {report['reviews_before']:,} -> {report['reviews_after']:,};"
        f" shared identifiers: {report['shared_before']:,} -> {report['shared_after']:,}"
        + _listed(" newly shared", report["newly_shared"])
        + _listed(" no longer shared", report["no_longer_shared"]),
    ]
    seeded = report["seeded"]
    lines.append(
        f"Operator decisions replayed: {seeded['allowed']:,} allowed, {seeded['shared']:,} shared"
        f" (from their first event), {_n(seeded['splits'], 'unmerge')},"
        f" {_n(seeded['tombstones'], 'erasure tombstone')};"
        f" {_n(seeded['shared_detected'], 'shared flag')} left for detection to find again"
    )
    if report["unprocessed"]:
        lines.append(
            f"Not compared: {_n(report['unprocessed'], 'event')} the hub has not processed"
            " (pending or failed)"
        )
    if report["failed"] or report["failed_baseline"]:
        lines.append(
            f"Failed in the replay: {report['failed']:,} under {new_name},"
            f" {report['failed_baseline']:,} in the baseline; first: {report['first_failure']}"
        )
    if report["merge_examples"]:
        lines += ["", "Merges, largest first:"]
        for example in report["merge_examples"]:
            lines += _merge_lines(example)
    if report["split_examples"]:
        lines += ["", "Splits, largest first:"]
        for example in report["split_examples"]:
            lines += _split_lines(example, replayed)
    return "\n".join(lines)


def _changes(before: dict[str, int], after: dict[str, int]) -> str:
    reasons = sorted(set(before) | set(after))
    if not reasons:
        return "none"
    return ", ".join(f"{r} {before.get(r, 0):,} -> {after.get(r, 0):,}" for r in reasons)


def _listed(label: str, items: list[str]) -> str:
    return f";{label}: {', '.join(items)}" if items else ""


def _cluster(cluster: dict[str, Any], *, named: bool = True) -> str:
    held = ", ".join(cluster["identifiers"]) or "no identifiers"
    who = f"{' + '.join(cluster['now'])} " if named else ""
    return f"{who}({_n(cluster['events'], 'event')}: {held})"


def _merge_lines(example: dict[str, Any]) -> list[str]:
    lines = []
    for i, cluster in enumerate(example["profiles"]):
        lines.append(("  * " if i == 0 else "    + ") + _cluster(cluster))
    lines.append("      -> one profile " + _cluster(example["into"], named=False))
    for link in example["links"]:
        joined = " with ".join(link["identifiers"])
        extra = f", p={link['probability']}" if link.get("probability") is not None else ""
        lines.append(f"      {link['rule']} at event {link['event']}: {joined or 'match'}{extra}")
    return lines


def _split_lines(example: dict[str, Any], replayed: bool) -> list[str]:
    profile = example["profile"]
    label = "baseline profile of " if replayed else ""
    lines = [f"  * {label}{_cluster(profile)} -> {_n(len(example['parts']), 'profile')}:"]
    for part in example["parts"]:
        lines.append("      " + _cluster(part, named=False))
    for conflict in example["conflicts"]:
        limit = f", limit {conflict['limit']}" if "limit" in conflict else ""
        lines.append(
            f"      {conflict['reason']} ({conflict['kind']}{limit}) at event {conflict['event']}:"
            f" {', '.join(str(i) for i in conflict['identifiers'])}"
        )
    if example["dropped"]:
        lines.append(f"      held by no part: {', '.join(example['dropped'])}")
    return lines
