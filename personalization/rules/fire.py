"""Firing rules while batches are processed: evaluate, record the firing once, act.

::

    events of a batch ──► RuleIndex.candidates ──► (none: done, no query)
                                │
          profile_events (after identity's writes: the survivor of any merge)
                                │
          Context: event, profile, loyalty, history as of the event ──► evaluate
                                │ matched, in priority order (``stop`` ends the event)
          INSERT rule_firings ... ON CONFLICT DO NOTHING ──► nothing inserted: fired before
                                │
          actions: send_email/send_sms → action outbox; award/deduct/set_tier → ledger

Why exactly once: the firing row is unique per ``(workspace, rule, event)`` and is written
in the batch's transaction, before the actions; a retried batch (or a second call) finds
it and skips the actions. The actions' own idempotency keys ``rule:{id}:{event}:{n}`` are
a second fence. Each rule runs in a savepoint and each action in a nested one: a failing
action is a recorded outcome (``failed``, with the error), never a failed batch.

Outcome statuses: ``queued`` (an action in the outbox), ``awarded``/``deducted``/``tier_set``,
``skipped`` (nothing to do, e.g. an order without the property points are computed from),
``failed`` (a template that does not render, no address, insufficient points …) and
``not_supported_yet`` for the action types the vocabulary accepts but that have no effect
yet (tags, segments, traits, webhooks): recorded, so nothing is dropped in silence.

Conditions see the context as it was before this event's actions (a rule awarding points
does not change what a lower-priority rule reads for the same event). Traits and
identifiers are the profile's current ones (after the batch); history aggregates are
as of the event's ``occurred_at``.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from jinja2 import ChainableUndefined
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from identity.models import Profile, ProfileEvent, ProfileIdentifier
from identity.views import profiles_of_events
from personalization import loyalty
from personalization.action_requests import parse_request
from personalization.actions import EMAIL_REPLY, EMAIL_SEND, SMS_SEND, enqueue
from personalization.consent import ADDRESS_KIND, Consent
from personalization.loyalty.views import balances_and_tiers
from personalization.rules.evaluate import Context, aggregates_of, evaluate, leaves
from personalization.rules.history import history_values
from personalization.rules.index import RuleIndex
from personalization.rules.models import RULE_FIRINGS, RuleFiring, RuleVersion
from personalization.rules.schema import CompiledRule, RuleAction, RuleSetInvalid
from personalization.rules.store import load_rules
from pipeline.db import dialect_insert, in_list
from pipeline.envelope import utcnow
from pipeline.errors import TransientError
from pipeline.models import Event
from pipeline.processing import StoredEvent

log = structlog.get_logger(__name__)

NOT_SUPPORTED_YET = "not_supported_yet"
#: profiles read per query (well under the bound-parameter limits)
_CHUNK = 400
_TEMPLATES = SandboxedEnvironment(autoescape=False, undefined=ChainableUndefined)
_EMPTY = RuleIndex(())
#: per engine, per workspace: (rule_versions count, newest created_at, when read, index)
_cache: weakref.WeakKeyDictionary[Engine, dict[str, tuple[Any, float, RuleIndex]]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()
REFRESH_SECONDS = 300.0


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
) -> FireStats:
    """Fire the rules of ``workspace_id`` for processed ``events`` (see the module doc).

    Call it after identity's writes, in the batch's transaction. ``rules``: an index, the
    rules themselves, or ``None`` for the workspace's stored rules (cached).
    """
    if rules is None:
        index = rules_index(session, workspace_id)
    else:
        index = rules if isinstance(rules, RuleIndex) else RuleIndex(rules)
    stats = FireStats(events=len(events))
    if index.size == 0:
        return stats
    pending = [(e, c) for e in events if (c := index.candidates(e.type, e.channel))]
    if not pending:
        return stats
    now = now or utcnow()
    profiles = profiles_of_events(session, workspace_id, [event.id for event, _ in pending])
    firing = _Firing(session, workspace_id, now, loyalty_config, default_region, stats)
    known = _Profiles.read(session, workspace_id, set(profiles.values()))
    firing.read_loyalty(set(profiles.values()))
    for event, candidates in pending:
        profile_id = profiles.get(event.id)
        if profile_id is None:  # not counted in a profile (erased, or failed): nobody to act on
            continue
        context = _context(session, workspace_id, event, profile_id, candidates, known, firing)
        for rule in candidates:
            stats.evaluated += 1
            evaluation = evaluate(rule.conditions, context)
            if not evaluation.matched:
                continue
            firing.fire(rule, event, profile_id, context, evaluation.view()["trace"])
            if rule.stop:
                break
    return stats


@dataclass
class _Profiles:
    """The batch's profiles (row and identifiers), read once for all its events.

    Why: reading them per event cost two queries for each of the batch's events; the
    profiles' rows are the same for all of them (traits as they stand after the batch).
    """

    rows: dict[str, dict[str, Any]]
    identifiers: dict[str, dict[str, str]]

    @classmethod
    def read(cls, session: Session, workspace_id: str, profile_ids: set[str]) -> _Profiles:
        chosen = sorted(profile_ids)
        rows: dict[str, dict[str, Any]] = {}
        identifiers: dict[str, dict[str, str]] = {}
        for start in range(0, len(chosen), _CHUNK):
            part = chosen[start : start + _CHUNK]
            for row in session.execute(
                select(
                    Profile.id,
                    Profile.traits,
                    Profile.event_count,
                    Profile.first_seen_at,
                    Profile.last_seen_at,
                ).where(Profile.workspace_id == workspace_id, in_list(session, Profile.id, part))
            ):
                rows[row.id] = {
                    "traits": row.traits or {},
                    "event_count": row.event_count,
                    "first_seen_at": row.first_seen_at,
                    "last_seen_at": row.last_seen_at,
                }
            for pid, kind, value in session.execute(
                select(
                    ProfileIdentifier.profile_id, ProfileIdentifier.kind, ProfileIdentifier.value
                )
                .where(
                    ProfileIdentifier.workspace_id == workspace_id,
                    in_list(session, ProfileIdentifier.profile_id, part),
                )
                .order_by(ProfileIdentifier.last_seen_at)
            ):
                identifiers.setdefault(pid, {})[kind] = value  # the most recent of a kind wins
        return cls(rows, identifiers)


def _context(
    session: Session,
    workspace_id: str,
    event: StoredEvent,
    profile_id: str,
    rules: Sequence[CompiledRule],
    known: _Profiles,
    firing: _Firing,
) -> Context:
    reads = {
        leaf.field.path[0]
        for rule in rules
        for leaf in leaves(rule.conditions)
        if leaf.field.scope == "profile" and leaf.field.path
    }
    profile: dict[str, Any] = {"id": profile_id, **known.rows.get(profile_id, {})}
    identifiers = dict(known.identifiers.get(profile_id, {}))
    profile["identifiers"] = identifiers
    if "channels" in reads:
        profile["channels"] = dict(
            session.execute(
                select(Event.channel, func.count())
                .select_from(ProfileEvent)
                .join(Event, Event.id == ProfileEvent.event_id)
                .where(
                    ProfileEvent.workspace_id == workspace_id,
                    ProfileEvent.profile_id == profile_id,
                    ProfileEvent.occurred_at <= event.occurred_at,
                )
                .group_by(Event.channel)
            ).all()
        )
    if "consent" in reads:
        profile["consent"] = _consent(session, workspace_id, identifiers)
    aggregates = set().union(*(aggregates_of(rule.conditions) for rule in rules))
    history = history_values(
        session, workspace_id, profile_id, aggregates, event.occurred_at, current_event_id=event.id
    )
    return Context(
        event=_event_view(event),
        profile=profile,
        loyalty=firing.loyalty_of(profile_id),
        history=history,
    )


def _consent(session: Session, workspace_id: str, identifiers: Mapping[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for channel, kind in ADDRESS_KIND.items():
        address = identifiers.get(kind)
        if address is None:
            continue
        status = session.execute(
            select(Consent.status).where(
                Consent.workspace_id == workspace_id,
                Consent.channel == channel,
                Consent.address == address,
            )
        ).scalar()
        if status is not None:
            found[channel] = status
    return found


def _event_view(event: StoredEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "message_id": event.message_id,
        "type": event.type,
        "channel": event.channel,
        "source": event.source,
        "occurred_at": event.occurred_at,
        "properties": event.properties,
        "traits": event.traits,
        "identifiers": event.identifiers,
    }


def _must_propagate(exc: BaseException) -> bool:
    """Errors the batch must see: the database is busy or gone, or a concurrent writer won."""
    if isinstance(exc, TransientError | OperationalError):
        return True
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None)
        return exc.connection_invalidated or code in ("40001", "40P01")
    return False


class _Firing:
    """Records firings and runs their actions (one per call, state shared per batch)."""

    def __init__(
        self,
        session: Session,
        workspace_id: str,
        now: datetime,
        config: loyalty.LoyaltyConfig,
        default_region: str,
        stats: FireStats,
    ) -> None:
        self.session, self.workspace_id, self.now = session, workspace_id, now
        self.config, self.region, self.stats = config, default_region, stats
        self.insert = dialect_insert(session)
        #: balance and tier per profile, read once per batch and again after a change
        self._loyalty: dict[str, dict[str, Any]] = {}

    def read_loyalty(self, profile_ids: set[str]) -> None:
        """Points and tier of the batch's profiles, in a few queries for all of them."""
        self._loyalty.update(balances_and_tiers(self.session, self.workspace_id, profile_ids))

    def loyalty_of(self, profile_id: str) -> dict[str, Any]:
        """The profile's points and tier as conditions and templates see them."""
        found = self._loyalty.get(profile_id)
        if found is None:  # changed by an action of this batch: read again
            found = self._loyalty[profile_id] = {
                "balance": loyalty.balance(self.session, self.workspace_id, profile_id),
                "tier": loyalty.tier(self.session, self.workspace_id, profile_id),
            }
        return found

    def fire(
        self,
        rule: CompiledRule,
        event: StoredEvent,
        profile_id: str,
        context: Context,
        trace: list[dict[str, Any]],
    ) -> None:
        session = self.session
        try:
            with session.begin_nested():
                firing_id = self._record(rule, event, profile_id, trace)
                if firing_id is None:
                    self.stats.already_fired += 1
                    return
                outcomes = [
                    self._act(rule, action, n, event, profile_id, context)
                    for n, action in enumerate(rule.actions)
                ]
                session.execute(
                    update(RuleFiring).where(RuleFiring.id == firing_id).values(outcomes=outcomes),
                    execution_options={"synchronize_session": False},
                )
        except Exception as exc:
            if _must_propagate(exc):
                raise
            log.error("rule_failed", rule_id=rule.id, event_id=event.id, error=repr(exc))
            with session.begin_nested():  # fired (badly): still exactly once
                error = [{"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]}]
                self._record(rule, event, profile_id, trace, error)
            return
        self.stats.fired += 1
        log.debug("rule_fired", rule_id=rule.id, event_id=event.id, outcomes=len(outcomes))

    def _record(
        self,
        rule: CompiledRule,
        event: StoredEvent,
        profile_id: str,
        trace: list[dict[str, Any]],
        outcomes: list[dict[str, Any]] | None = None,
    ) -> int | None:
        inserted: int | None = self.session.execute(
            self.insert(RULE_FIRINGS)
            .values(
                workspace_id=self.workspace_id,
                rule_id=rule.id,
                rule_version=rule.version or 0,
                event_id=event.id,
                profile_id=profile_id,
                matched=True,
                trace=trace,
                outcomes=outcomes or [],
                created_at=self.now,
            )
            .on_conflict_do_nothing(index_elements=["workspace_id", "rule_id", "event_id"])
            .returning(RULE_FIRINGS.c.id)
        ).scalar()
        return inserted

    def _act(
        self,
        rule: CompiledRule,
        action: RuleAction,
        n: int,
        event: StoredEvent,
        profile_id: str,
        context: Context,
    ) -> dict[str, Any]:
        handler = _HANDLERS.get(action.type)
        if handler is None:
            return {"type": action.type, "status": NOT_SUPPORTED_YET}
        self._loyalty.pop(profile_id, None)  # points or tier may change: read them again
        key = f"rule:{rule.id}:{event.id}:{n}"
        self.stats.actions += 1
        try:
            with self.session.begin_nested():
                outcome = handler(self, rule, action, key, event, profile_id, context)
        except Exception as exc:
            if _must_propagate(exc):
                raise
            self.stats.failed_actions += 1
            return {
                "type": action.type,
                "status": "failed",
                "error": f"{type(exc).__name__}: {exc}"[:500],
            }
        if outcome.get("status") == "failed":
            self.stats.failed_actions += 1
        return {"type": action.type, **outcome}

    # handlers: each returns its outcome (or raises: a failed outcome)

    def _send(
        self,
        rule: CompiledRule,
        action: RuleAction,
        key: str,
        event: StoredEvent,
        profile_id: str,
        context: Context,
    ) -> dict[str, Any]:
        names = {
            "event": context.event,
            "profile": context.profile,
            "loyalty": context.loyalty,
        }
        rendered: dict[str, str] = {}
        for part in ("subject", "text", "html"):
            source = action.params.get(part)
            if isinstance(source, str):
                try:
                    rendered[part] = _TEMPLATES.from_string(source).render(names)
                except Exception as exc:  # a template error is the action's outcome
                    return {
                        "status": "failed",
                        "error": f"template {part}: {type(exc).__name__}: {exc}"[:500],
                    }
        body: dict[str, Any] = {"profile_id": profile_id, "idempotency_key": key, **rendered}
        if action.type == "send_sms":
            body["kind"] = SMS_SEND
        elif action.params.get("reply"):
            body.update(kind=EMAIL_REPLY, in_reply_to=event.message_id)
        else:
            body["kind"] = EMAIL_SEND
        if "subject" in body:
            body["subject"] = body["subject"].strip()
        new = parse_request(
            self.session,
            self.workspace_id,
            body,
            default_region=self.region,
            origin=rule.origin,
        )
        queued = enqueue(self.session, self.workspace_id, new, now=self.now)
        return {"status": "queued", "action_id": queued.action.id, "kind": new.kind}

    def _points(
        self,
        rule: CompiledRule,
        action: RuleAction,
        key: str,
        event: StoredEvent,
        profile_id: str,
        context: Context,
    ) -> dict[str, Any]:
        params = action.params
        if "per_property" in params:
            value = event.properties.get(str(params["per_property"]))
            if not isinstance(value, int | float) or isinstance(value, bool):
                return {"status": "skipped", "reason": f"no number in {params['per_property']}"}
            points = round(value * float(params.get("rate", 1)))
        else:
            points = round(float(params["points"]))
        if points <= 0:
            return {"status": "skipped", "reason": "no points"}
        post = loyalty.award if action.type == "award_points" else loyalty.deduct
        posted = post(
            self.session,
            self.workspace_id,
            profile_id,
            points,
            reason=str(params.get("reason") or f"rule {rule.id}"),
            source=rule.origin,
            event_id=event.id,
            key=key,
            now=self.now,
            config=self.config,
        )
        status = "awarded" if action.type == "award_points" else "deducted"
        return {"status": status, "points": points, "balance": posted.balance}

    def _tier(
        self,
        rule: CompiledRule,
        action: RuleAction,
        key: str,
        event: StoredEvent,
        profile_id: str,
        context: Context,
    ) -> dict[str, Any]:
        tier = loyalty.set_tier(
            self.session,
            self.workspace_id,
            profile_id,
            str(action.params["tier"]),
            source=rule.origin,
            now=self.now,
            config=self.config,
        )
        return {"status": "tier_set", "tier": tier}


_Handler = Callable[
    [_Firing, CompiledRule, RuleAction, str, StoredEvent, str, Context], dict[str, Any]
]
_HANDLERS: dict[str, _Handler] = {
    "send_email": _Firing._send,
    "send_sms": _Firing._send,
    "award_points": _Firing._points,
    "deduct_points": _Firing._points,
    "set_tier": _Firing._tier,
}


def firing_view(firing: RuleFiring) -> dict[str, Any]:
    """A firing as ``GET /v1/rules/{id}/firings`` shows it."""
    return {
        "id": firing.id,
        "rule_id": firing.rule_id,
        "rule_version": firing.rule_version,
        "event_id": firing.event_id,
        "profile_id": firing.profile_id,
        "matched": firing.matched,
        "trace": firing.trace,
        "outcomes": firing.outcomes,
        "created_at": firing.created_at.isoformat(),
    }


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
