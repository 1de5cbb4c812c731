"""``ecrm import calls FILE``: wiring of the call-detail-record import to the terminal.

The import logic lives in ``connectors.calls`` and is tested without a terminal; this
loads the mapping (applying ``--timezone``) and says how to import the file. Progress bar,
summary and exit statuses are those of every file import (``workers.file_import``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from connectors.calls import ImportSummary, MappingError, import_calls_file, load_mapping
from connectors.files import zone
from workers.file_import import run_file_import
from workers.runtime import Runtime


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

    def do_import(runtime: Runtime, progress: Callable[[int], None]) -> ImportSummary:
        settings = runtime.settings
        return import_calls_file(
            runtime.db,
            path,
            mapping=mapping,
            workspace_id=workspace,
            default_region=settings.default_region,
            state_dir=settings.home / "imports",
            scope=settings.masked()["ECRM_DATABASE_URL"],
            rejects_path=rejects,
            restart=restart,
            on_progress=progress,
        )

    return run_file_import(path, do_import)


__all__ = ["run_calls_import"]
