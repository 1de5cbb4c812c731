"""The loyalty ledger in GDPR export and erasure (identity's extension points).

Erasure policy: the ledger is an account of points, not of the person, so every entry
keeps its kind, points, source, event and times (balances, tiers and the programme's
totals stay true); only the free text of ``reason`` is scrubbed of the person's
identifiers and trait values (an operator may have written "refund for Ann Smith").
Export: every entry of the person's profiles and their account rows (tier, since when).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from identity.person import Person
from identity.scrub import Scrubber
from personalization.loyalty.models import ACCOUNTS, ENTRIES
from pipeline.db import in_list


def export_loyalty(session: Session, person: Person) -> dict[str, Any]:
    """The person's ledger entries and accounts."""
    e, a = ENTRIES.c, ACCOUNTS.c
    profiles = list(person.profile_ids)
    entries = session.execute(
        select(ENTRIES)
        .where(e.workspace_id == person.workspace_id, in_list(session, e.profile_id, profiles))
        .order_by(e.id)
    )
    accounts = session.execute(
        select(ACCOUNTS).where(
            a.workspace_id == person.workspace_id, in_list(session, a.profile_id, profiles)
        )
    )
    return {
        "loyalty": {
            "entries": [dict(row._mapping) for row in entries],
            "accounts": [dict(row._mapping) for row in accounts],
        }
    }


def erase_loyalty(session: Session, person: Person, scrub: Scrubber) -> dict[str, int]:
    """Scrub the reasons of the person's ledger entries; how many changed."""
    e = ENTRIES.c
    rows = session.execute(
        select(e.id, e.reason).where(
            e.workspace_id == person.workspace_id,
            in_list(session, e.profile_id, list(person.profile_ids)),
        )
    ).all()
    changed = [
        {"eid": entry_id, "r": scrubbed}
        for entry_id, reason in rows
        if (scrubbed := scrub.text(reason)) != reason
    ]
    if changed:
        session.execute(
            update(ENTRIES).where(e.id == bindparam("eid")).values(reason=bindparam("r")), changed
        )
    return {"loyalty_reasons": len(changed)}


__all__ = ["erase_loyalty", "export_loyalty"]
