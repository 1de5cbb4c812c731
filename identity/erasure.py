"""GDPR erasure of a person: personal data removed, non-personal aggregates kept, tombstones left.

The person is what :func:`identity.person.find_person` finds: the surviving profile of the
id asked for (a merged-away id stands for its survivor) and every profile row merged into
it. What is exported (:mod:`identity.export`, from the same finders) is what is erased,
in one transaction: the events in :mod:`identity.erasure_events`, the placeholders and
the rewriting of text in :mod:`identity.scrub`, the rest here.

**Erased.**

* Profile rows (the survivor and every row merged into it): traits and trait times.
* Identifiers: each value becomes a placeholder ``erased:`` + 32 random hex digits, unique
  and unguessable, so no later event can carry it and nothing joins the erased profile
  again; ``linked_by`` follows. The rows stay (kind, channel, first/last seen, source
  event), so the profile's shape and ``explain`` still hold.
* Events counted in the profile, and the person's events not counted yet (pending or
  failed ones carrying one of its identifiers): identifiers become the same placeholders
  (a replay or an unmerge of the log rebuilds the same erased profile), traits are
  emptied, ``context`` becomes ``{"erased": true}`` (it holds IP addresses, user agents,
  page URLs, mailbox names), and ``properties`` keep only non-personal aggregates: the
  numbers and flags in :data:`KEPT_NUMBERS` and the short labels in :data:`KEPT_LABELS`.
  Message bodies, subjects, addresses, names, items and free properties go, and so do
  the person's mentions in a quarantined event's error text.
* Rows that mention the person: merge evidence, conflicts (identifier and detail), review
  evidence, unmerges (target, reason, result and the identifiers they keep apart, which
  take the same placeholders) and change-feed data. In them every mention of one of the
  person's identifiers becomes its placeholder and any other text holding one of them
  or one of the person's trait values becomes ``[erased]``.
* Blocking keys of probabilistic matching (``match_keys``: names, dates of birth,
  postcodes) of the person's rows are deleted.
* What other packages hold, through the ``also`` erasers the caller passes (consent
  records and outbound actions in personalization, refused mail in the email connector).

**Kept**, as non-personal aggregates: the profile ids, event and channel counts, first
and last seen, each event's message id (the dedupe key: the same message sent again stays
a duplicate instead of bringing the person back), channel, type, source and times, and
order totals, currencies, call durations and similar numbers.

**Tombstones.** Each erased identifier the person alone held (not one flagged ``shared``,
not a blocked value, not one another profile owns) leaves a tombstone: its keyed hash
(:mod:`identity.tombstones`). With ``ECRM_ERASURE_SUPPRESS=true`` a later event carrying
one is stored but counted in no profile and listed as ``suppressed``; by default it is
resolved as usual and founds a new profile (a new start, nothing of the old is joined).

**Idempotent.** Placeholders, emptied rows and scrubbed events are recognised and left
alone: erasing again erases only what arrived since (and writes an audit row and a
``profile.erased`` change only then). The change data holds counts and ids, never PII.

**Concurrency.** The person's profile rows are locked (PostgreSQL ``FOR UPDATE``; SQLite
holds its write lock) and their ``updated_at`` moves, so a worker that planned a batch
from what it read before fails its guard and plans again. On PostgreSQL a worker that read
the identifiers just before the erasure committed may still add one event; the caller
runs the erasure twice (:func:`workers.api_privacy.erase`), the second pass catching it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.orm import Session

from identity.changes import record_change
from identity.config import IdentityConfig
from identity.erasure_events import erase_events, erase_failure_errors, suppressed_events
from identity.models import (
    CHANGES,
    CONFLICTS,
    IDENTIFIERS,
    MATCH_KEYS,
    MERGES,
    PROFILES,
    REVIEWS,
    SPLIT_MEMBERS,
    SPLITS,
)
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
from identity.privacy_models import ERASURES, TOMBSTONES
from identity.scrub import ERASED, Key, Scrubber, is_placeholder, kept_properties
from identity.tombstones import digest, find_tombstones, key_id
from pipeline import dialect_insert, utcnow
from pipeline.db import in_list
from pipeline.errors import ValidationError

#: the counts an erasure reports (the ``also`` erasers add their own)
COUNTS = (
    "profiles",
    "traits",
    "identifiers",
    "tombstones",
    "events",
    "failures",
    "match_keys",
    "merges",
    "conflicts",
    "reviews",
    "unmerges",
    "changes",
)

#: the per-trait documents of a profile row (values, times, and where a schema has them,
#: sources), all emptied
_TRAIT_COLUMNS = ("traits", "trait_times", "trait_sources")
_CHUNK = 400
_SHARED = "shared"


class ProfileNotFound(ValidationError):
    """No profile with that id in the workspace."""


#: an erasure of what another package holds about the person: -> {name: rows erased}
Eraser = Callable[[Session, Person, Scrubber], Mapping[str, int]]


@dataclass(frozen=True)
class ErasureResult:
    """What one erasure did (ids and counts only)."""

    person: Person
    #: this erasure's audit row; None when nothing was left to erase
    erasure_id: int | None
    counts: Mapping[str, int]
    #: the person's first erasure (this one, or an earlier one) and when it happened
    first_erasure_id: int
    first_erased_at: datetime
    key_id: str

    def view(self) -> dict[str, Any]:
        """The summary the API answers and the CLI prints."""
        return {
            "profile_id": self.person.profile_id,
            "requested_id": self.person.requested_id,
            "profile_ids": list(self.person.profile_ids),
            "erasure_id": self.erasure_id,
            "already_erased": self.erasure_id != self.first_erasure_id,
            "first_erasure_id": self.first_erasure_id,
            "erased_at": self.first_erased_at.isoformat(),
            "counts": dict(self.counts),
            "key_id": self.key_id,
        }


def erase_profile(
    session: Session,
    workspace_id: str,
    profile_id: str,
    *,
    key: bytes,
    config: IdentityConfig | None = None,
    requested_by: str | None = None,
    reason: str | None = None,
    also: Sequence[Eraser] = (),
    now: datetime | None = None,
) -> ErasureResult:
    """Erase the person behind ``profile_id`` (see the module docstring) in the caller's
    transaction; raises :class:`ProfileNotFound` for an unknown id."""
    config = config or IdentityConfig()
    now = now or utcnow()
    person = find_person(session, workspace_id, profile_id, lock=True)
    if person is None:
        raise ProfileNotFound("profile_id", f"no profile {profile_id!r}")
    counts: Counter[str] = Counter({name: 0 for name in COUNTS})
    scrub = Scrubber()
    graves: set[Key] = set()
    identifiers = identifier_rows(session, person)
    for row in identifiers:
        pair = (row["kind"], row["value"])
        if not is_placeholder(pair[1]):
            scrub.placeholder(*pair)
            scrub.held.add(pair)
            if row["sharing"] != _SHARED:  # a family's phone is not one person's to bury
                graves.add(pair)
    earlier = erasures_of(session, person)
    suppressed = suppressed_events(session, workspace_id, {e["id"] for e in earlier})
    counts["events"], events = erase_events(session, person, scrub, graves, config, suppressed)
    counts.update(_erase_profiles(session, person, scrub, now))
    counts["failures"] = erase_failure_errors(session, events, scrub)
    counts["identifiers"] = _rewrite(
        session,
        IDENTIFIERS,
        identifiers,
        {
            "value": lambda row: scrub.placeholders.get((row["kind"], row["value"]), row["value"]),
            "linked_by": lambda row: scrub.text(row["linked_by"]) if row["linked_by"] else None,
        },
    )
    counts["match_keys"] = _delete_match_keys(session, person)
    counts["merges"] = _rewrite(
        session,
        MERGES,
        merges_of(session, person),
        {"evidence": lambda r: scrub.doc(r["evidence"])},
    )
    conflicts = [dict(r._mapping) for r in conflicts_of(session, person, list(scrub.placeholders))]
    counts["conflicts"] = _rewrite(
        session,
        CONFLICTS,
        conflicts,
        {
            "identifier": lambda r: scrub.text(r["identifier"]) if r["identifier"] else None,
            "detail": lambda r: scrub.doc(r["detail"]),
        },
    )
    counts["reviews"] = _rewrite(
        session,
        REVIEWS,
        reviews_of(session, person),
        {"evidence": lambda r: scrub.doc(r["evidence"])},
    )
    counts["unmerges"] = _erase_splits(session, person, scrub)
    counts["changes"] = _rewrite(
        session, CHANGES, changes_of(session, person), {"data": lambda r: scrub.doc(r["data"])}
    )
    for eraser in also:
        counts.update(eraser(session, person, scrub))
    digests = {digest(key, kind, value): kind for kind, value in sorted(graves)}
    known = find_tombstones(session, workspace_id, digests)
    fresh = {d: kind for d, kind in digests.items() if d not in known}
    counts["tombstones"] = len(fresh)
    if earlier and not any(counts.values()):
        first = earlier[0]
        return ErasureResult(
            person, None, dict(counts), first["id"], first["created_at"], key_id(key)
        )
    erasure_id = _record(session, person, counts, key_id(key), requested_by, reason, scrub, now)
    if fresh:
        session.execute(
            dialect_insert(session)(TOMBSTONES).on_conflict_do_nothing(
                index_elements=["workspace_id", "digest"]
            ),
            [
                {
                    "workspace_id": workspace_id,
                    "digest": value,
                    "kind": kind,
                    "key_id": key_id(key),
                    "erasure_id": erasure_id,
                    "created_at": now,
                }
                for value, kind in sorted(fresh.items())
            ],
        )
    record_change(
        session,
        workspace_id,
        "profile.erased",
        person.profile_id,
        {
            "erasure_id": erasure_id,
            "requested_id": person.requested_id,
            "profile_ids": list(person.profile_ids),
            "counts": dict(counts),
        },
    )
    first_id, first_at = (
        (earlier[0]["id"], earlier[0]["created_at"]) if earlier else (erasure_id, now)
    )
    return ErasureResult(person, erasure_id, dict(counts), first_id, first_at, key_id(key))


def _erase_profiles(
    session: Session, person: Person, scrub: Scrubber, now: datetime
) -> dict[str, int]:
    """Empty the traits of every profile row of the person; move each row's ``updated_at``
    (a worker's plan read before then fails its guard and is made again)."""
    rows = profile_rows(session, person)
    changed = traits = 0
    updates = []
    for row in rows:
        scrub.remember(row["traits"])
        if row["traits"] or row["trait_times"]:
            changed += 1
            traits += len(row["traits"])
        stamp = max(now, row["updated_at"] + timedelta(microseconds=1))
        updates.append({"pid": row["id"], "empty": {}, "stamp": stamp})
    p = PROFILES.c
    # every per-trait document (values, times, and where a schema has them, sources)
    emptied = {name: bindparam("empty", type_=p[name].type) for name in _TRAIT_COLUMNS if name in p}
    session.execute(
        update(PROFILES)
        .where(p.id == bindparam("pid"))
        .values(**emptied, updated_at=bindparam("stamp", type_=p.updated_at.type)),
        updates,
    )
    return {"profiles": changed, "traits": traits}


def _rewrite(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    columns: Mapping[str, Callable[[Mapping[str, Any]], Any]],
) -> int:
    """Update the rows (by ``id``) whose columns the functions change; how many changed."""
    updates = []
    for row in rows:
        new = {name: compute(row) for name, compute in columns.items()}
        if any(new[name] != row[name] for name in columns):
            updates.append({"b_id": row["id"], **{f"b_{name}": v for name, v in new.items()}})
    if updates:
        session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values({name: bindparam(f"b_{name}", type_=table.c[name].type) for name in columns}),
            updates,
        )
    return len(updates)


