"""Firing rules while batches are processed: evaluate, record the firing once, act.

::

    events of a batch ──► RuleIndex.candidates ──► (none: done, no query)
                                │
          profile_events (after identity's writes: the survivor of any merge)
                                │
          BatchReads: profiles, consent, history aggregates, firings already written
                                │  (a few queries per batch, not per event)
          Context per event ──► evaluate ──► matched, in priority order (``stop`` ends it)
                                │
          fired before (a retried batch)? skip ── else: actions decided in memory
                                │
          flush: ledger entries, outbox actions, change feed, firing rows (executemany)

Why exactly once: the firing row is unique per ``(workspace, rule, event)`` and is written
in the batch's transaction, with the actions' rows; a retried batch (or a second call)
finds it and takes no action. The actions' own idempotency keys ``rule:{id}:{event}:{n}``
are a second fence.

Conditions see the context as it was before this event's actions (a rule awarding points
does not change what a lower-priority rule reads for the same event), and after the
actions of the batch's earlier events. Traits and identifiers are the profile's current
ones (after the batch); history aggregates are as of the event's ``occurred_at``.
A rule with ``trace: true`` also records its near misses (``matched`` false, no actions).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from identity.views import profiles_of_events
from personalization import loyalty
from personalization.labels import labels_of
from personalization.loyalty.batch import LoyaltyBatch
from personalization.loyalty.tiers import TIER_CHANGED, TierChange
from personalization.rules.act import (
    NOT_SUPPORTED_YET,
    Actions,
)
from personalization.rules.evaluate import evaluate
from personalization.rules.firings import FireStats, Firings, firings_of_events, list_firings
from personalization.rules.guards import (
    GuardState,
)
from personalization.rules.index import Candidates, RuleIndex
from personalization.rules.models import RuleVersion
from personalization.rules.reads import BatchReads
from personalization.rules.schema import CompiledRule, RuleSetInvalid
from personalization.rules.store import load_rules
from pipeline.caps import Cap
from pipeline.envelope import utcnow
from pipeline.processing import StoredEvent

log = structlog.get_logger(__name__)

__all__ = [
    "NOT_SUPPORTED_YET",
    "FireStats",
    "Firings",
    "decide",
    "fire_rules",
    "firings_of_events",
    "list_firings",
    "rules_index",
]
_EMPTY = RuleIndex(())
#: per engine, per workspace: (rule_versions count, newest created_at, when read, index)
_cache: weakref.WeakKeyDictionary[Engine, dict[str, tuple[Any, float, RuleIndex]]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()
REFRESH_SECONDS = 300.0
#: tier changes caused by rules on tier changes, followed this deep (then left alone)
_MAX_TIER_ROUNDS = 4


def rules_index(session: Session, workspace_id: str) -> RuleIndex:
    """The workspace's enabled rules, indexed; cached per process until a rule changes.

    Each call reads the count and newest time of ``rule_versions`` (append-only: every
    change adds one), one index range; the rules are loaded and compiled again only when
    it moved. Stored rules that no longer pass the checks fire nothing (logged), rather
    than failing every batch.
    """
    versions = RuleVersion.__table__.c
    key = tuple(
        session.execute(
            select(func.count(), func.max(versions.created_at)).where(
                versions.workspace_id == workspace_id
            )
        ).one()
    )
    if key[0] == 0:
        return _EMPTY
    engine = session.get_bind().engine
    with _lock:
        cached = _cache.get(engine, {}).get(workspace_id)
    now = time.monotonic()
    if cached is not None and cached[0] == key and now - cached[1] < REFRESH_SECONDS:
        return cached[2]
    try:
        index = RuleIndex(load_rules(session, workspace_id))
    except RuleSetInvalid as exc:
        log.error("rules_invalid", workspace_id=workspace_id, error=str(exc))
        index = _EMPTY
    with _lock:
        _cache.setdefault(engine, {})[workspace_id] = (key, now, index)
    return index


def fire_rules(
    session: Session,
    workspace_id: str,
    events: Sequence[StoredEvent],
    *,
    rules: RuleIndex | Iterable[CompiledRule] | None = None,
    now: datetime | None = None,
    loyalty_config: loyalty.LoyaltyConfig = loyalty.DEFAULT_CONFIG,
    default_region: str = "US",
    channel_caps: Mapping[str, Cap] | None = None,
    profiles: Mapping[int, str] | None = None,
    fired_before: Collection[int] | None = None,
) -> FireStats:
    """Fire the rules of ``workspace_id`` for processed ``events`` (see the module doc).

    Call it after identity's writes, in the batch's transaction. ``rules``: an index, the
    rules themselves, or ``None`` for the workspace's stored rules (cached). ``profiles``:
    event id -> profile, when the caller knows it (identity's plan), else it is read.
    ``fired_before``: the only events that may have firings written already (a batch
    processed for the first time has none: its firings commit with it), else all may.
    """
    stats = FireStats(events=len(events))
    firings = decide(
        session,
        workspace_id,
        events,
        stats,
        rules=rules,
        now=now,
        loyalty_config=loyalty_config,
        default_region=default_region,
        channel_caps=channel_caps,
        profiles=profiles,
        fired_before=fired_before,
    )
    if firings is not None:
        firings.flush()
    return stats


def decide(
    session: Session,
    workspace_id: str,
    events: Sequence[StoredEvent],
    stats: FireStats,
    *,
    rules: RuleIndex | Iterable[CompiledRule] | None = None,
    now: datetime | None = None,
    loyalty_config: loyalty.LoyaltyConfig = loyalty.DEFAULT_CONFIG,
    default_region: str = "US",
    channel_caps: Mapping[str, Cap] | None = None,
    dry_run: bool = False,
    profiles: Mapping[int, str] | None = None,
    fired_before: Collection[int] | None = None,
) -> Firings | None:
    """Evaluate and decide every firing of ``events``, writing nothing yet.

    ``None`` when no rule is a candidate. ``dry_run`` (``ecrm rules test``): firings
    written before are ignored (what *would* fire), no account is created or locked and
    debits are checked against the balance in memory; the caller reads the decided rows
    instead of flushing them.
    """
    if rules is None:
        index = rules_index(session, workspace_id)
    else:
        index = rules if isinstance(rules, RuleIndex) else RuleIndex(rules)
    if index.size == 0:
        return None
    pending = [(e, c) for e in events if (c := index.plan(e.type, e.channel)).rules]
    if not pending:
        return None
    now = now or utcnow()
    if profiles is None:
        profiles = profiles_of_events(session, workspace_id, [event.id for event, _ in pending])
    pending = [(e, c) for e, c in pending if e.id in profiles]  # erased or failed: nobody
    if dry_run:
        fired_before = ()
    reads = BatchReads.read(session, workspace_id, pending, profiles, prior=fired_before)
    survivors = set(profiles.values())
    earning = {profiles[event.id] for event, candidates in pending if candidates.ledger}
    reading = {profiles[event.id] for event, candidates in pending if candidates.loyalty}
    points = LoyaltyBatch.open(
        session,
        workspace_id,
        earning,
        now=now,
        config=loyalty_config,
        lock=not dry_run,
        also_read=reading - earning,
    )
    labels = (
        labels_of(session, workspace_id, survivors)
        if any(candidates.labels for _, candidates in pending)
        else {}
    )
    actions = Actions(
        session,
        workspace_id,
        now,
        default_region,
        points,
        reads.consent_of,
        read_labels=labels,
        dry_run=dry_run,
    )
    distinct = list({rule.id: rule for _, c in pending for rule in c.rules}.values())
    guards = GuardState.read(session, workspace_id, survivors, distinct, now, channel_caps or {})
    firings = Firings(session, workspace_id, now, actions, guards, stats)
    for event, candidates in pending:
        profile_id = profiles[event.id]
        _fire_event(event, profile_id, candidates, reads, points, firings)
        _fire_tier_changes(event, index, reads, points, firings)  # tiers its points crossed
    stats.actions, stats.failed_actions = actions.actions, actions.failed
    stats.suppressed = actions.suppressed
    return firings


def _fire_event(
    event: StoredEvent,
    profile_id: str,
    candidates: Candidates,
    reads: BatchReads,
    points: LoyaltyBatch,
    firings: Firings,
) -> None:
    """Evaluate one event's candidate rules in priority order and decide their firings."""
    stats, actions = firings.stats, firings.actions
    context = reads.context(
        event, profile_id, candidates, points, actions.profile_extra(profile_id)
    )
    for rule, holds in zip(candidates.rules, candidates.predicates, strict=True):
        stats.evaluated += 1
        prior = reads.prior.get((rule.id, event.id))
        if not holds(context):
            if rule.trace and prior is None and not firings.seen(rule, event):
                trace = evaluate(rule.conditions, context).view()["trace"]
                firings.near_miss(rule, event, profile_id, trace)
            continue
        if (prior is not None and prior.matched) or firings.seen(rule, event):
            stats.already_fired += 1
        else:
            trace = evaluate(rule.conditions, context).view()["trace"]
            firings.fire(
                rule, event, profile_id, context, trace, prior_id=prior.id if prior else None
            )
        if rule.stop:
            break


def _fire_tier_changes(
    event: StoredEvent,
    index: RuleIndex,
    reads: BatchReads,
    points: LoyaltyBatch,
    firings: Firings,
) -> None:
    """Rules on ``loyalty.tier_changed`` for the tiers an event's points just crossed.

    Why here: a tier change is derived state, not a touchpoint (it is on the change feed,
    not in the event log), yet "congratulate on a tier upgrade" must follow the order that
    caused it. The change is seen as an event of the order's id and channel, so its rules
    fire at most once per order, exactly once under retries like every firing.
    """
    for _ in range(_MAX_TIER_ROUNDS):
        changes = points.take_tier_changes()
        if not changes:
            return
        for profile_id, change in changes:
            derived = tier_event(event, change)
            candidates = index.plan(derived.type, derived.channel)
            if candidates.rules:
                reads.ensure_history(derived, profile_id, candidates)
                _fire_event(derived, profile_id, candidates, reads, points, firings)


def tier_event(cause: StoredEvent, change: TierChange) -> StoredEvent:
    """A tier change as rules see it: ``event.properties`` has ``from``, ``to`` and more."""
    return StoredEvent(
        id=cause.id,
        workspace_id=cause.workspace_id,
        message_id=f"{cause.message_id}#{TIER_CHANGED}",
        channel=cause.channel,
        type=TIER_CHANGED,
        occurred_at=cause.occurred_at,
        identifiers={},
        traits={},
        properties={
            "from": change.previous,
            "to": change.current,
            "value": change.measure,
            "cause_event_id": cause.id,
        },
        source="loyalty",
    )
