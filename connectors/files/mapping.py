"""What every import mapping shares: reading the file, null cells, times, loading the YAML.

Why a base model: a POS export and a PBX's call-detail records differ in what their
columns mean, not in how a file is read. The keys here (delimiter, encoding, ``columns``
for files without a header line, null values, timestamp format, time zones) mean the same
in every mapping, are validated the same way and are documented once; each connector's
mapping subclasses :class:`FileMapping` and adds its own field vocabulary.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.errors import HubError

_TEMPLATE_PART = re.compile(r"\{([^{}]+)\}")


class MappingError(HubError):
    """A mapping file that cannot be used (missing, unreadable, or invalid); exit 2."""


class UnknownZone(ValueError):
    """A row names a time zone that is neither an IANA name nor in the mapping's table."""


class FileMapping(BaseModel):
    """The keys every mapping has (see the README's "Writing a mapping")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf-8-sig"
    #: Column names of a CSV without a header line (its first line is then data).
    columns: list[str] | None = Field(default=None, min_length=1)
    timestamp_format: str = "iso"
    timezone: str = "UTC"
    timezones: dict[str, str] = Field(default_factory=dict)
    null_values: list[str] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value

    @field_validator("timezones")
    @classmethod
    def _zones(cls, value: dict[str, str]) -> dict[str, str]:
        for iana in value.values():
            zone(iana)
        return value

    @field_validator("columns")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            names = [name.strip() for name in value]
            if len(set(names)) != len(names) or not all(names):
                raise ValueError("column names must be distinct and not empty")
            return names
        return value

    @property
    def expected_time(self) -> str:
        """How the mapping's times are written, for error messages."""
        fmt = self.timestamp_format
        return "ISO 8601" if fmt == "iso" else f"the format {fmt}"

    def read_time(self, text: str, zone_name: str | None = None) -> datetime:
        """A time as the mapping writes it, made aware.

        A time without an offset is in ``zone_name`` (a row's own zone, translated by
        ``timezones``) or else the mapping's ``timezone``. Raises :class:`UnknownZone` for
        a zone it cannot place, ``ValueError`` for text not in the mapping's format.
        """
        fmt = self.timestamp_format
        moment = datetime.fromisoformat(text) if fmt == "iso" else datetime.strptime(text, fmt)
        if moment.tzinfo is not None:
            return moment
        name = self.timezone
        if zone_name is not None:
            name = self.timezones.get(zone_name, zone_name)
        try:
            return moment.replace(tzinfo=zone(name))
        except ValueError:
            raise UnknownZone(name) from None


_ZONES: dict[str, ZoneInfo] = {}


def zone(name: str) -> ZoneInfo:
    """An IANA time zone, cached; ``ValueError`` for an unknown name."""
    found = _ZONES.get(name)
    if found is None:
        try:
            found = _ZONES[name] = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {name!r}") from None
    return found


def template_columns(spec: str) -> list[str]:
    """The columns a field spec reads: ``"{Date} {Time}"`` -> Date, Time; else the spec."""
    found = _TEMPLATE_PART.findall(spec)
    return found if found else [spec]


def shipped(directory: Path) -> list[str]:
    """Names of the mappings in ``directory`` (the ones a connector ships)."""
    return sorted(p.stem for p in directory.glob("*.yaml"))


M = TypeVar("M", bound=FileMapping)


def load_mapping_file(name_or_path: str, directory: Path, model: type[M]) -> M:
    """A shipped mapping by name (a file of ``directory``) or any mapping file by path.

    Every problem is a :class:`MappingError` naming the key at fault, never a traceback.
    """
    candidate = directory / f"{name_or_path}.yaml"
    path = candidate if "/" not in name_or_path and candidate.is_file() else Path(name_or_path)
    if not path.is_file():
        raise MappingError(
            f"no mapping {name_or_path!r}: not a file, nor one of {', '.join(shipped(directory))}"
        )
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MappingError(f"mapping {path}: cannot read it: {reason}") from None
    if not isinstance(document, dict):
        raise MappingError(f"mapping {path}: must be a YAML mapping (key: value lines)")
    document.setdefault("name", path.stem)
    try:
        return model.model_validate(document)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"] if part != "[key]") or "(top level)"
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise MappingError(f"mapping {path}: {where}: {reason}") from None


__all__ = [
    "FileMapping",
    "MappingError",
    "UnknownZone",
    "load_mapping_file",
    "shipped",
    "template_columns",
    "zone",
]
