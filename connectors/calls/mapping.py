"""Call-detail-record mappings: a small YAML file saying how a CDR export's columns fill a call.

Why YAML and not code: every PBX and contact-centre system writes its own CDR layout (and
Asterisk's ``Master.csv`` has no header line at all), so a mapping names, per call field,
the column (or ``"{A} {B}"`` template) to read, and says how to tell the customer's side
from the business's: a direction column, the dialplan context, or which side is an
internal extension. How the file is read (delimiter, encoding, ``columns`` for headerless
files, null values, timestamp format, time zones) is shared with every file import:
:class:`connectors.files.FileMapping`. Shipped mappings live in
``connectors/calls/mappings/`` and are found by name (``--mapping asterisk``); any other
file is used by path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from connectors.files.mapping import (
    FileMapping,
    MappingError,
    load_mapping_file,
    shipped,
)

MAPPINGS_DIR = Path(__file__).with_name("mappings")

CallField = Literal[
    "call_id",
    "direction",
    "from",
    "to",
    "caller_id",
    "caller_name",
    "started_at",
    "answered_at",
    "ended_at",
    "timezone",
    "duration",
    "talk_seconds",
    "disposition",
    "agent",
    "channel",
    "peer_channel",
    "context",
    "queue",
    "last_app",
    "last_data",
    "recording_url",
    "account_code",
    "customer.email",
    "customer.customer_id",
]
Direction = Literal["inbound", "outbound", "internal"]
Disposition = Literal["answered", "no-answer", "busy", "failed", "canceled"]
#: Fields a file must have a column for (and ``from`` or ``caller_id``).
REQUIRED = ("started_at", "to")
DIRECTIONS: tuple[Direction, ...] = ("inbound", "outbound", "internal")
DISPOSITIONS: tuple[Disposition, ...] = ("answered", "no-answer", "busy", "failed", "canceled")
#: Caller ids that say the number was withheld (compared case-insensitively).
WITHHELD = ("anonymous", "unknown", "unavailable", "restricted", "private", "withheld")
_SYSTEM = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"


class CallMapping(FileMapping):
    """One validated call mapping file (see the README's "Call-detail records")."""

    #: Names the exporting system in message ids (``call:{system}:{call id}``): give two
    #: PBXes whose call ids may coincide different systems. Default: the mapping's name.
    system: str | None = Field(default=None, pattern=_SYSTEM)
    fields: dict[CallField, str]
    #: False when several records share a call id (Asterisk writes one CDR per dialled
    #: party, per transfer and per ForkCDR, all with the caller's uniqueid): the message
    #: id then also hashes the peer channel and start time, so each record stays one event.
    unique_call_id: bool = True
    #: Values of the direction column (any case) -> inbound / outbound / internal.
    directions: dict[str, Direction] = Field(default_factory=lambda: _default_directions())
    #: Dialplan contexts (the ``context`` field) that settle the direction.
    contexts: dict[Direction, list[str]] = Field(default_factory=dict)
    #: A number matching this is an internal extension, not a customer (full match).
    extension_pattern: str = r"\d{2,5}"
    #: Stripped from the dialled number of outbound calls (an outside-line prefix: "9").
    dial_prefix: str | None = Field(default=None, min_length=1, max_length=8)
    #: Caller ids meaning "number withheld": the call is kept with a stand-in identifier.
    withheld: list[str] = Field(default_factory=lambda: list(WITHHELD))
    #: Values of the disposition column (any case) -> answered / no-answer / busy / ...
    dispositions: dict[str, Disposition] = Field(default_factory=lambda: _default_dispositions())
    properties: dict[str, str] = Field(default_factory=dict)
    property_prefix: str | None = None

    @field_validator("directions", "dispositions")
    @classmethod
    def _fold(cls, value: dict[str, str]) -> dict[str, str]:
        return {k.strip().casefold(): v for k, v in value.items()}

    @field_validator("withheld")
    @classmethod
    def _fold_list(cls, value: list[str]) -> list[str]:
        return [v.strip().casefold() for v in value]

    @field_validator("extension_pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _complete(self) -> CallMapping:
        missing = [f for f in REQUIRED if f not in self.fields]
        if "from" not in self.fields and "caller_id" not in self.fields:
            missing.append("from (or caller_id)")
        if missing:
            raise ValueError(f"fields needs {', '.join(missing)}")
        return self

    @property
    def system_name(self) -> str:
        """The system named in message ids."""
        return self.system or re.sub(r"[^A-Za-z0-9_.-]", "-", self.name)[:32]


def _default_directions() -> dict[str, Direction]:
    found: dict[str, Direction] = {d: d for d in DIRECTIONS}
    found.update({"in": "inbound", "out": "outbound"})
    return found


def _default_dispositions() -> dict[str, Disposition]:
    return {d: d for d in DISPOSITIONS}


def shipped_mappings() -> list[str]:
    """Names of the call mappings that come with the hub."""
    return shipped(MAPPINGS_DIR)


def load_mapping(name_or_path: str) -> CallMapping:
    """A shipped mapping by name (``asterisk``) or any mapping file by path."""
    return load_mapping_file(name_or_path, MAPPINGS_DIR, CallMapping)


__all__ = [
    "DIRECTIONS",
    "DISPOSITIONS",
    "MAPPINGS_DIR",
    "REQUIRED",
    "WITHHELD",
    "CallField",
    "CallMapping",
    "Direction",
    "Disposition",
    "MappingError",
    "load_mapping",
    "shipped_mappings",
]
