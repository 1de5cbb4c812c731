"""Erasure of a person's events: those counted in the profile, pending, failed, suppressed.

Part of :func:`identity.erasure.erase_profile` (the policy is in its module docstring and
in :mod:`identity.scrub`). The events are read and written a page at a time: on
PostgreSQL one ``UPDATE … FROM jsonb_to_recordset`` per page, on SQLite an
``executemany``, so a person with 10,000 events costs a few dozen statements.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import bindparam, select, text, update
from sqlalchemy.orm import Session

from identity.config import IdentityConfig
from identity.models import CONFLICTS, IDENTIFIERS
from identity.person import Person, event_ids
from identity.scrub import ERASED_CONTEXT, Key, Scrubber, is_placeholder, kept_properties
from identity.tombstones import SUPPRESSED
from pipeline.db import in_list
from pipeline.models import BATCH_QUEUED, BATCHES, EVENTS, FAILURES

_PAGE = 500
_CHUNK = 400


def erase_events(
    session: Session,
    person: Person,
    scrub: Scrubber,
    graves: set[Key],
    config: IdentityConfig,
    suppressed: Sequence[int],
) -> tuple[int, list[int]]:
    """Scrub the events counted in the person's profiles, their pending or failed ones, and
    those suppressed since an earlier erasure of the person (``suppressed``); returns how
    many were scrubbed, and the ids of all of them."""
    ids = event_ids(session, person)
    seen = set(ids)
    for more in (_unsettled(session, person, scrub.held, config), suppressed):
        ids += [i for i in more if i not in seen]
        seen.update(more)
    erased = 0
    e = EVENTS.c
    for start in range(0, len(ids), _PAGE):
        rows = session.execute(
            select(e.id, e.identifiers, e.traits, e.properties, e.context).where(
                in_list(session, e.id, ids[start : start + _PAGE])
            )
        ).all()
        _place(session, person.workspace_id, rows, scrub, graves, config)
        updates = []
        for event_id, identifiers, traits, properties, context in rows:
            scrub.remember(traits)
            new = {
                "ids": {
                    kind: scrub.placeholders.get((kind, value), value)
                    for kind, value in identifiers.items()
                    if is_placeholder(value) or (kind, value) in scrub.held
                },
                "traits": {},
                "props": kept_properties(properties),
                "ctx": dict(ERASED_CONTEXT),
            }
            if (identifiers, traits, properties, context) != tuple(new.values()):
                updates.append({"eid": event_id, **new})
        _write_events(session, updates)
        erased += len(updates)
    return erased, ids


def erase_failure_errors(session: Session, ids: Sequence[int], scrub: Scrubber) -> int:
    """The error text of the person's quarantined events, scrubbed of them."""
    f = FAILURES.c
    updates = []
    for start in range(0, len(ids), _PAGE):
        rows = session.execute(
            select(f.event_id, f.error).where(
                in_list(session, f.event_id, list(ids[start : start + _PAGE]))
            )
        )
        updates += [
            {"fid": event_id, "error": scrubbed}
            for event_id, error in rows
            if (scrubbed := scrub.text(error)) != error
        ]
    if updates:
        session.execute(
            update(FAILURES).where(f.event_id == bindparam("fid")).values(error=bindparam("error")),
            updates,
        )
    return len(updates)


def _place(
    session: Session,
    workspace_id: str,
    rows: Sequence[Any],
    scrub: Scrubber,
    graves: set[Key],
    config: IdentityConfig,
) -> None:
    """Give placeholders to the identifiers of the person's events that no row maps yet.

    Another spelling of a held identifier (an address before provider rules made it
    canonical) shares its placeholder. A value nobody owns (a limit refused to attach it)
    is the person's too: it is erased and buried, but left off the event. A blocked value
    or one another profile owns is someone else's and is only left off the event.
    """
    unknown: set[Key] = set()
    for _, identifiers, *_ in rows:
        for kind, value in identifiers.items():
            if is_placeholder(value) or (kind, value) in scrub.placeholders:
                continue
            canonical = (kind, config.canonical(kind, value))
            if canonical in scrub.held:
                scrub.placeholder(kind, value, same_as=canonical)
                scrub.held.add((kind, value))
                if canonical in graves:
                    graves.add((kind, value))
            else:
                unknown.add((kind, value))
    if not unknown:
        return
    spellings = {(kind, config.canonical(kind, value)) for kind, value in unknown} | unknown
    owned = _owned(session, workspace_id, spellings)
    for kind, value in sorted(unknown):
        spelled = config.canonical(kind, value)
        forms = {(kind, value), (kind, spelled)}
        if forms & owned or config.is_blocked(kind, value) or config.is_blocked(kind, spelled):
            continue
        scrub.placeholder(kind, value)
        scrub.placeholder(kind, spelled, same_as=(kind, value))
        graves |= forms


