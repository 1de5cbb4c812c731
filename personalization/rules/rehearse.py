"""Rehearsing rules against the event log: what they would do, with no side effect.

``ecrm rules test FILE --since 30d`` and ``POST /v1/rules/test`` run the rules of a file
(not yet applied) over the log's processed events of the period, through the very code the
worker fires them with (:func:`personalization.rules.fire.decide`), but in a read-only
session and with ``dry_run``: nothing is written, no account is locked, firings already
recorded are ignored (the question is what *these* rules would do). The answer per rule:
how many times it would fire and for how many profiles (a sample of them), the messages
it would queue or suppress (a sample, rendered), the points it would award or deduct,
and how many firings its guards would hold back.

Each batch of events is rehearsed as if processed at its latest event's time (quiet
hours, caps and expiry windows are judged then). Known approximations: conditions read
today's traits, points and tags (the worker reads them as they stand after its batch);
caps count the firings recorded in the hub plus those rehearsed in the same batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from identity.models import ProfileEvent
from personalization import loyalty
from personalization.rules.fire import FireStats, decide
from personalization.rules.guards import MESSAGE_CHANNELS
from personalization.rules.index import RuleIndex
from personalization.rules.schema import CompiledRule
from pipeline.caps import Cap
from pipeline.models import Event
from pipeline.processing import StoredEvent

#: events read and decided at a time (as the worker's batches)
BATCH = 500


@dataclass
class RuleRehearsal:
    """What one rule would have done."""

    rule_id: str
    fired: int = 0
    held: Counter[str] = field(default_factory=Counter)
    profiles: set[str] = field(default_factory=set)
    sample_profiles: list[str] = field(default_factory=list)
    messages: Counter[str] = field(default_factory=Counter)
    sample_messages: list[dict[str, Any]] = field(default_factory=list)
    points_awarded: int = 0
    points_deducted: int = 0
    actions: Counter[str] = field(default_factory=Counter)

    def view(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "fired": self.fired,
            "held": dict(self.held),
            "profiles": len(self.profiles),
            "sample_profiles": self.sample_profiles,
            "messages": dict(self.messages),
            "sample_messages": self.sample_messages,
            "points_awarded": self.points_awarded,
            "points_deducted": self.points_deducted,
            "actions": dict(sorted(self.actions.items())),
        }


@dataclass
class Rehearsal:
    """The whole answer: the period, the events read, and each rule's rehearsal."""

    since: datetime
    until: datetime | None
    events: int = 0
    rules: dict[str, RuleRehearsal] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat() if self.until else None,
            "events": self.events,
            "written": False,
            "rules": [rule.view() for rule in self.rules.values()],
        }


def rehearse(
    session: Session,
    workspace_id: str,
    rules: Sequence[CompiledRule],
    *,
    since: datetime,
    until: datetime | None = None,
    sample: int = 5,
    loyalty_config: loyalty.LoyaltyConfig = loyalty.DEFAULT_CONFIG,
    default_region: str = "US",
    channel_caps: dict[str, Cap] | None = None,
) -> Rehearsal:
    """Rehearse ``rules`` over the processed events of ``[since, until]`` (see the module doc)."""
    index = RuleIndex(rules)
    found = Rehearsal(since, until)
    for rule in rules:
        found.rules[rule.id] = RuleRehearsal(rule.id)
    for events in _batches(session, workspace_id, since, until):
        found.events += len(events)
        firings = decide(
            session,
            workspace_id,
            events,
            FireStats(events=len(events)),
            rules=index,
            now=max(event.occurred_at for event in events),
            loyalty_config=loyalty_config,
            default_region=default_region,
            channel_caps=channel_caps,
            dry_run=True,
        )
        if firings is None:
            continue
        recipients = {action_id: (new, due) for action_id, new, due, _ in firings.actions.messages}
        for row in firings.rows:
            if row["matched"]:
                _count(found.rules[row["rule_id"]], row, recipients, sample)
    return found


def _count(
    rule: RuleRehearsal,
    row: dict[str, Any],
    recipients: dict[str, Any],
    sample: int,
) -> None:
    profile_id = str(row["profile_id"])
    if row["held"]:
        rule.held[row["held"]] += 1
        return
    rule.fired += 1
    if profile_id not in rule.profiles and len(rule.sample_profiles) < sample:
        rule.sample_profiles.append(profile_id)
    rule.profiles.add(profile_id)
    for outcome in row["outcomes"]:
        status, kind = outcome.get("status"), outcome.get("type", "?")
        rule.actions[f"{kind}:{status}"] += 1
        if status == "awarded":
            rule.points_awarded += int(outcome["points"])
        elif status == "deducted":
            rule.points_deducted += int(outcome["points"])
        if kind not in MESSAGE_CHANNELS:
            continue
        rule.messages[str(status)] += 1
        queued = recipients.get(outcome.get("action_id", ""))
        if queued is not None and len(rule.sample_messages) < sample:
            new, due = queued
            rule.sample_messages.append(
                {
                    "profile_id": profile_id,
                    "kind": new.kind,
                    "to": new.recipient,
                    **{k: v for k, v in new.payload.items() if k in ("subject", "text")},
                    "due_at": due.isoformat(),
                }
            )


def _batches(
    session: Session, workspace_id: str, since: datetime, until: datetime | None
) -> Iterator[list[StoredEvent]]:
    """The period's events that were counted in a profile, in log order, a batch at a time."""
    after = 0
    while True:
        query = (
            select(Event)
            .join(ProfileEvent, ProfileEvent.event_id == Event.id)
            .where(
                Event.workspace_id == workspace_id,
                Event.id > after,
                Event.occurred_at >= since,
            )
            .order_by(Event.id)
            .limit(BATCH)
        )
        if until is not None:
            query = query.where(Event.occurred_at <= until)
        rows = list(session.scalars(query))
        if not rows:
            return
        after = rows[-1].id
        yield [
            StoredEvent(
                id=e.id,
                workspace_id=e.workspace_id,
                message_id=e.message_id,
                channel=e.channel,
                type=e.type,
                occurred_at=e.occurred_at,
                identifiers=e.identifiers or {},
                traits=e.traits or {},
                properties=e.properties or {},
                source=e.source or "",
            )
            for e in rows
        ]


__all__ = ["Rehearsal", "RuleRehearsal", "rehearse"]
