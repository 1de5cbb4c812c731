"""Reading an export: the format, and its records with their line numbers.

Why line numbers are counted here: the reject file points at lines as an editor shows
them, and a quoted CSV field may span several lines, so each record carries the first and
last physical line it came from. Bytes read are counted for the progress bar. Shared by
every file import (POS exports, call-detail records).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from connectors.files.mapping import FileMapping
from pipeline import HubError

FORMATS = {".csv": "csv", ".txt": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
#: (first line, last line, row or None, error or None) for each record of the file.
Record = tuple[int, int, Any, str | None]


class CountingRaw(io.RawIOBase):
    """Counts the bytes read from a file, for a progress bar in bytes."""

    def __init__(self, raw: io.FileIO) -> None:
        self._raw, self.count = raw, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)
        self.count += n or 0
        return int(n or 0)

    def close(self) -> None:
        self._raw.close()
        super().close()


def file_format(path: Path, explicit: str | None) -> str:
    """``csv`` or ``jsonl``: as given, else from the file name's extension."""
    if explicit:
        return explicit
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise HubError(f"{path}: cannot tell the format from the extension; give --format")
    return found


def csv_records(text: IO[str], delimiter: str) -> Iterator[Record]:
    """Every CSV record (blank lines skipped); a malformed one comes with its error."""
    reader = csv.reader(text, delimiter=delimiter)
    previous = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield previous + 1, reader.line_num, None, f"malformed CSV: {exc}"
            previous = reader.line_num
            continue
        start, previous = previous + 1, reader.line_num
        if row:
            yield start, previous, row, None


def csv_with_header(
    text: IO[str], mapping: FileMapping, path: Path, *, hint: str = ""
) -> tuple[Iterator[Record], list[str]]:
    """A CSV's records after its header, and the header the mapping binds to.

    The header is the mapping's ``columns`` when it names them (the file has no header
    line, so its first line is data), else the file's first record. A file without one
    stops the import (``hint`` is added to that message).
    """
    records = csv_records(text, mapping.delimiter)
    if mapping.columns is not None:
        return records, mapping.columns
    first = next(records, None)
    if first is None or first[2] is None:
        raise HubError(f"{path}: no CSV header line{hint}")
    return records, first[2]


def jsonl_records(text: IO[str]) -> Iterator[Record]:
    """Every JSON object of a JSON Lines file (blank lines skipped; others are errors)."""
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield number, number, None, "not a JSON object (malformed JSON)"
            continue
        if isinstance(value, dict):
            yield number, number, value, None
        else:
            yield number, number, None, "each line must be a JSON object"


__all__ = [
    "FORMATS",
    "CountingRaw",
    "Record",
    "csv_records",
    "csv_with_header",
    "file_format",
    "jsonl_records",
]
