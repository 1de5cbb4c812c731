"""GDPR export: everything the hub holds about one person, as one JSON document.

The person is the surviving profile of the id asked for (a merged-away id stands for its
survivor) together with every profile row merged into it. The document holds their
profile rows (traits and when each was set), identifiers (channel, first/last seen, and
where each came from: the event that attached it, the identifier it was linked by, the
profile it first joined), merges, conflicts, reviews, unmerges, changes and erasures
involving them, further sections the caller adds (consent and outbound actions, from
personalization), and last every event counted in the profile (``profile_events``), in
the order they happened.

Why streamed: a person may have many events. :func:`export_chunks` yields the document as
bytes, the events a page at a time (two queries per page of :data:`EVENT_PAGE`), so
neither the hub nor the client holds more than a page, and 10,000 events cost about 40
queries, not 10,000. The other sections are small and are read first. On PostgreSQL the
caller should read in one ``REPEATABLE READ`` transaction (:func:`consistent_read`), so
the document is one snapshot; SQLite's read transactions are snapshots already.

The person and the rows involving them are found by :mod:`identity.person`, as for
erasure: what is exported is exactly what is erased.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from identity.models import PROFILE_EVENTS, TYPE_COUNTS
from identity.person import (
    Person,
    changes_of,
    conflicts_of,
    erasures_of,
    find_person,
    identifier_rows,
    merges_of,
    profile_rows,
    reviews_of,
    splits_of,
)
from pipeline import utcnow
from pipeline.db import in_list
from pipeline.events import event_view, events_by_id
from pipeline.models import EVENTS

EXPORT_VERSION = 1

#: events per page of the export (one query for the page's ids, one for the events)
EVENT_PAGE = 500

_CHUNK = 400

#: a further section of the export: (session, person) -> {name: JSON-ready value}
Section = Callable[[Session, Person], Mapping[str, Any]]


def export_head(
    session: Session, person: Person, sections: Sequence[Section] = ()
) -> dict[str, Any]:
    """Everything held about the person except the events (see :func:`export_chunks`)."""
    identifiers = identifier_rows(session, person)
    conflicts = conflicts_of(session, person)
    message_ids = _message_ids(
        session,
        person.workspace_id,
        {row["source_event_id"] for row in identifiers if row["source_event_id"]}
        | {row.event_id for row in conflicts if row.event_id},
    )
    for row in identifiers:
        event_id = row.pop("source_event_id")
        row["source_event"] = message_ids.get(event_id) if event_id else None
        row.pop("id")
    counts = TYPE_COUNTS.c
    channels = session.execute(
        select(counts.channel, func.sum(counts.count))
        .where(counts.workspace_id == person.workspace_id, counts.profile_id == person.profile_id)
        .group_by(counts.channel)
    ).all()
    profiles = profile_rows(session, person)
    head: dict[str, Any] = {
        "export_version": EXPORT_VERSION,
        "generated_at": utcnow(),
        "workspace_id": person.workspace_id,
        "requested_id": person.requested_id,
        "profile_id": person.profile_id,
        "profile": {**profiles[0], "channels": dict(sorted(channels))},
        "merged_profiles": profiles[1:],
        "identifiers": identifiers,
        "merges": merges_of(session, person),
        "conflicts": [
            {**dict(row._mapping), "event": message_ids.get(row.event_id)} for row in conflicts
        ],
        "reviews": reviews_of(session, person),
        "unmerges": splits_of(session, person),
        "changes": changes_of(session, person),
        "erasures": erasures_of(session, person),
    }
    for section in sections:
        head.update(section(session, person))
    return head


def _message_ids(session: Session, workspace_id: str, event_ids: set[int]) -> dict[int, str]:
    """The message id of each of these events (the key the API shows events by)."""
    found: dict[int, str] = {}
    ordered = sorted(event_ids)
    for start in range(0, len(ordered), _CHUNK):
        rows = session.execute(
            select(EVENTS.c.id, EVENTS.c.message_id).where(
                EVENTS.c.workspace_id == workspace_id,
                in_list(session, EVENTS.c.id, ordered[start : start + _CHUNK]),
            )
        )
        found.update({event_id: message_id for event_id, message_id in rows})
    return found


def event_pages(
    session: Session, person: Person, *, page: int = EVENT_PAGE
) -> Iterator[list[dict[str, Any]]]:
    """The events counted in the person's profiles, a page at a time, in the order they
    happened (keyset pagination over the timeline index: two queries per page)."""
    pe = PROFILE_EVENTS.c
    after: tuple[datetime, int] | None = None
    while True:
        query = select(pe.event_id, pe.occurred_at).where(
            pe.workspace_id == person.workspace_id,
            in_list(session, pe.profile_id, list(person.profile_ids)),
        )
        if after is not None:
            at, last = after
            query = query.where(
                or_(pe.occurred_at > at, and_(pe.occurred_at == at, pe.event_id > last))
            )
        rows = session.execute(query.order_by(pe.occurred_at, pe.event_id).limit(page)).all()
        if not rows:
            return
        records = events_by_id(session, person.workspace_id, [event_id for event_id, _ in rows])
        yield [event_view(record) for record in records]
        if len(rows) < page:
            return
        after = (rows[-1][1], rows[-1][0])


def export_chunks(
    session: Session,
    person: Person,
    sections: Sequence[Section] = (),
    *,
    page: int = EVENT_PAGE,
) -> Iterator[bytes]:
    """The export document as JSON bytes: the head, then the events a page at a time."""
    head = orjson.dumps(export_head(session, person, sections), default=str)
    yield head[:-1] + b',"events":['
    count = 0
    for events in event_pages(session, person, page=page):
        body = b",".join(orjson.dumps(event, default=str) for event in events)
        yield (b"," if count else b"") + body
        count += len(events)
    yield b'],"event_count":' + str(count).encode() + b"}"


def consistent_read(session: Session) -> None:
    """Make the session's transaction one snapshot (PostgreSQL ``REPEATABLE READ``).

    Call before anything else is read; SQLite's read transactions are snapshots already.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


__all__ = [
    "EVENT_PAGE",
    "EXPORT_VERSION",
    "Person",
    "Section",
    "consistent_read",
    "event_pages",
    "export_chunks",
    "export_head",
    "find_person",
]
