"""What personalization holds about a person, for GDPR export and erasure.

Two tables hold personal data: ``consents`` (one row per address and channel) and
``actions`` (each message the hub sent or will send: the recipient and what it says).
:mod:`identity.erasure` and :mod:`identity.export` call these through their extension
points (identity must not import personalization; personalization builds on identity).

Erasure policy: a consent row of one of the person's addresses keeps its channel, status
and time, its address becomes the identifier's placeholder (so the decision no longer
protects that address: a tombstone, not the consent table, remembers an erased person).
An action to the person (by profile or by address) keeps its kind, status, attempts and
times; its recipient becomes the placeholder, its content (``payload``) is emptied and its
error scrubbed. An action still waiting (``queued``, or ``sending`` with a lease) is
``suppressed``: nothing more is sent to an erased person.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from identity.person import Person
from identity.scrub import Scrubber
from personalization.actions import ACTIONS, CHANNEL_OF, IDENTIFIER_OF, QUEUED, SENDING, SUPPRESSED
from personalization.consent import ADDRESS_KIND, CONSENTS
from pipeline import utcnow
from pipeline.db import in_list

ERASED_ACTION = "not sent: the recipient's data was erased"


def _addresses(values: Mapping[str, set[str]]) -> dict[str, list[str]]:
    """Consent channel -> the person's addresses on it."""
    return {channel: sorted(values.get(kind, set())) for channel, kind in ADDRESS_KIND.items()}


def _consent_rows(
    session: Session, workspace_id: str, by_channel: dict[str, list[str]]
) -> list[Any]:
    c = CONSENTS.c
    rows: list[Any] = []
    for channel, addresses in sorted(by_channel.items()):
        if addresses:  # the unique index (workspace, channel, address) makes each a search
            rows += session.execute(
                select(CONSENTS).where(
                    c.workspace_id == workspace_id,
                    c.channel == channel,
                    in_list(session, c.address, addresses),
                )
            ).all()
    return rows


def _action_rows(
    session: Session, workspace_id: str, profile_ids: list[str], recipients: list[str]
) -> list[Any]:
    a = ACTIONS.c
    mine = in_list(session, a.profile_id, profile_ids)
    if recipients:
        mine = or_(mine, in_list(session, a.recipient, recipients))
    return list(
        session.execute(select(ACTIONS).where(a.workspace_id == workspace_id, mine).order_by(a.id))
    )


def export_outbound(session: Session, person: Person) -> dict[str, Any]:
    """The person's consent records and the actions sent (or to be sent) to them."""
    values: dict[str, set[str]] = {}
    for kind, value in person.identifiers:
        values.setdefault(kind, set()).add(value)
    by_channel = _addresses(values)
    recipients = sorted({v for addresses in by_channel.values() for v in addresses})
    consents = _consent_rows(session, person.workspace_id, by_channel)
    actions = _action_rows(session, person.workspace_id, list(person.profile_ids), recipients)
    return {
        "consents": [dict(row._mapping) for row in consents],
        "actions": [dict(row._mapping) for row in actions],
    }


def erase_outbound(session: Session, person: Person, scrub: Scrubber) -> dict[str, int]:
    """Erase the person's consent addresses and actions (see the module docstring)."""
    values = {kind: scrub.originals(kind) for kind in set(ADDRESS_KIND.values())}
    by_channel = _addresses(values)
    consents = [
        {
            "cid": row.id,
            "address": scrub.placeholder(ADDRESS_KIND[row.channel], row.address),
        }
        for row in _consent_rows(session, person.workspace_id, by_channel)
    ]
    if consents:
        c = CONSENTS.c
        session.execute(
            update(CONSENTS).where(c.id == bindparam("cid")).values(address=bindparam("address")),
            consents,
        )
    recipients = sorted({v for addresses in by_channel.values() for v in addresses})
    now = utcnow()
    actions = []
    for row in _action_rows(session, person.workspace_id, list(person.profile_ids), recipients):
        kind = IDENTIFIER_OF[CHANNEL_OF[row.kind]] if row.kind in CHANNEL_OF else "recipient"
        waiting = row.status in (QUEUED, SENDING)
        new: dict[str, Any] = {
            "recipient": scrub.placeholder(kind, row.recipient),
            "payload": {},
            "last_error": ERASED_ACTION if waiting else scrub.text(row.last_error or "") or None,
            "status": SUPPRESSED if waiting else row.status,
        }
        if any(new[name] != getattr(row, name) for name in new):
            actions.append({"aid": row.id, "now": now, **{f"n_{k}": v for k, v in new.items()}})
    if actions:
        a = ACTIONS.c
        session.execute(
            update(ACTIONS)
            .where(a.id == bindparam("aid"))
            .values(
                recipient=bindparam("n_recipient"),
                payload=bindparam("n_payload", type_=a.payload.type),
                last_error=bindparam("n_last_error"),
                status=bindparam("n_status"),
                lease_until=None,
                updated_at=bindparam("now", type_=a.updated_at.type),
            ),
            actions,
        )
    return {"consents": len(consents), "actions": len(actions)}


__all__ = ["ERASED_ACTION", "erase_outbound", "export_outbound"]