def _erase_splits(session: Session, person: Person, scrub: Scrubber) -> int:
    """Unmerges of the person's profiles, and the sides naming its identifiers anywhere."""
    changed = _rewrite(
        session,
        SPLITS,
        splits_of(session, person),
        {
            "target": lambda r: scrub.text(r["target"]),
            "reason": lambda r: scrub.text(r["reason"]) if r["reason"] else None,
            "result": lambda r: scrub.doc(r["result"]),
        },
    )
    sm = SPLIT_MEMBERS.c
    moves = []
    for kind in sorted({kind for kind, _ in scrub.placeholders}):
        values = sorted(scrub.originals(kind))
        for start in range(0, len(values), _CHUNK):
            rows = session.execute(
                select(sm.split_id, sm.value).where(
                    sm.workspace_id == person.workspace_id,
                    sm.kind == kind,
                    in_list(session, sm.value, values[start : start + _CHUNK]),
                )
            )
            moves += [
                {"sid": sid, "k": kind, "old": value, "new": scrub.placeholders[(kind, value)]}
                for sid, value in rows
            ]
    if moves:
        session.execute(
            update(SPLIT_MEMBERS)
            .where(
                sm.split_id == bindparam("sid"),
                sm.kind == bindparam("k"),
                sm.value == bindparam("old"),
            )
            .values(value=bindparam("new")),
            moves,
        )
    return changed + len(moves)


