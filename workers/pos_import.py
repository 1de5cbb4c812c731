"""``ecrm import pos FILE``: wiring of the POS file import to the terminal.

Why a module of its own: the import logic lives in ``connectors.pos.importer`` and is
tested without a terminal; this only loads the mapping and says how to import the file.
The progress bar, summary and exit status (0 imported, 1 nothing could be imported, 2
unreadable file or bad mapping, 130 interrupted: run it again to resume) are shared with
every file import (``workers.file_import``).
"""

from __future__ import annotations

from pathlib import Path

from connectors.files import ImportOptions
from connectors.pos import ImportSummary, import_pos_file, load_mapping
from pipeline import Database
from workers.file_import import run_file_import


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

    def do_import(db: Database, options: ImportOptions) -> ImportSummary:
        return import_pos_file(db, path, mapping=mapping, file_format_name=file_format, **options)

    return run_file_import(path, do_import, rejects=rejects, workspace=workspace, restart=restart)


__all__ = ["run_pos_import"]
