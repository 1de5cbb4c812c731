"""``ecrm import pos FILE``: wiring of the POS file import to the terminal.

Why a module of its own: the import logic lives in ``connectors.pos.importer`` and is
tested without a terminal; this only builds the runtime, draws the progress bar on stderr,
prints the summary and turns the outcome into an exit status (0 imported, 1 nothing could
be imported, 2 unreadable file or bad mapping, 130 interrupted: run it again to resume).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from connectors.pos import ImportInterrupted, ImportSummary, import_pos_file, load_mapping
from pipeline import HubError
from workers.process import load_runtime


def run_pos_import(
    path: Path,
    *,
    mapping_name: str,
    file_format: str | None,
    rejects: Path | None,
    workspace: str,
    restart: bool,
) -> int:
    """Import one POS export; returns the exit status. HubErrors propagate (exit 2)."""
    mapping = load_mapping(mapping_name)
    if not path.is_file():
        raise HubError(f"cannot read {path}: no such file")
    runtime = load_runtime(migrate=True)
    settings = runtime.settings
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
            summary = import_pos_file(
                runtime.db,
                path,
                mapping=mapping,
                workspace_id=workspace,
                default_region=settings.default_region,
                state_dir=settings.home / "imports",
                scope=settings.masked()["ECRM_DATABASE_URL"],
                file_format_name=file_format,
                rejects_path=rejects,
                restart=restart,
                on_progress=progress,
            )
        except ImportInterrupted as exc:
            click.echo("", err=True)
            _print_summary(exc.summary)
            click.echo(f"ecrm: {exc}", err=True)
            return 130
    _print_summary(summary)
    if summary.nothing_imported:
        click.echo(f"ecrm: nothing could be imported from {path}", err=True)
        return 1
    return 0


def _print_summary(summary: ImportSummary) -> None:
    for note in summary.notes:
        click.echo(f"note: {note}")
    if summary.resumed_after:
        click.echo(f"resumed after line {summary.resumed_after:,} (done by an earlier run)")
    rate = summary.rows / summary.elapsed if summary.elapsed else 0.0
    click.echo(
        f"{summary.path.name} ({summary.file_format}, mapping {summary.mapping}): "
        f"{summary.rows:,} rows read, {summary.transactions:,} transactions, "
        f"{summary.imported:,} imported, {summary.duplicates:,} duplicates, "
        f"{summary.rejected:,} rejected in {summary.elapsed:.1f} s ({rate:,.0f} rows/s)"
    )
    if summary.rejected and summary.rejects_path is not None:
        click.echo(f"rejected rows (line, field, reason): {summary.rejects_path}")


__all__ = ["run_pos_import"]
