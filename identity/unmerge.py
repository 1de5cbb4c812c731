"""Unmerge: split a profile by recomputing it from the event log with one link forbidden.

An operator names what does not belong: one identifier (``identifier``: an address typed
on the wrong receipt) or the events of one source (``source``: a POS import that mapped
loyalty cards wrongly). That becomes a rule, an :class:`~identity.models.IdentitySplit`,
with two sides of identifiers that may never again be in one profile:

* ``identifier``: side ``a`` is that identifier, side ``b`` every other one the profile holds;
* ``source``: side ``a`` the identifiers only that source's events carry, side ``b`` all
  the others. An event of that source that also carries a kept identifier (reported as
  ``bridging``) stays with the kept profile when that identifier is its strongest.

Why a replay rather than moving rows: merges cascade, traits are "most recent wins" over
events, counts come from events. The profile's cluster (it and every profile merged into
it) is deleted and its events are resolved again, in log order, by the same code the
workers run (:func:`identity.resolve.plan_events`), with the rule in place. The result is
what a fresh replay of the log with the rule in place gives (tested), and the rule also
holds for every later event: a join of both sides is refused as a ``kept_apart`` conflict.

Why the replay runs twice: profile ids are kept. The first pass (rolled back) shows which
profile each founding event becomes; the second hands the requested profile's id to the
part that holds the strongest identifier of side ``b`` (what was kept), and the cluster's
other old ids to the other parts, oldest first. Old ids no part needs redirect
(``merged_into``) to the part that now holds what they first held. The merges the replay
recomputed are marked ``undone_by`` the split; the replay audits its own merges.

Left to the caller: the transaction (one write transaction: on PostgreSQL the profile is
locked ``FOR UPDATE``, so a worker resolving the same people waits, then plans again).
Not recomputed: profiles outside the cluster that a refused join kept apart from it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from identity.announce import UPDATED
from identity.changes import record_change, record_changes
from identity.config import IdentityConfig
from identity.graph import Key, key_text
from identity.models import (
    CONFLICTS,
    IDENTIFIERS,
    MATCH_KEYS,
    MERGES,
    PROFILE_EVENTS,
    PROFILES,
    REVIEWS,
    SPLITS,
    TYPE_COUNTS,
)
from identity.resolve import link_keys, new_profile_id, owners_of, plan_events, write_plan
from identity.splits import add_split
from identity.views import current_profile, merged_members, profiles_of_events
from pipeline import StoredEvent, ValidationError, utcnow
from pipeline.db import in_list
from pipeline.models import EVENTS
from pipeline.processing import load_events

MODES = ("identifier", "source")
UNMERGED = "profile.unmerged"
#: events replayed per plan (as a worker's batch)
REPLAY_BATCH = 500
_CHUNK = 400


class ProfileNotFound(ValidationError):
    """No profile with that id in the workspace."""


@dataclass(frozen=True)
class _Cluster:
    """The profile to unmerge, the profiles merged into it, what it holds and its events."""

    profile_id: str
    ids: list[str]
    created: dict[str, datetime]
    identifiers: dict[Key, dict[str, Any]]
    events: list[StoredEvent]


def unmerge(
    session: Session,
    workspace_id: str,
    profile_id: str,
    *,
    identifier: Key | None = None,
    source: str | None = None,
    reason: str | None = None,
    requested_by: str | None = None,
    config: IdentityConfig,
) -> dict[str, Any]:
    """Split ``identifier`` or the events of ``source`` off the profile; what came of it.

    Raises :class:`ProfileNotFound`, or :class:`ValidationError` naming the field when
    there is nothing to split.
    """
    if (identifier is None) == (source is None):
        raise ValidationError("identifier", "name either an identifier or a source")
    profile = current_profile(session, workspace_id, profile_id)
    if profile is None:
        raise ProfileNotFound("profile_id", f"no profile {profile_id!r}")
    cluster = _read_cluster(session, workspace_id, profile.id)
    if identifier is not None:
        identifier = (identifier[0], config.canonical(*identifier))
        mode, target = "identifier", key_text(identifier)
        side_a, side_b, bridging = _identifier_sides(cluster, identifier)
    else:
        assert source is not None
        mode, target = "source", source
        side_a, side_b, bridging = _source_sides(session, cluster, source, config)
    now = utcnow()
    split_id = add_split(
        session,
        workspace_id,
        profile_id=cluster.profile_id,
        mode=mode,
        target=target,
        sides={"a": side_a, "b": side_b},
        reason=reason,
        requested_by=requested_by,
        now=now,
    )
    shared = {key for key, row in cluster.identifiers.items() if row["sharing"] == "shared"}
    _clear(session, workspace_id, cluster, split_id)
    ids = iter(_plan_ids(session, workspace_id, cluster, side_b, shared, config))
    _replay(
        session,
        workspace_id,
        cluster.events,
        shared,
        config,
        lambda: next(ids, None) or new_profile_id(),
    )
    parts = _restore(session, workspace_id, cluster, now)
    result = {
        "split_id": split_id,
        "profile_id": cluster.profile_id,
        "mode": mode,
        "target": target,
        "events": len(cluster.events),
        "profiles": parts,
        "split_off": [p["id"] for p in parts if p["id"] != cluster.profile_id],
        "redirected": sorted(set(cluster.ids) - {p["id"] for p in parts}),
        "bridging": sorted(key_text(key) for key in bridging),
    }
    session.execute(update(SPLITS).where(SPLITS.c.id == split_id).values(result=result))
    record_change(session, workspace_id, UNMERGED, cluster.profile_id, result)
    # each part's current state, for subscribers that keep profiles by id
    parts_changed = [(UPDATED, part["id"], {"changed": ["unmerged"]}) for part in parts]
    record_changes(session, workspace_id, parts_changed)
    return result


def _read_cluster(session: Session, workspace_id: str, profile_id: str) -> _Cluster:
    """The profile (locked on PostgreSQL), every profile merged into it, its identifiers."""
    if session.get_bind().dialect.name == "postgresql":  # SQLite: the write lock is held
        session.execute(
            select(PROFILES.c.id)
            .where(PROFILES.c.workspace_id == workspace_id, PROFILES.c.id == profile_id)
            .with_for_update()
        ).all()
    members = sorted(merged_members(session, workspace_id, [profile_id]))
    created = {
        pid: at
        for pid, at in session.execute(
            select(PROFILES.c.id, PROFILES.c.created_at).where(
                PROFILES.c.workspace_id == workspace_id,
                in_list(session, PROFILES.c.id, members),
            )
        )
    }
    ids = IDENTIFIERS.c
    identifiers = {
        (row.kind, row.value): dict(row._mapping)
        for row in session.execute(
            select(ids.kind, ids.value, ids.sharing, ids.attached_to).where(
                ids.workspace_id == workspace_id, ids.profile_id == profile_id
            )
        )
    }
    event_ids = session.scalars(
        select(PROFILE_EVENTS.c.event_id).where(
            PROFILE_EVENTS.c.workspace_id == workspace_id,
            PROFILE_EVENTS.c.profile_id == profile_id,
        )
    ).all()
    return _Cluster(
        profile_id, sorted(created), created, identifiers, load_events(session, event_ids)
    )


def _identifier_sides(cluster: _Cluster, identifier: Key) -> tuple[set[Key], set[Key], set[Key]]:
    if identifier not in cluster.identifiers:
        raise ValidationError(
            "identifier", f"profile {cluster.profile_id} holds no {key_text(identifier)}"
        )
    others = {key for key, row in cluster.identifiers.items() if row["sharing"] != "shared"}
    others.discard(identifier)
    if not others:
        raise ValidationError("identifier", "it is the only identifier: nothing would remain")
    return {identifier}, others, set()


def _source_sides(
    session: Session, cluster: _Cluster, source: str, config: IdentityConfig
) -> tuple[set[Key], set[Key], set[Key]]:
    ids = [event.id for event in cluster.events]
    from_source: set[int] = set()
    for start in range(0, len(ids), _CHUNK):
        from_source.update(
            session.scalars(
                select(EVENTS.c.id).where(
                    in_list(session, EVENTS.c.id, ids[start : start + _CHUNK]),
                    EVENTS.c.source == source,
                )
            )
        )
    if not from_source:
        raise ValidationError("source", f"no event of profile {cluster.profile_id} is from it")
    held = {key for key, row in cluster.identifiers.items() if row["sharing"] != "shared"}
    theirs: set[Key] = set()
    others: set[Key] = set()
    for event in cluster.events:
        own = config.email_rules.identifiers(event.identifiers).items()
        keys = {*own, *link_keys(event, config.email_rules)} & held
        (theirs if event.id in from_source else others).update(keys)
    side_a, side_b = theirs - others, held - (theirs - others)
    if not side_a:
        raise ValidationError(
            "source", "every identifier its events carry is also carried by other sources"
        )
    if not side_b:
        raise ValidationError("source", "all the profile's identifiers come from it")
    return side_a, side_b, theirs & others


def _clear(session: Session, workspace_id: str, cluster: _Cluster, split_id: int) -> None:
    """Delete what the cluster's events derived (the audit of its merges stays, undone)."""
    pid, event_ids = cluster.profile_id, [event.id for event in cluster.events]
    for start in range(0, len(event_ids), _CHUNK):
        part = event_ids[start : start + _CHUNK]
        session.execute(
            delete(PROFILE_EVENTS).where(in_list(session, PROFILE_EVENTS.c.event_id, part))
        )
        session.execute(delete(CONFLICTS).where(in_list(session, CONFLICTS.c.event_id, part)))
        session.execute(
            delete(REVIEWS).where(
                in_list(session, REVIEWS.c.event_id, part), REVIEWS.c.status == "pending"
            )
        )
    for table in (IDENTIFIERS, TYPE_COUNTS, MATCH_KEYS):
        session.execute(
            delete(table).where(table.c.workspace_id == workspace_id, table.c.profile_id == pid)
        )
    session.execute(
        update(MERGES)
        .where(
            MERGES.c.workspace_id == workspace_id,
            in_list(session, MERGES.c.survivor_id, cluster.ids),
            MERGES.c.undone_by.is_(None),
        )
        .values(undone_by=split_id)
    )
    session.execute(
        delete(PROFILES).where(
            PROFILES.c.workspace_id == workspace_id, in_list(session, PROFILES.c.id, cluster.ids)
        )
    )


