"""Channel consent per address, derived from the event log: may we text or email it?

Why derived from events: a consent decision is something a customer did (texted STOP,
ticked a box, clicked unsubscribe), so it is an event like any other, with the property
``consent = {"channel": "sms" | "email", "status": "opted_in" | "opted_out", ...}``, and
this table is the latest decision per address. It can be rebuilt from the log, and it
does not depend on the order events arrive in: a decision only replaces one that happened
earlier (``occurred_at``), so a late backfill of an old opt-in never undoes a newer
opt-out. When two decisions carry the same time, opting out wins.

The address is the event's ``phone`` identifier for SMS, its ``email`` for email (both
normalized by ingest, as actions' recipients are), so consent follows the address, not
the profile: a number that said STOP is blocked whichever profile it ends up in.

Policy (:func:`allowed`): ``opted_out`` blocks; ``opted_in`` and unknown addresses are
allowed. Unknown is allowed because the actions this hub sends today are answers to
customers (a reply to their email, a message an operator sends); marketing rules that need
explicit opt-in check :func:`status_of` for ``opted_in`` themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

import structlog
from sqlalchemy import (
    ForeignKey,
    String,
    Table,
    UniqueConstraint,
    and_,
    or_,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from pipeline.db import Base, BigId, UTCDateTime, dialect_insert
from pipeline.processing import StoredEvent

log = structlog.get_logger(__name__)

OPTED_IN: Final = "opted_in"
OPTED_OUT: Final = "opted_out"
CONSENT_STATUSES = (OPTED_IN, OPTED_OUT)
#: consent channel -> the identifier kind that is its address
ADDRESS_KIND = {"sms": "phone", "email": "email"}


class Consent(Base):
    """The latest consent decision for one address on one channel."""

    __tablename__ = "consents"
    __table_args__ = (
        UniqueConstraint("workspace_id", "channel", "address", name="uq_consents_address"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))
    #: the event (message_id) that decided it
    message_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: the ``occurred_at`` of that event: a decision only replaces an older one
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


CONSENTS = cast(Table, Consent.__table__)


@dataclass(frozen=True)
class Decision:
    """One consent decision read from an event."""

    channel: str
    address: str
    status: str
    occurred_at: datetime
    message_id: str | None


def decisions_of(events: Iterable[StoredEvent]) -> list[Decision]:
    """The consent decisions carried by ``events`` (malformed ones are skipped, logged).

    A malformed ``consent`` property does not fail the event: it is a hint about the
    customer, and the event itself (an SMS, an order) still happened.
    """
    found: list[Decision] = []
    for event in events:
        consent = event.properties.get("consent")
        if consent is None:
            continue
        decision, problem = _decision(event, consent)
        if decision is not None:
            found.append(decision)
        else:
            log.warning("consent_ignored", event_id=event.id, reason=problem)
    return found


def _decision(event: StoredEvent, consent: Any) -> tuple[Decision | None, str]:
    if not isinstance(consent, dict):
        return None, "properties.consent is not an object"
    channel, status = consent.get("channel"), consent.get("status")
    if channel not in ADDRESS_KIND:
        return None, f"properties.consent.channel must be one of {sorted(ADDRESS_KIND)}"
    if status not in CONSENT_STATUSES:
        return None, f"properties.consent.status must be one of {CONSENT_STATUSES}"
    address = event.identifiers.get(ADDRESS_KIND[channel])
    if not address:
        return None, f"a {channel} consent needs a {ADDRESS_KIND[channel]} identifier"
    return Decision(channel, address, status, event.occurred_at, event.message_id), ""


def apply_events(session: Session, workspace_id: str, events: Sequence[StoredEvent]) -> int:
    """Record the consent decisions among processed ``events``; returns how many.

    Called for every processed batch, so the common case (no event carries consent) costs
    one dictionary lookup per event and no statement.
    """
    if not any("consent" in event.properties for event in events):
        return 0
    decisions = decisions_of(events)
    record(session, workspace_id, decisions)
    return len(decisions)


def record(session: Session, workspace_id: str, decisions: Iterable[Decision]) -> None:
    """Upsert decisions; each replaces only an older one (opting out wins a tie)."""
    latest: dict[tuple[str, str], Decision] = {}
    for decision in decisions:
        key = (decision.channel, decision.address)
        current = latest.get(key)
        if current is None or _newer(decision, current):
            latest[key] = decision
    if not latest:
        return
    rows = [
        {
            "workspace_id": workspace_id,
            "channel": d.channel,
            "address": d.address,
            "status": d.status,
            "message_id": d.message_id,
            "updated_at": d.occurred_at,
        }
        for d in sorted(latest.values(), key=lambda d: (d.channel, d.address))
    ]
    insert = dialect_insert(session)(CONSENTS)
    new = insert.excluded
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["workspace_id", "channel", "address"],
            set_={"status": new.status, "message_id": new.message_id, "updated_at": new.updated_at},
            where=or_(
                CONSENTS.c.updated_at < new.updated_at,
                and_(CONSENTS.c.updated_at == new.updated_at, new.status == OPTED_OUT),
            ),
        ),
        rows,
    )


def _newer(candidate: Decision, current: Decision) -> bool:
    if candidate.occurred_at != current.occurred_at:
        return candidate.occurred_at > current.occurred_at
    return candidate.status == OPTED_OUT


def status_of(session: Session, workspace_id: str, channel: str, address: str) -> Consent | None:
    """The latest decision for a (normalized) address, or ``None`` when there is none."""
    return session.scalars(
        select(Consent).where(
            Consent.workspace_id == workspace_id,
            Consent.channel == channel,
            Consent.address == address,
        )
    ).first()


def allowed(session: Session, workspace_id: str, channel: str, address: str) -> bool:
    """May the hub send on ``channel`` to ``address``? (see the policy in the module doc)"""
    consent = status_of(session, workspace_id, channel, address)
    return consent is None or consent.status != OPTED_OUT
