"""Labels in GDPR export and erasure (identity's extension points, like the loyalty ledger).

Erasure policy: unlike loyalty points (an account, kept as an aggregate), tags, segments
and rule-set traits *describe the person* ("vip", "expecting", a favourite shop), so every
label row of the person's profiles is deleted, and the change-feed entries that announced
them (``profile.tag_added`` …) keep their type and time but lose their data. The trait
values are first noted in the scrubber, so the erasers that run after this one (loyalty
reasons, say) scrub mentions of them too: pass :func:`erase_labels` first.
Export: the labels as they are now and every row, oldest first.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from identity.models import CHANGES
from identity.person import Person
from identity.scrub import Scrubber
from personalization.labels.models import LABELS
from personalization.labels.names import TRAIT
from personalization.labels.store import CHANGE_TYPES, labels_of
from pipeline.db import in_list

_CHUNK = 400

#: what the data of an erased label change becomes
ERASED_CHANGE: dict[str, Any] = {"erased": True}


def export_labels(session: Session, person: Person) -> dict[str, Any]:
    """The person's labels now (as on the survivor) and every label row of their profiles."""
    t = LABELS.c
    rows = session.execute(
        select(LABELS)
        .where(
            t.workspace_id == person.workspace_id,
            in_list(session, t.profile_id, list(person.profile_ids)),
        )
        .order_by(t.id)
    )
    current = labels_of(session, person.workspace_id, [person.profile_id])[person.profile_id]
    return {"labels": {"current": current.view(), "history": [dict(row._mapping) for row in rows]}}


def erase_labels(session: Session, person: Person, scrub: Scrubber) -> dict[str, int]:
    """Delete the person's label rows and empty the data of their label changes."""
    t, c = LABELS.c, CHANGES.c
    ids = list(person.profile_ids)
    for value in session.scalars(
        select(t.value).where(
            t.workspace_id == person.workspace_id,
            in_list(session, t.profile_id, ids),
            t.kind == TRAIT,
        )
    ):
        scrub.remember(value)
    deleted = session.execute(
        delete(LABELS).where(
            t.workspace_id == person.workspace_id, in_list(session, t.profile_id, ids)
        )
    )
    changes = [
        change_id
        for change_id, data in session.execute(
            select(c.id, c.data).where(
                c.workspace_id == person.workspace_id,
                in_list(session, c.profile_id, ids),
                c.type.in_(CHANGE_TYPES),
            )
        )
        if data != ERASED_CHANGE
    ]
    for start in range(0, len(changes), _CHUNK):
        chunk = changes[start : start + _CHUNK]
        session.execute(
            update(CHANGES).where(in_list(session, c.id, chunk)).values(data=ERASED_CHANGE)
        )
    return {"labels": int(deleted.rowcount), "label_changes": len(changes)}  # type: ignore[attr-defined]


__all__ = ["ERASED_CHANGE", "erase_labels", "export_labels"]