def _replay(
    session: Session,
    workspace_id: str,
    events: Sequence[StoredEvent],
    shared: set[Key],
    config: IdentityConfig,
    next_id: Callable[[], str],
) -> None:
    """Resolve the events again, in log order, in batches as a worker would."""
    for start in range(0, len(events), REPLAY_BATCH):
        plan = plan_events(
            session,
            workspace_id,
            events[start : start + REPLAY_BATCH],
            lock=True,
            config=config,
            id_source=next_id,
            shared_keys=shared,
        )
        plan.changes = []  # announced once the parts stand: profile.unmerged, then updates
        write_plan(session, plan)


def _plan_ids(
    session: Session,
    workspace_id: str,
    cluster: _Cluster,
    side_b: set[Key],
    shared: set[Key],
    config: IdentityConfig,
) -> list[str]:
    """The id each profile the replay founds gets, in founding order (see module docstring).

    A first replay, rolled back, with fresh ids (ascending, like the founding order) shows
    which founders end up as parts (the others are merged into one). The part holding the
    strongest kept identifier gets the profile's id, the other parts the cluster's other
    old ids, oldest first; merged founders get fresh ids, larger than any old one, so in
    the second replay every merge keeps the same survivor as in the first.
    """
    founded: list[str] = []

    def fresh() -> str:
        founded.append(new_profile_id())
        return founded[-1]

    nested = session.begin_nested()
    try:
        _replay(session, workspace_id, cluster.events, shared, config, fresh)
        parent: dict[str, str] = {}
        held: dict[str, set[Key]] = {}
        for start in range(0, len(founded), _CHUNK):
            part = founded[start : start + _CHUNK]
            rows = session.execute(
                select(PROFILES.c.id, PROFILES.c.merged_into).where(
                    in_list(session, PROFILES.c.id, part), PROFILES.c.merged_into.is_not(None)
                )
            )
            parent.update({pid: into for pid, into in rows})
        roots = {pid: _root(pid, parent) for pid in founded}
        for start in range(0, len(founded), _CHUNK):
            part = sorted(set(roots.values()))[start : start + _CHUNK]
            for pid, kind, value in session.execute(
                select(IDENTIFIERS.c.profile_id, IDENTIFIERS.c.kind, IDENTIFIERS.c.value).where(
                    in_list(session, IDENTIFIERS.c.profile_id, part)
                )
            ):
                held.setdefault(pid, set()).add((kind, value))
    finally:
        nested.rollback()
    order = {pid: index for index, pid in enumerate(founded)}
    ranked = [
        (min(config.rank(kind) for kind, _ in held[root] & side_b), order.get(root, -1), root)
        for root in set(roots.values())
        if held.get(root, set()) & side_b
    ]
    kept = min(ranked)[2] if ranked else None
    spare = sorted(set(cluster.ids) - {cluster.profile_id}, reverse=True)
    ids = []
    for pid in founded:
        if roots[pid] != pid:
            ids.append(new_profile_id())
        elif pid == kept:
            ids.append(cluster.profile_id)
        else:
            ids.append(spare.pop() if spare else new_profile_id())
    return ids


