"""What every ``ecrm import ...`` command does at the terminal, written once.

Why shared: ``ecrm import pos`` and ``ecrm import calls`` must behave alike (the same
arguments, the same progress bar on stderr, the same summary on stdout, the same exit
statuses) because they run the same loop (:mod:`connectors.files.importer`). A command
only adds its own options and says how to import its file; this declares the arguments
they share, builds the runtime and the loop's options from the settings, draws the
progress bar, prints the summary and turns the outcome into an exit status: 0 imported
(or already had been), 1 nothing could be imported, 2 unreadable file or bad mapping (a
``HubError``, printed by the CLI as one line), 130 interrupted (run it again to resume).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import click

from pipeline import HubError
from workers.process import load_runtime

if TYPE_CHECKING:  # the CLI imports this module to declare its commands: keep it light
    from connectors.files import ImportOptions, ImportSummary
    from pipeline import Database

#: Imports one file into the database with the options the loop takes from the settings
#: and the command line (workspace, region, checkpoint, rejects, restart, progress).
Importer: TypeAlias = "Callable[[Database, ImportOptions], ImportSummary]"

F = TypeVar("F", bound=Callable[..., Any])


def file_import_arguments(shipped: str, *own_options: Callable[[F], F]) -> Callable[[F], F]:
    """FILE, ``--mapping``, the command's ``own_options``, ``--rejects``, ``--workspace``
    and ``--restart``, in the order ``--help`` lists them.

    ``shipped`` names the command's shipped mappings in ``--mapping``'s help. The values
    arrive under the keywords of the ``run_..._import`` functions (``path``,
    ``mapping_name``, ``rejects``, ``workspace``, ``restart``), so a command passes them
    on as they are.
    """
    declared: list[Callable[[F], F]] = [
        click.argument("path", metavar="FILE", type=click.Path(path_type=Path, dir_okay=False)),
        click.option(
            "--mapping",
            "mapping_name",
            default="generic",
            show_default=True,
            help=f"A shipped mapping by name ({shipped}) or a mapping YAML file by path.",
        ),
        *own_options,
        click.option(
            "--rejects",
            type=click.Path(path_type=Path, dir_okay=False),
            help="Where refused rows go (line, field, reason). Default: FILE.rejects.csv",
        ),
        click.option("--workspace", default="default", show_default=True),
        click.option(
            "--restart", is_flag=True, help="Ignore the checkpoint; read the whole file again."
        ),
    ]

    def decorate(command: F) -> F:
        for declare in reversed(declared):  # as if stacked top to bottom
            command = declare(command)
        return command

    return decorate


def run_file_import(
    path: Path, do_import: Importer, *, rejects: Path | None, workspace: str, restart: bool
) -> int:
    """Run ``do_import`` on ``path`` with a progress bar; returns the exit status."""
    from connectors.files import ImportInterrupted

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

        options: ImportOptions = {
            "workspace_id": workspace,
            "default_region": settings.default_region,
            "state_dir": settings.home / "imports",
            "scope": settings.masked()["ECRM_DATABASE_URL"],
            "rejects_path": rejects,
            "restart": restart,
            "on_progress": progress,
        }
        try:
            summary = do_import(runtime.db, options)
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


__all__ = ["Importer", "file_import_arguments", "print_summary", "run_file_import"]