def _delete_match_keys(session: Session, person: Person) -> int:
    """Blocking keys (names, dates of birth, postcodes) of the person's rows."""
    result = session.execute(
        delete(MATCH_KEYS).where(
            MATCH_KEYS.c.workspace_id == person.workspace_id,
            in_list(session, MATCH_KEYS.c.profile_id, list(person.profile_ids)),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _record(
    session: Session,
    person: Person,
    counts: Mapping[str, int],
    key_name: str,
    requested_by: str | None,
    reason: str | None,
    scrub: Scrubber,
    now: datetime,
) -> int:
    """The audit row of this erasure (the reason scrubbed like everything else); its id."""
    inserted = session.execute(
        ERASURES.insert().returning(ERASURES.c.id),
        {
            "workspace_id": person.workspace_id,
            "profile_id": person.profile_id,
            "requested_id": person.requested_id,
            "profile_ids": list(person.profile_ids),
            "requested_by": scrub.text(requested_by)[:120] if requested_by else None,
            "reason": scrub.text(reason)[:500] if reason else None,
            "counts": dict(counts),
            "key_id": key_name,
            "created_at": now,
        },
    )
    return int(inserted.scalar_one())


__all__ = [
    "COUNTS",
    "ERASED",
    "Eraser",
    "ErasureResult",
    "ProfileNotFound",
    "Scrubber",
    "erase_profile",
    "is_placeholder",
    "kept_properties",
]
