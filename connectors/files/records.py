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
#: The longest physical line read, in characters. Why: a line is held whole before it is
#: parsed, so a file without line breaks (a binary dump, a one-line JSON export) was read
#: into memory entire; past this the line is skipped in pieces and refused with its
#: number. Far above any real record: twice the API's default request (512 KiB for up to
#: 1,000 transactions) and eight CSV cells at the csv module's limit (128 Ki characters).
MAX_LINE_CHARS = 1 << 20
#: How deep a JSON Lines value may nest. Why: the event log's JSON writer stops at 254
#: levels and the card-number search and ``str()`` recurse in Python, so one deep line
#: (orjson reads 1,024) raised and stopped the import; a real export nests a few levels.
MAX_JSON_DEPTH = 64
#: Why a NUL is refused: PostgreSQL cannot store it in text or JSON (the import stopped
#: at the next commit) and no real export has one; a UTF-16 file read as UTF-8 is full of
#: them, hence the hint.
NUL_REASON = "contains a NUL character (a binary or UTF-16 file? set encoding in the mapping)"


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
    lines = _Lines(text)
    reader = csv.reader(lines, delimiter=delimiter)
    previous = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            lines.nul = False
            yield previous + 1, lines.number, None, f"malformed CSV: {exc}"
            previous = lines.number
            continue
        start, previous = previous + 1, lines.number
        if lines.nul:
            lines.nul = False
            yield start, previous, None, NUL_REASON
        elif row:
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
        why = f" ({first[3]})" if first is not None and first[3] else ""
        raise HubError(f"{path}: no CSV header line{hint}{why}")
    return records, first[2]


def jsonl_records(text: IO[str]) -> Iterator[Record]:
    """Every JSON object of a JSON Lines file (blank lines skipped; others are errors)."""
    lines = _Lines(text)
    while True:
        try:
            line = next(lines)
        except StopIteration:
            return
        except LineTooLong as exc:
            yield lines.number, lines.number, None, str(exc)
            continue
        number = lines.number
        if lines.nul:
            lines.nul = False
            yield number, number, None, NUL_REASON
            continue
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield number, number, None, "not a JSON object (malformed JSON)"
            continue
        if not isinstance(value, dict):
            yield number, number, None, "each line must be a JSON object"
            continue
        # cheap tests first: no escaped NUL, or too few brackets to nest that deep
        deep = line.count("{") + line.count("[") > MAX_JSON_DEPTH
        problem = _json_problem(value) if deep or "\\u0000" in line else None
        if problem is not None:
            yield number, number, None, problem
        else:
            yield number, number, value, None


def _json_problem(value: Any) -> str | None:
    """Why a parsed JSON value cannot be imported (too deep, a NUL), or ``None``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return NUL_REASON
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                return f"nested deeper than {MAX_JSON_DEPTH} levels"
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
    return None


class LineTooLong(csv.Error):
    """A physical line over :data:`MAX_LINE_CHARS` (skipped, never held whole)."""


class _Lines:
    """The physical lines of a text stream, numbered, each at most MAX_LINE_CHARS long.

    An overlong line is read past in pieces and raises :class:`LineTooLong` (a
    ``csv.Error``, so the CSV reader's caller records it like any malformed record);
    ``nul`` is set when a line holds a NUL character (the reader clears it).
    """

    def __init__(self, text: IO[str]) -> None:
        self._text = text
        self.number = 0
        self.nul = False
        self._split_crlf = False  # an overlong line's CR was read, its LF may follow

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._text.readline(MAX_LINE_CHARS + 1)
        if self._split_crlf:
            self._split_crlf = False
            if line == "\n":  # the rest of the overlong line's CRLF: no line of its own
                line = self._text.readline(MAX_LINE_CHARS + 1)
        if not line:
            raise StopIteration
        self.number += 1
        if len(line) > MAX_LINE_CHARS:
            while line and not line.endswith(("\n", "\r")):
                line = self._text.readline(MAX_LINE_CHARS)
            self._split_crlf = line.endswith("\r")
            raise LineTooLong(f"line longer than {MAX_LINE_CHARS:,} characters")
        if "\x00" in line:
            self.nul = True
        return line


__all__ = [
    "FORMATS",
    "MAX_JSON_DEPTH",
    "MAX_LINE_CHARS",
    "NUL_REASON",
    "CountingRaw",
    "LineTooLong",
    "Record",
    "csv_records",
    "csv_with_header",
    "file_format",
    "jsonl_records",
]
