"""A file's columns by name: one small getter per mapped column or ``"{A} {B}"`` template.

Why compiled against the header: a mapping names columns, the file has positions;
resolving them once per file leaves a getter per field, so each row costs only its values.
Cells are stripped, and blank cells or the mapping's null values read as ``None``. JSON
Lines rows (dicts) are read by key the same way. Values are never quoted in errors, not
even a time the mapping's format cannot read (:func:`row_time`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from connectors.files.mapping import FileMapping, UnknownZone, template_columns

#: Reads one field from a row: a CSV row (list of cells) or a JSON Lines row (a dict).
Getter = Callable[[Any], str | None]


class RowError(ValueError):
    """A row that cannot be imported; ``item`` is the row's index in its group, if any."""

    def __init__(self, field: str, reason: str, item: int | None = None) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason, self.item = field, reason, item


class Columns:
    """Getters for one file: by position for a CSV header, by key for JSON Lines rows."""

    def __init__(self, header: Sequence[str] | None, nulls: frozenset[str]) -> None:
        self.index = None if header is None else first_positions(header)
        self.nulls = nulls

    def position(self, column: str) -> int:
        """The column's position in a CSV row, or -1 (not a CSV, or no such column)."""
        return -1 if self.index is None else self.index.get(column, -1)

    def missing(self, spec: str) -> list[str]:
        """The columns a spec reads that the file does not have."""
        if self.index is None:
            return []
        return [c for c in template_columns(spec) if c not in self.index]

    def getter(self, spec: str) -> Getter | None:
        """A getter for a column or template; ``None`` when the file lacks a column."""
        columns = template_columns(spec)
        nulls = self.nulls
        if self.index is None:
            if columns == [spec]:
                return _key_getter(spec, nulls)
            getters = [(c, _key_getter(c, nulls)) for c in columns]
        else:
            if any(c not in self.index for c in columns):
                return None
            if columns == [spec]:
                return _index_getter(self.index[spec], nulls)
            getters = [(c, _index_getter(self.index[c], nulls)) for c in columns]

        def template(row: Any) -> str | None:
            values = {}
            for column, get in getters:
                value = get(row)
                if value is None:
                    return None
                values[column] = value
            return _substitute(spec, values)

        return template


def row_time(
    mapping: FileMapping, text: str, zone_name: str | None, *, field: str, spec: str
) -> datetime:
    """A row's time as the mapping writes it (:meth:`FileMapping.read_time`), made aware.

    Why here: every importer refuses a bad time the same way, a :class:`RowError` naming
    the field and its column (``spec``) and never the value; an unknown zone is the
    ``timezone`` field's fault.
    """
    try:
        moment = mapping.read_time(text, zone_name)
        if moment.year in (1, 9999):  # the only years whose UTC instant may not exist
            moment.astimezone(UTC)
        return moment
    except OverflowError:  # 0001-01-01T00:00+05:00: before year 1 in UTC
        raise RowError(field, f"column {spec!r}: out of range (years 1 to 9999 in UTC)") from None
    except UnknownZone:
        raise RowError("timezone", "unknown time zone; add it to the mapping's timezones") from None
    except ValueError:
        expected = mapping.expected_time
        raise RowError(field, f"column {spec!r}: not a time in {expected}") from None


def first_positions(header: Sequence[str]) -> dict[str, int]:
    """Column name -> position (the first, when a header repeats a name)."""
    index: dict[str, int] = {}
    for position, name in enumerate(header):
        index.setdefault(name.strip(), position)
    return index


def _index_getter(position: int, nulls: frozenset[str]) -> Getter:
    def get(row: Any) -> str | None:
        if position >= len(row):
            return None
        value: str = row[position].strip()
        return value if value and value not in nulls else None

    return get


def _key_getter(column: str, nulls: frozenset[str]) -> Getter:
    return lambda row: _clean_any(row.get(column), nulls)


def _clean_any(value: Any, nulls: frozenset[str]) -> str | None:
    if value is None:
        return None
    text = value.strip() if isinstance(value, str) else str(value)
    return text if text and text not in nulls else None


def _substitute(spec: str, values: dict[str, str]) -> str:
    for column, value in values.items():
        spec = spec.replace("{" + column + "}", value)
    return spec


__all__ = ["Columns", "Getter", "RowError", "first_positions", "row_time"]
