"""Why a profile holds what it holds: its identifiers and merges as a tree a person can read.

Each identifier remembers the event that attached it, the identifier of that event that
already belonged to the profile (``linked_by``) and the profile it first joined
(``attached_to``); each merge remembers its event and the two identifiers that met. So the
tree is: the identifiers that founded the profile, each with the identifiers they brought
in below them, and under the identifier where a merge happened, the merged profile with
its own tree. Recent events are listed with the identifier that placed each one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from identity.config import IdentityConfig
from identity.models import ProfileEvent, ProfileIdentifier, ProfileMerge
from identity.views import current_profile
from pipeline.models import Event

EVENT_LIMIT = 50
_MAX_CLUSTER = 10_000


@dataclass(frozen=True)
class _Ident:
    key: str
    kind: str
    value: str
    channel: str
    first_seen_at: str
    last_seen_at: str
    source_event_id: int | None
    linked_by: str | None
    attached_to: str | None


def explain(
    session: Session,
    workspace_id: str,
    profile_id: str,
    *,
    config: IdentityConfig | None = None,
    event_limit: int = EVENT_LIMIT,
) -> dict[str, Any] | None:
    """The explanation of a profile (a merged-away id explains its survivor); None if unknown."""
    profile = current_profile(session, workspace_id, profile_id)
    if profile is None:
        return None
    config = config or IdentityConfig()
    idents = _identifiers(session, profile.id)
    merges = _cluster_merges(session, workspace_id, profile.id)
    message_ids = _message_ids(
        session,
        workspace_id,
        {i.source_event_id for i in idents if i.source_event_id}
        | {m.event_id for m in merges if m.event_id},
    )
    children: dict[str | None, list[_Ident]] = {}
    for ident in idents:
        children.setdefault(ident.linked_by, []).append(ident)
    merges_at: dict[str | None, list[ProfileMerge]] = {}
    for merge in merges:
        merges_at.setdefault(merge.evidence.get("survivor_identifier"), []).append(merge)
    placed: set[str] = set()

    def ident_node(ident: _Ident, depth: int) -> dict[str, Any]:
        placed.add(ident.key)
        source = message_ids.get(ident.source_event_id) if ident.source_event_id else None
        node: dict[str, Any] = {
            "identifier": ident.key,
            "channel": ident.channel,
            "first_seen_at": ident.first_seen_at,
            "last_seen_at": ident.last_seen_at,
            "source_event": source,
            "reason": _reason(ident, source),
            "children": [],
        }
        if depth > 64:  # a cycle would be a bug; never loop on one
            return node
        for child in children.get(ident.key, []):
            if child.key not in placed:
                node["children"].append(ident_node(child, depth + 1))
        for merge in merges_at.get(ident.key, []):
            node["children"].append(merge_node(merge, depth + 1))
        return node

    def merge_node(merge: ProfileMerge, depth: int) -> dict[str, Any]:
        event = message_ids.get(merge.event_id) if merge.event_id else None
        node: dict[str, Any] = {
            "merged_profile": merge.merged_id,
            "event": event,
            "at": merge.created_at.isoformat(),
            "rule": merge.rule,
            "evidence": merge.evidence,
            "reason": _merge_reason(merge, event),
            "children": [],
        }
        for root in children.get(None, []):
            if root.attached_to == merge.merged_id and root.key not in placed:
                node["children"].append(ident_node(root, depth + 1))
        return node

    tree = [
        ident_node(root, 0)
        for root in children.get(None, [])
        if root.attached_to in (profile.id, None) and root.key not in placed
    ]
    tree += [merge_node(m, 0) for m in merges_at.get(None, [])]  # probabilistic matches
    tree += [ident_node(i, 0) for i in idents if i.key not in placed]  # orphans, if any
    events = _recent_events(
        session, workspace_id, profile.id, {i.key for i in idents}, config, event_limit
    )
    view: dict[str, Any] = {
        "profile_id": profile.id,
        "identifiers": len(idents),
        "merges": len(merges),
        "tree": tree,
        "events": events,
        "text": render(profile.id, tree),
    }
    if profile.id != profile_id:
        view["requested_id"] = profile_id
    return view


def _merge_reason(merge: ProfileMerge, event: str | None) -> str:
    evidence = merge.evidence
    if merge.rule == "probabilistic":
        fields = ", ".join(
            f"{name} {found['level']}" for name, found in evidence.get("fields", {}).items()
        )
        return (
            f"merged {merge.merged_id}: event {event} matched with probability "
            f"{evidence.get('probability')} ({fields})"
        )
    return (
        f"merged {merge.merged_id}: event {event} carried "
        f"{evidence.get('merged_identifier')} (that profile's) and "
        f"{evidence.get('survivor_identifier')}"
    )


def _reason(ident: _Ident, source: str | None) -> str:
    event = f"event {source}" if source else "an event before provenance was kept"
    if ident.linked_by:
        return f"{event} carried it with {ident.linked_by}, which already belonged here"
    if ident.attached_to:
        return f"founded {ident.attached_to} with {event}"
    return f"attached by {event}"


def _identifiers(session: Session, profile_id: str) -> list[_Ident]:
    rows = session.execute(
        select(
            ProfileIdentifier.kind,
            ProfileIdentifier.value,
            ProfileIdentifier.channel,
            ProfileIdentifier.first_seen_at,
            ProfileIdentifier.last_seen_at,
            ProfileIdentifier.source_event_id,
            ProfileIdentifier.linked_by,
            ProfileIdentifier.attached_to,
        )
        .where(ProfileIdentifier.profile_id == profile_id)
        .order_by(ProfileIdentifier.first_seen_at, ProfileIdentifier.kind, ProfileIdentifier.value)
    ).all()
    return [
        _Ident(f"{k}:{v}", k, v, ch, first.isoformat(), last.isoformat(), src, linked, att)
        for k, v, ch, first, last, src, linked, att in rows
    ]


def _cluster_merges(session: Session, workspace_id: str, profile_id: str) -> list[ProfileMerge]:
    """Every merge that led into the profile, directly or through a profile merged into it."""
    found: list[ProfileMerge] = []
    frontier = {profile_id}
    seen = set(frontier)
    while frontier and len(seen) < _MAX_CLUSTER:
        step = session.scalars(
            select(ProfileMerge)
            .where(
                ProfileMerge.workspace_id == workspace_id,
                ProfileMerge.survivor_id.in_(sorted(frontier)),
                ProfileMerge.undone_by.is_(None),  # an unmerge recomputed those
            )
            .order_by(ProfileMerge.id)
        ).all()
        found += step
        frontier = {m.merged_id for m in step} - seen
        seen |= frontier
    return sorted(found, key=lambda m: m.id)


def _message_ids(session: Session, workspace_id: str, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = session.execute(
        select(Event.id, Event.message_id).where(
            Event.workspace_id == workspace_id, Event.id.in_(sorted(ids))
        )
    )
    return {event_id: message_id for event_id, message_id in rows}


def _recent_events(
    session: Session,
    workspace_id: str,
    profile_id: str,
    held: set[str],
    config: IdentityConfig,
    limit: int,
) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Event.message_id, Event.type, Event.channel, Event.occurred_at, Event.identifiers)
        .join(ProfileEvent, ProfileEvent.event_id == Event.id)
        .where(ProfileEvent.workspace_id == workspace_id, ProfileEvent.profile_id == profile_id)
        .order_by(ProfileEvent.occurred_at.desc(), ProfileEvent.event_id.desc())
        .limit(limit)
    ).all()
    return [
        {
            "message_id": message_id,
            "type": type_,
            "channel": channel,
            "occurred_at": occurred_at.isoformat(),
            "via": _via(identifiers, held, config),
        }
        for message_id, type_, channel, occurred_at, identifiers in rows
    ]


def _via(identifiers: Mapping[str, str], held: set[str], config: IdentityConfig) -> str | None:
    """The strongest of an event's identifiers that the profile holds: what placed it."""
    ranked = sorted(identifiers.items(), key=lambda kv: config.rank(kv[0]))
    return next((f"{k}:{v}" for k, v in ranked if f"{k}:{v}" in held), None)


def render(profile_id: str, tree: Sequence[Mapping[str, Any]]) -> str:
    """The tree as indented text (what ``ecrm identity explain`` prints)."""
    lines = [profile_id]

    def walk(nodes: Sequence[Mapping[str, Any]], prefix: str) -> None:
        for i, node in enumerate(nodes):
            last = i == len(nodes) - 1
            label = node.get("identifier") or f"<= {node['merged_profile']}"
            lines.append(f"{prefix}{'└── ' if last else '├── '}{label}  ({node['reason']})")
            walk(node["children"], prefix + ("    " if last else "│   "))

    walk(tree, "")
    return "\n".join(lines)


__all__ = ["explain", "render"]
