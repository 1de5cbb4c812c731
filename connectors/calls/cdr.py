"""One call-detail record -> one ``call.completed`` touchpoint, as a mapping says.

Who is the customer: a CDR names two parties (Asterisk: ``src`` calls ``dst``); one is the
business (an internal extension, an agent), the other the customer. The direction comes
from a direction column when the mapping has one, else from the dialplan context when the
mapping lists it, else from which side matches ``extension_pattern``: an internal caller
means outbound (the customer is the dialled number), anyone else calling means inbound
(the customer is the caller). A call between two extensions is no customer touchpoint and
is skipped with its reason, never silently. A withheld caller id (``anonymous``) keeps the
call with a stand-in ``anonymous_id`` unique to it, as the Twilio webhooks do, so the call
counts without ever joining two customers; a number that is not a phone number refuses
the record (reject file). Values are never quoted in errors.

The customer's phone is normalized to E.164 with the hub's default region (as for every
channel), so a call joins the profile that web and POS events built for the same number.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pydantic

from connectors.calls.mapping import REQUIRED, CallMapping
from connectors.calls.parties import NUMBERISH, channel_endpoint, parse_clid
from connectors.files.columns import Columns, Getter, RowError, row_time
from connectors.files.mapping import MappingError
from pipeline.envelope import Channel, Touchpoint
from pipeline.identifiers import normalize_email, normalize_phone

SOURCE = "calls-import"
EVENT_TYPE = "call.completed"
MAX_CALL_ID = 160


class Skip(Exception):
    """A record that is no customer touchpoint (say, an internal call); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CompiledCallMapping:
    """A call mapping bound to one file's header: a getter per mapped field."""

    def __init__(self, mapping: CallMapping, header: Sequence[str] | None) -> None:
        self.mapping = mapping
        self._specs: dict[str, str] = {field: spec for field, spec in mapping.fields.items()}
        self._notes: dict[str, None] = {}
        self._columns = Columns(header, frozenset(mapping.null_values))
        self._get: dict[str, Getter] = {}
        lacking: list[str] = []
        for field, spec in mapping.fields.items():
            getter = self._columns.getter(spec)
            if getter is not None:
                self._get[field] = getter
                continue
            message = f"{field}: no column {', '.join(map(repr, self._columns.missing(spec)))}"
            if field in REQUIRED or (field == "from" and "caller_id" not in mapping.fields):
                lacking.append(message)
            else:
                self._notes[f"ignoring {message} in the file"] = None
        if not lacking and "from" not in self._get and "caller_id" not in self._get:
            lacking.append("from: no column for the caller (from or caller_id)")
        if lacking:
            hint = "" if mapping.columns else " (a file without a header line needs columns:)"
            raise MappingError(f"mapping {mapping.name!r}: {'; '.join(lacking)}{hint}")
        self._properties: list[tuple[str, Getter]] = []
        for name, spec in mapping.properties.items():
            getter = self._columns.getter(spec)
            if getter is None:
                self._notes[f"ignoring properties.{name}: no column {spec!r} in the file"] = None
            else:
                self._properties.append((name, getter))
        prefix = mapping.property_prefix
        if prefix and header is not None:
            for column in header:
                if column.startswith(prefix) and len(column) > len(prefix):
                    getter = self._columns.getter(column)
                    if getter is not None:
                        self._properties.append((column[len(prefix) :], getter))
        self._extension = re.compile(mapping.extension_pattern)
        self._contexts = {
            context: direction
            for direction, contexts in mapping.contexts.items()
            for context in contexts
        }
        self._withheld = frozenset(mapping.withheld)
        self._system = mapping.system_name

    @property
    def notes(self) -> list[str]:
        """What the mapping asks for that this file cannot give (ignored fields)."""
        return list(self._notes)

    def _value(self, row: Any, field: str) -> str | None:
        getter = self._get.get(field)
        return getter(row) if getter is not None else None

    def _spec(self, field: str) -> str:
        return self._specs.get(field, field)

    # -- the record ------------------------------------------------------------------------

    def touchpoint(
        self,
        row: Any,
        *,
        received_at: datetime,
        default_region: str,
        context: dict[str, Any] | None = None,
    ) -> Touchpoint:
        """The record's ``call.completed``; raises :class:`RowError` or :class:`Skip`."""
        value = self._value
        caller_name, caller_number = parse_clid(value(row, "caller_id"))
        caller = value(row, "from") or caller_number
        called = value(row, "to")
        dialplan_context = value(row, "context")
        direction = self._direction(row, caller, called, dialplan_context)
        if direction == "internal":
            raise Skip("internal call (both ends are extensions)")
        zone_name = value(row, "timezone")
        started = self._time(row, "started_at", zone_name)
        if started is None:
            raise RowError("started_at", f"column {self._spec('started_at')!r}: empty")
        answered = self._time(row, "answered_at", zone_name)
        ended = self._time(row, "ended_at", zone_name)
        duration = self._seconds(row, "duration")
        talk = self._seconds(row, "talk_seconds")
        disposition = self._disposition(row, answered, talk)
        if duration is None and ended is not None:
            duration = _whole(max((ended - started).total_seconds(), 0))
        if disposition != "answered":
            answered, talk = None, 0
        elif talk is None and answered is not None and ended is not None:
            talk = _whole(max((ended - answered).total_seconds(), 0))

        inbound = direction == "inbound"
        if not inbound and called is not None and self.mapping.dial_prefix:
            prefix = self.mapping.dial_prefix
            if called.startswith(prefix) and len(called) > len(prefix):
                called = called[len(prefix) :]
        customer_field = "from" if inbound else "to"
        customer = caller if inbound else called
        phone = self._phone(customer, customer_field, default_region)
        call_id = value(row, "call_id")
        if call_id is not None and len(call_id) > MAX_CALL_ID:
            raise RowError("call_id", f"longer than {MAX_CALL_ID} characters")
        message_id = self._message_id(row, call_id, caller, called)

        identifiers: dict[str, str] = {}
        if phone is not None:
            identifiers["phone"] = phone
        email = value(row, "customer.email")
        if email is not None:
            try:
                identifiers["email"] = normalize_email(email)
            except ValueError:
                spec = self._spec("customer.email")
                raise RowError("customer.email", f"column {spec!r}: not an email address") from None
        customer_id = value(row, "customer.customer_id")
        if customer_id is not None:
            identifiers["customer_id"] = customer_id
        if not identifiers:
            identifiers["anonymous_id"] = message_id  # withheld number: this call alone

        properties: dict[str, Any] = {}
        for name, getter in self._properties:
            extra = getter(row)
            if extra is not None:
                properties[name] = extra
        if call_id is not None:
            properties["call_id"] = call_id
        properties["direction"] = direction
        properties["from"] = phone if inbound and phone else self._e164(caller, default_region)
        properties["to"] = phone if not inbound and phone else self._e164(called, default_region)
        properties["started_at"] = started.astimezone(UTC).isoformat()
        if answered is not None:
            properties["answered_at"] = answered.astimezone(UTC).isoformat()
        if ended is not None:
            properties["ended_at"] = ended.astimezone(UTC).isoformat()
        if duration is not None:
            properties["duration"] = duration
        if talk is not None:
            properties["talk_seconds"] = talk
        properties["disposition"] = disposition
        agent = value(row, "agent") or self._agent(row, inbound, caller, called)
        if agent is not None:
            properties["agent"] = agent
        queue = value(row, "queue") or self._queue(row)
        if queue is not None:
            properties["queue"] = queue
        if dialplan_context is not None:
            properties["context"] = dialplan_context
        for field in ("recording_url", "account_code"):
            found = value(row, field)
            if found is not None:
                properties[field] = found
        caller_name = caller_name or value(row, "caller_name")
        traits: dict[str, Any] = {}
        if inbound and caller_name is not None and self._is_a_name(caller_name, caller):
            properties["caller_name"] = traits["caller_name"] = caller_name
        try:
            return Touchpoint(
                message_id=message_id,
                channel=Channel.CALL,
                type=EVENT_TYPE,
                occurred_at=started,
                received_at=received_at,
                source=SOURCE,
                identifiers=identifiers,
                traits=traits,
                properties=properties,
                context=context or {},
            )
        except pydantic.ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "record"
            raise RowError(where, str(first["msg"])) from None

    # -- pieces ----------------------------------------------------------------------------

    def _direction(
        self, row: Any, caller: str | None, called: str | None, dialplan_context: str | None
    ) -> str:
        raw = self._value(row, "direction")
        if raw is not None:
            return self._choice(raw, "direction", self.mapping.directions)
        if dialplan_context is not None:
            by_context = self._contexts.get(dialplan_context)
            if by_context is not None:
                return by_context
        caller_internal = caller is not None and self._extension.fullmatch(caller) is not None
        if not caller_internal:
            return "inbound"
        called_internal = called is None or self._extension.fullmatch(called) is not None
        return "internal" if called_internal else "outbound"

    def _phone(self, number: str | None, field: str, default_region: str) -> str | None:
        """The customer's number in E.164; ``None`` when withheld (inbound only)."""
        if number is None or number.casefold() in self._withheld:
            if field == "from":
                return None
            raise RowError("to", f"column {self._spec('to')!r}: no number dialled")
        try:
            return normalize_phone(number, default_region)
        except ValueError:
            spec = self._spec(field if field in self._specs else "caller_id")
            raise RowError(field, f"column {spec!r}: not a phone number") from None

    @staticmethod
    def _e164(number: str | None, default_region: str) -> str | None:
        """The business's side as written (an extension), or E.164 when it is a number."""
        if number is None or len(number) < 7:
            return number
        try:
            return normalize_phone(number, default_region)
        except ValueError:
            return number

    def _time(self, row: Any, field: str, zone_name: str | None) -> datetime | None:
        text = self._value(row, field)
        if text is None:
            return None
        return row_time(self.mapping, text, zone_name, field=field, spec=self._spec(field))

    def _seconds(self, row: Any, field: str) -> int | float | None:
        text = self._value(row, field)
        if text is None:
            return None
        try:
            seconds = float(text)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds < 10**7:  # also refuses nan and inf
            raise RowError(field, f"column {self._spec(field)!r}: not a number of seconds")
        return _whole(seconds)

    def _disposition(self, row: Any, answered: datetime | None, talk: float | None) -> str:
        raw = self._value(row, "disposition")
        if raw is None:
            return "answered" if answered is not None or (talk or 0) > 0 else "no-answer"
        return self._choice(raw, "disposition", self.mapping.dispositions)

    def _choice(self, raw: str, field: str, table: Mapping[str, str]) -> str:
        """What the mapping's ``table`` (folded keys) makes of a column's value, any case."""
        found = table.get(raw.casefold())
        if found is None:
            known = ", ".join(sorted(table))
            raise RowError(field, f"column {self._spec(field)!r}: value is not one of {known}")
        return found

    def _agent(self, row: Any, inbound: bool, caller: str | None, called: str | None) -> str | None:
        """The business's side: its channel's endpoint, else its number if an extension.

        With channels mapped, an inbound call that no one picked up has no agent (its
        ``dst`` is then a queue or ring group, not a person).
        """
        field = "peer_channel" if inbound else "channel"
        if field in self._get:
            return channel_endpoint(self._get[field](row))
        number = called if inbound else caller
        if number is not None and self._extension.fullmatch(number):
            return number
        return None

    def _queue(self, row: Any) -> str | None:
        """Asterisk's queue: the first argument of a record whose last app is Queue."""
        app = self._value(row, "last_app")
        if app is None or app.casefold() != "queue":
            return None
        data = self._value(row, "last_data")
        return data.split(",", 1)[0].strip() or None if data else None

    def _is_a_name(self, name: str, number: str | None) -> bool:
        return (
            name != number
            and name.casefold() not in self._withheld
            and NUMBERISH.match(name) is None
        )

    def _message_id(
        self,
        row: Any,
        call_id: str | None,
        caller: str | None,
        called: str | None,
    ) -> str:
        """``call:{system}:{call id}`` (plus a leg hash when ids repeat), else a row hash.

        The hash takes the start time as the file writes it, not the instant it is read
        as: importing the same file again with another ``--timezone`` (to fix a wrong
        one) must find the same calls, not add them a second time.
        """
        start = self._value(row, "started_at") or ""
        channel = self._value(row, "channel") or ""
        peer = self._value(row, "peer_channel") or ""
        if call_id is not None and self.mapping.unique_call_id:
            return f"call:{self._system}:{call_id}"
        if call_id is not None:
            return f"call:{self._system}:{call_id}:{_digest(peer, start, length=12)}"
        parts = (caller or "", called or "", start, channel, peer)
        return f"call:{self._system}:~{_digest(*parts, length=32)}"


def _digest(*parts: str, length: int) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def _whole(seconds: float) -> int | float:
    return int(seconds) if float(seconds).is_integer() else round(seconds, 3)


__all__ = ["EVENT_TYPE", "SOURCE", "CompiledCallMapping", "Skip"]
