"""Helpers shared by the file-import tests (``ecrm import pos``, ``ecrm import calls``)."""

from __future__ import annotations

import csv
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Hub
from sqlalchemy import select

from connectors.files import ImportSummary
from pipeline import Database, load_settings
from pipeline.models import Event


def import_into(
    importer: Callable[..., ImportSummary], db: Database, path: Path, state: Path, **options: Any
) -> ImportSummary:
    """Run ``importer`` (``import_pos_file``, ``import_calls_file``) on ``path`` into the
    default workspace with US numbers, keeping its checkpoints in ``state``."""
    return importer(
        db, path, workspace_id="default", default_region="US", state_dir=state, **options
    )


def interrupt_at(call: int) -> Callable[[int], None]:
    """A progress callback that presses Ctrl-C (``KeyboardInterrupt``) at its ``call``-th call."""
    calls = 0

    def interrupt(_bytes: int) -> None:
        nonlocal calls
        calls += 1
        if calls == call:
            raise KeyboardInterrupt

    return interrupt


def events(db: Database, prefix: str) -> dict[str, Event]:
    """The stored events whose message id starts with ``prefix``, by message id."""
    with db.read() as session:
        rows = session.scalars(select(Event).where(Event.message_id.startswith(prefix)))
        return {event.message_id: event for event in rows}


def rejects(path: Path) -> list[dict[str, str]]:
    """The rows of a reject file (line, field, reason)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def embedded_hub(tmp_path: Path) -> Hub:
    """A hub on the embedded default (SQLite in ``tmp_path/home``) to run ``ecrm import``."""
    home = tmp_path / "home"
    settings = load_settings({"ECRM_HOME": str(home)})
    return Hub(home, settings.database_url, settings.broker_url)


def assert_one_line_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit status 2 and one ``ecrm:`` line on stderr that says ``message``; no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("ecrm:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr
    assert "Traceback" not in result.stderr
