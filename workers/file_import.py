"""What every ``ecrm import ...`` command does at the terminal, written once.

Why shared: ``ecrm import pos`` and ``ecrm import calls`` must behave alike (the same
progress bar on stderr, the same summary on stdout, the same exit statuses) because they
run the same loop (:mod:`connectors.files.importer`). A command only says how to import
its file; this builds the runtime, draws the progress bar, prints the summary and turns
the outcome into an exit status: 0 imported (or already had been), 1 nothing could be
imported, 2 unreadable file or bad mapping (a ``HubError``, printed by the CLI as one
line), 130 interrupted (run it again to resume).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from connectors.files import ImportInterrupted, ImportSummary
from pipeline import HubError
from workers.process import load_runtime
from workers.runtime import Runtime

#: Imports one file with the runtime's database and settings, reporting bytes read.
Importer = Callable[[Runtime, Callable[[int], None]], ImportSummary]


def run_file_import(path: Path, do_import: Importer) -> int:
    """Run ``do_import`` on ``path`` with a progress bar; returns the exit status."""
    if not path.is_file():
        raise HubError(f"cannot read {path}: no such file")
    runtime = load_runtime(migrate=True)
    size = path.stat().st_size
    with click.progressbar(
        length=size, label=f"importing {path.name}", file=sys.stderr, show_pos=False
    ) as bar:
        shown = 0

        def progress(done: int) -> None:
            nonlocal shown
            bar.update(max(done - shown, 0))
            shown = max(done, shown)

        try:
            summary = do_import(runtime, progress)
        except ImportInterrupted as exc:
            click.echo("", err=True)
            print_summary(exc.summary)
            click.echo(f"ecrm: {exc}", err=True)
            return 130
    print_summary(summary)
    if summary.nothing_imported:
        click.echo(f"ecrm: nothing could be imported from {path}", err=True)
        return 1
    return 0


def print_summary(summary: ImportSummary) -> None:
    """Notes, where a resumed run started, the counts, and where the rejects are."""
    for note in summary.notes:
        click.echo(f"note: {note}")
    if summary.resumed_after:
        click.echo(f"resumed after line {summary.resumed_after:,} (done by an earlier run)")
    rate = summary.rows / summary.elapsed if summary.elapsed else 0.0
    skipped = f"{summary.skipped:,} skipped, " if summary.skipped else ""
    click.echo(
        f"{summary.path.name} ({summary.file_format}, mapping {summary.mapping}): "
        f"{summary.rows:,} rows read, {summary.units:,} {summary.unit}, "
        f"{summary.imported:,} imported, {summary.duplicates:,} duplicates, {skipped}"
        f"{summary.rejected:,} rejected in {summary.elapsed:.1f} s ({rate:,.0f} rows/s)"
    )
    if summary.skip_reasons:
        reasons = sorted(summary.skip_reasons.items(), key=lambda item: (-item[1], item[0]))
        click.echo("skipped: " + "; ".join(f"{reason} ({count:,})" for reason, count in reasons))
    if summary.rejected and summary.rejects_path is not None:
        click.echo(f"rejected rows (line, field, reason): {summary.rejects_path}")


__all__ = ["Importer", "print_summary", "run_file_import"]
