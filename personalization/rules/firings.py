"""Firing rows: what a batch decided per (rule, event), and reading them back.

:class:`Firings` collects a batch's rows while :func:`personalization.rules.fire.decide`
runs (guards first: a held-back firing keeps its reason and no action), and writes them
after the actions' own rows. The views below serve ``GET /v1/rules/{id}/firings`` and the
profile timeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from personalization.rules.act import Actions, Step, failure, must_propagate
from personalization.rules.evaluate import Context
from personalization.rules.guards import (
    HOLDOUT,
    GuardState,
    in_holdout,
    message_channels,
    quiet_until,
)
from personalization.rules.models import RULE_FIRINGS, RuleFiring
from personalization.rules.schema import CompiledRule
from pipeline.processing import StoredEvent

log = structlog.get_logger(__name__)
#: on the profile change feed for each firing whose actions ran (not held), after what the
#: actions changed (points, tags): it carries their final outcomes
RULE_FIRED: Final = "rule.fired"

#: the profile trait naming its IANA time zone (quiet hours); else the guard's own zone
TIMEZONE_TRAIT = "timezone"


@dataclass
class FireStats:
    """What one call did (summed over its events)."""

    events: int = 0
    #: (event, rule) pairs evaluated
    evaluated: int = 0
    fired: int = 0
    #: matched but fired before (a retried batch): actions skipped
    already_fired: int = 0
    actions: int = 0
    failed_actions: int = 0
    #: messages not queued because the address opted out
    suppressed: int = 0
    near_misses: int = 0
    #: matched, but the actions were held back: holdout group, frequency or channel cap
    held: int = 0


class Firings:
    """The batch's firing rows, written by :meth:`flush` after the actions' rows."""

    def __init__(
        self,
        session: Session,
        workspace_id: str,
        now: datetime,
        actions: Actions,
        guards: GuardState,
        stats: FireStats,
    ) -> None:
        self.session, self.workspace_id, self.now = session, workspace_id, now
        self.actions, self.guards, self.stats = actions, guards, stats
        self.rows: list[dict[str, Any]] = []
        #: near misses written before that matched now: (firing id, row)
        self.upgrades: list[tuple[int, dict[str, Any]]] = []
        #: (rule, event) pairs decided in this batch: never twice (the unique key)
        self._seen: set[tuple[str, int]] = set()

    def seen(self, rule: CompiledRule, event: StoredEvent) -> bool:
        return (rule.id, event.id) in self._seen

    def _row(
        self,
        rule: CompiledRule,
        event: StoredEvent,
        profile_id: str,
        trace: list[dict[str, Any]],
        outcomes: list[dict[str, Any]],
        *,
        matched: bool = True,
        held: str | None = None,
    ) -> dict[str, Any]:
        return {
            "workspace_id": self.workspace_id,
            "rule_id": rule.id,
            "rule_version": rule.version or 0,
            "event_id": event.id,
            "profile_id": profile_id,
            "matched": matched,
            "held": held,
            "trace": trace,
            "outcomes": outcomes,
            "created_at": self.now,
        }

    def near_miss(
        self, rule: CompiledRule, event: StoredEvent, profile_id: str, trace: list[dict[str, Any]]
    ) -> None:
        self.stats.near_misses += 1
        self._keep(self._row(rule, event, profile_id, trace, [], matched=False), None)

    def fire(
        self,
        rule: CompiledRule,
        event: StoredEvent,
        profile_id: str,
        context: Context,
        trace: list[dict[str, Any]],
        *,
        prior_id: int | None = None,
    ) -> None:
        held = self._held(rule, profile_id)
        if held is not None:
            self.stats.held += 1
            outcomes = [{"type": a.type, "status": "held", "reason": held} for a in rule.actions]
            row = self._row(rule, event, profile_id, trace, outcomes, held=held)
            self._keep(row, prior_id)
            return
        announced: list[dict[str, Any]] = []  # the outcomes, final once the batch flushes
        self.actions.changes.append(
            (
                RULE_FIRED,
                profile_id,
                {
                    "rule_id": rule.id,
                    "rule_version": rule.version,
                    "rule_name": rule.name,
                    "event_id": event.id,
                    "event_type": event.type,
                    "outcomes": announced,
                },
            )
        )
        due = None
        if rule.guards.quiet_hours is not None:
            zone = context.profile.get("traits", {}).get(TIMEZONE_TRAIT)
            due = quiet_until(
                self.now, rule.guards.quiet_hours, zone if isinstance(zone, str) else None
            )
        try:
            outcomes = [
                self.actions.take(
                    Step(
                        rule,
                        action,
                        f"rule:{rule.id}:{event.id}:{n}",
                        event,
                        profile_id,
                        context,
                        due,
                    )
                )
                for n, action in enumerate(rule.actions)
            ]
        except Exception as exc:
            if must_propagate(exc):
                raise
            log.error("rule_failed", rule_id=rule.id, event_id=event.id, error=repr(exc))
            outcomes = [failure(exc)]  # fired (badly): still exactly once
        else:
            self.stats.fired += 1
        announced.extend(outcomes)
        self.guards.note(rule, profile_id, message_channels(rule), self.now)
        self._keep(self._row(rule, event, profile_id, trace, outcomes), prior_id)
        log.debug("rule_fired", rule_id=rule.id, event_id=event.id, outcomes=len(outcomes))

    def _held(self, rule: CompiledRule, profile_id: str) -> str | None:
        """Why the actions must not run for this profile (holdout, a cap), or ``None``."""
        if rule.guards.holdout and in_holdout(rule.id, profile_id, rule.guards.holdout):
            return HOLDOUT
        return self.guards.check(rule, profile_id, message_channels(rule), self.now)

    def _keep(self, row: dict[str, Any], prior_id: int | None) -> None:
        self._seen.add((row["rule_id"], row["event_id"]))
        if prior_id is None:
            self.rows.append(row)
        else:
            self.upgrades.append((prior_id, row))

    def flush(self) -> None:
        self.actions.flush()
        if self.rows:
            self.session.execute(RULE_FIRINGS.insert(), self.rows)
        for firing_id, row in self.upgrades:
            self.session.execute(
                update(RuleFiring)
                .where(RuleFiring.id == firing_id)
                .values({k: v for k, v in row.items() if k not in ("workspace_id", "event_id")}),
                execution_options={"synchronize_session": False},
            )
        self.rows, self.upgrades = [], []


def firing_view(firing: RuleFiring) -> dict[str, Any]:
    """A firing as ``GET /v1/rules/{id}/firings`` shows it."""
    return {
        "id": firing.id,
        "rule_id": firing.rule_id,
        "rule_version": firing.rule_version,
        "event_id": firing.event_id,
        "profile_id": firing.profile_id,
        "matched": firing.matched,
        "held": firing.held,
        "trace": firing.trace,
        "outcomes": firing.outcomes,
        "created_at": firing.created_at.isoformat(),
    }


def firings_of_events(
    session: Session, workspace_id: str, event_ids: Sequence[int]
) -> dict[int, list[dict[str, Any]]]:
    """The firings (and traced near misses) of these events, for the profile's timeline."""
    found: dict[int, list[dict[str, Any]]] = {}
    if not event_ids:
        return found
    query = select(RuleFiring).where(
        RuleFiring.workspace_id == workspace_id, RuleFiring.event_id.in_(list(event_ids))
    )
    for firing in session.scalars(query.order_by(RuleFiring.id)):
        view = firing_view(firing)
        del view["event_id"], view["profile_id"]
        found.setdefault(firing.event_id, []).append(view)
    return found


def list_firings(
    session: Session, workspace_id: str, rule_id: str, *, after: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """A rule's firings, oldest first (``after``: a firing id, for the next page)."""
    query = select(RuleFiring).where(
        RuleFiring.workspace_id == workspace_id, RuleFiring.rule_id == rule_id
    )
    if after is not None:
        query = query.where(RuleFiring.id > after)
    return [firing_view(f) for f in session.scalars(query.order_by(RuleFiring.id).limit(limit))]


__all__ = [
    "TIMEZONE_TRAIT",
    "FireStats",
    "Firings",
    "firing_view",
    "firings_of_events",
    "list_firings",
]
