"""``ecrm import calls FILE``: wiring of the call-detail-record import to the terminal.

The import logic lives in ``connectors.calls`` and is tested without a terminal; this
loads the mapping (applying ``--timezone``) and says how to import the file. Progress bar,
summary and exit statuses are those of every file import (``workers.file_import``).
"""

from __future__ import annotations

from pathlib import Path

from connectors.calls import ImportSummary, MappingError, import_calls_file, load_mapping
from connectors.files import ImportOptions, zone
from pipeline import Database
from workers.file_import import run_file_import


def run_calls_import(
    path: Path,
    *,
    mapping_name: str,
    timezone: str | None,
    rejects: Path | None,
    workspace: str,
    restart: bool,
) -> int:
    """Import one CDR file; returns the exit status. HubErrors propagate (exit 2)."""
    mapping = load_mapping(mapping_name)
    if timezone is not None:
        try:
            zone(timezone)
        except ValueError as exc:
            raise MappingError(f"--timezone: {exc}") from None
        mapping = mapping.model_copy(update={"timezone": timezone})

    def do_import(db: Database, options: ImportOptions) -> ImportSummary:
        return import_calls_file(db, path, mapping=mapping, **options)

    return run_file_import(path, do_import, rejects=rejects, workspace=workspace, restart=restart)


__all__ = ["run_calls_import"]