def _root(profile_id: str, parent: dict[str, str]) -> str:
    while profile_id in parent:
        profile_id = parent[profile_id]
    return profile_id


def _restore(
    session: Session, workspace_id: str, cluster: _Cluster, now: datetime
) -> list[dict[str, Any]]:
    """Old ids keep their creation time, flags come back, unused ids redirect; the parts."""
    placed = profiles_of_events(session, workspace_id, [event.id for event in cluster.events])
    counts = Counter(placed.values())
    live = set(
        session.scalars(
            select(PROFILES.c.id).where(
                PROFILES.c.workspace_id == workspace_id,
                in_list(session, PROFILES.c.id, cluster.ids),
            )
        )
    )
    for pid in sorted(live):
        session.execute(
            update(PROFILES).where(PROFILES.c.id == pid).values(created_at=cluster.created[pid])
        )
    flags = [
        {"k": kind, "v": value, "s": row["sharing"]}
        for (kind, value), row in sorted(cluster.identifiers.items())
        if row["sharing"]
    ]
    if flags:
        session.execute(
            update(IDENTIFIERS)
            .where(
                IDENTIFIERS.c.workspace_id == workspace_id,
                IDENTIFIERS.c.kind == bindparam("k"),
                IDENTIFIERS.c.value == bindparam("v"),
            )
            .values(sharing=bindparam("s")),
            flags,
        )
    owners = {
        key: owner.profile_id
        for key, owner in owners_of(session, workspace_id, cluster.identifiers).items()
    }
    main = counts.most_common(1)[0][0] if counts else None
    redirects = []
    for pid in sorted(set(cluster.ids) - live):
        first_held = Counter(
            owners[key]
            for key, row in cluster.identifiers.items()
            if row["attached_to"] == pid and key in owners
        )
        target = first_held.most_common(1)[0][0] if first_held else main
        if target is None:
            continue
        at = cluster.created[pid]
        redirects.append(
            {
                "id": pid,
                "workspace_id": workspace_id,
                "traits": {},
                "trait_times": {},
                "first_seen_at": at,
                "last_seen_at": at,
                "event_count": 0,
                "created_at": at,
                "updated_at": now,
                "merged_into": target,
            }
        )
    if redirects:
        session.execute(PROFILES.insert(), redirects)
    by_profile: dict[str, list[str]] = {}
    for key, pid in owners.items():
        by_profile.setdefault(pid, []).append(key_text(key))
    return [
        {"id": pid, "events": n, "identifiers": sorted(by_profile.get(pid, []))}
        for pid, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]


__all__ = ["MODES", "UNMERGED", "ProfileNotFound", "unmerge"]