def _owned(session: Session, workspace_id: str, keys: Iterable[Key]) -> set[Key]:
    """Which of these identifiers some profile holds (one index search per kind)."""
    by_kind: dict[str, list[str]] = {}
    for kind, value in keys:
        by_kind.setdefault(kind, []).append(value)
    found: set[Key] = set()
    i = IDENTIFIERS.c
    for kind, values in sorted(by_kind.items()):
        values.sort()
        for start in range(0, len(values), _CHUNK):
            rows = session.scalars(
                select(i.value).where(
                    i.workspace_id == workspace_id,
                    i.kind == kind,
                    in_list(session, i.value, values[start : start + _CHUNK]),
                )
            )
            found.update((kind, value) for value in rows)
    return found


def _unsettled(
    session: Session, person: Person, held: set[Key], config: IdentityConfig
) -> list[int]:
    """The person's events not counted in a profile yet: pending (their batch is queued)
    or failed, found by the identifiers they carry (few rows: the backlog and failures)."""
    e, f, b = EVENTS.c, FAILURES.c, BATCHES.c
    queries = [
        select(e.id, e.identifiers)
        .join(FAILURES, f.event_id == e.id)
        .where(f.workspace_id == person.workspace_id),
        select(e.id, e.identifiers)
        .join(BATCHES, b.id == e.batch_id)
        .where(b.status == BATCH_QUEUED, b.workspace_id == person.workspace_id),
    ]
    found: set[int] = set()
    for query in queries:
        for event_id, identifiers in session.execute(query):
            for kind, value in identifiers.items():
                if (kind, value) in held or (kind, config.canonical(kind, value)) in held:
                    found.add(event_id)
                    break
    return sorted(found)


def suppressed_events(session: Session, workspace_id: str, erasure_ids: set[int]) -> list[int]:
    """Events suppressed because they carried identifiers these erasures buried."""
    if not erasure_ids:
        return []
    c = CONFLICTS.c
    rows = session.execute(
        select(c.event_id, c.detail)
        .where(c.workspace_id == workspace_id, c.reason == SUPPRESSED)
        .order_by(c.id)
    )
    return [
        event_id
        for event_id, detail in rows
        if event_id is not None and erasure_ids & set(detail.get("erasure_ids", ()))
    ]


_PG_UPDATE_EVENTS = text(
    "UPDATE events AS e SET identifiers = u.ids, traits = u.traits, properties = u.props,"
    " context = u.ctx FROM jsonb_to_recordset(CAST(:rows AS jsonb))"
    " AS u(eid bigint, ids jsonb, traits jsonb, props jsonb, ctx jsonb) WHERE e.id = u.eid"
)


def _write_events(session: Session, updates: list[dict[str, Any]]) -> None:
    """One statement per page on PostgreSQL (rows as one JSON document); SQLite executemany."""
    if not updates:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_PG_UPDATE_EVENTS, {"rows": orjson.dumps(updates).decode()})
        return
    e = EVENTS.c
    session.execute(
        update(EVENTS)
        .where(e.id == bindparam("eid"))
        .values(
            identifiers=bindparam("ids", type_=e.identifiers.type),
            traits=bindparam("traits", type_=e.traits.type),
            properties=bindparam("props", type_=e.properties.type),
            context=bindparam("ctx", type_=e.context.type),
        ),
        updates,
    )


__all__ = ["erase_events", "erase_failure_errors", "suppressed_events"]
