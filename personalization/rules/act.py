"""A batch's rule actions: decided in memory as rules fire, written together at the end.

Why two steps: an action is mostly a decision (render a template, pick the address, check
consent, count points) and then one row (an outbox action, a ledger entry). Deciding as
each rule fires and writing all rows of the batch with one ``executemany`` per table
keeps the cost of a firing to microseconds. Each action's outcome is a dict the firing row
keeps; it is final when :meth:`Actions.flush` returns.

Outcome statuses: ``queued`` (an action in the outbox; ``due_at`` later than now when
quiet hours hold it), ``suppressed`` (the address opted out: nothing queued),
``awarded``/``deducted``/``tier_set``, ``added``/``removed``/``set``/``unset``/``unchanged``
(labels), ``emitted`` (a custom event on the change feed), ``skipped`` (nothing to do,
e.g. an order without the property points are computed from), ``failed`` (a template that
does not render, no address, insufficient points …), and ``not_supported_yet`` for an
action type the vocabulary would accept without a handler here (recorded, so nothing is
dropped in silence).

Debits and tiers set by a rule need the ledger's own checks (balance, floors): they run
through :mod:`personalization.loyalty` in a savepoint, after the earns planned so far are
written, and the profile's points are read again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from jinja2 import ChainableUndefined, Template
from jinja2.sandbox import ImmutableSandboxedEnvironment
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from identity.changes import record_changes
from personalization import loyalty
from personalization.action_requests import parse_request
from personalization.actions import (
    CHANNEL_OF,
    EMAIL_REPLY,
    EMAIL_SEND,
    IDENTIFIER_OF,
    SMS_SEND,
    NewAction,
    enqueue_many,
    new_action_id,
)
from personalization.consent import OPTED_OUT
from personalization.labels import (
    ACTION_CHANGES,
    LabelChange,
    Labels,
    apply_label_changes,
    change_for_action,
)
from personalization.loyalty.batch import LoyaltyBatch
from personalization.rules.evaluate import Context
from personalization.rules.schema import CompiledRule, RuleAction
from pipeline.errors import TransientError
from pipeline.processing import StoredEvent

NOT_SUPPORTED_YET = "not_supported_yet"
_ABSENT = object()
_DONE = {"add": "added", "remove": "removed", "set": "set", "unset": "unset"}
#: immutable: a template cannot change the dicts it is shown (shared by the batch's events)
_TEMPLATES = ImmutableSandboxedEnvironment(autoescape=False, undefined=ChainableUndefined)


@functools.lru_cache(maxsize=1024)
def template(source: str) -> Template:
    """A compiled template (compiling costs far more than rendering: once per text)."""
    return _TEMPLATES.from_string(source)


def must_propagate(exc: BaseException) -> bool:
    """Errors the batch must see: the database is busy or gone, or a concurrent writer won."""
    if isinstance(exc, TransientError | OperationalError):
        return True
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None)
        return exc.connection_invalidated or code in ("40001", "40P01")
    return False


def failure(exc: BaseException, prefix: str = "") -> dict[str, Any]:
    return {"status": "failed", "error": f"{prefix}{type(exc).__name__}: {exc}"[:500]}


@dataclass
class Step:
    """One action to take for one firing."""

    rule: CompiledRule
    action: RuleAction
    key: str
    event: StoredEvent
    profile_id: str
    context: Context
    #: when a message may go out (quiet hours); ``None``: now
    due: datetime | None = None


@dataclass
class LabelState:
    """A profile's tags, segments and rule-set traits as the batch's actions leave them."""

    tags: set[str] = field(default_factory=set)
    segments: set[str] = field(default_factory=set)
    traits: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, labels: Labels) -> LabelState:
        return cls(set(labels.tags), set(labels.segments), dict(labels.traits))

    def apply(self, change: LabelChange) -> bool:
        """Apply ``change`` in memory; did it change anything?"""
        held = self.tags if change.kind == "tag" else self.segments
        if change.kind == "trait":
            before = self.traits.get(change.name, _ABSENT)
            if change.op == "set":
                self.traits[change.name] = change.value
            else:
                self.traits.pop(change.name, None)
            return bool(before != self.traits.get(change.name, _ABSENT))
        present = change.name in held
        if change.op == "add":
            held.add(change.name)
            return not present
        held.discard(change.name)
        return present


@dataclass
class Actions:
    """The batch's pending writes (see the module doc)."""

    session: Session
    workspace_id: str
    now: datetime
    region: str
    loyalty: LoyaltyBatch | None
    consent: Callable[[str], dict[str, str]]
    messages: list[tuple[str, NewAction, datetime, dict[str, Any]]] = field(default_factory=list)
    #: the change feed's entries of this batch (``rule.fired``, ``custom.*``), in order
    changes: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    #: survivors' labels as read (when a candidate rule uses them), and as changed since
    read_labels: Mapping[str, Labels] = field(default_factory=dict)
    labels: dict[str, LabelState] = field(default_factory=dict)
    label_changes: list[tuple[LabelChange, dict[str, Any]]] = field(default_factory=list)
    #: decide only (``ecrm rules test``): the ledger is not touched, nothing is flushed
    dry_run: bool = False
    actions: int = 0
    failed: int = 0
    suppressed: int = 0

    def take(self, step: Step) -> dict[str, Any]:
        """Decide one action; its outcome (final once :meth:`flush` has run)."""
        handler = _HANDLERS.get(step.action.type)
        if handler is None:
            return {"type": step.action.type, "status": NOT_SUPPORTED_YET}
        self.actions += 1
        try:
            outcome = handler(self, step)
        except Exception as exc:
            if must_propagate(exc):
                raise
            outcome = failure(exc)
        if outcome.get("status") == "failed":
            self.failed += 1
        return _typed(step.action.type, outcome)

    def label_state(self, profile_id: str) -> LabelState | None:
        state = self.labels.get(profile_id)
        if state is None and profile_id in self.read_labels:
            state = self.labels[profile_id] = LabelState.of(self.read_labels[profile_id])
        return state

    def profile_extra(self, profile_id: str) -> dict[str, Any] | None:
        """What labels add to the profile a context shows (``None``: not read)."""
        found = self.read_labels.get(profile_id)
        state = self.labels.get(profile_id)
        if state is None:
            if found is None:
                return None
            return {
                "tags": list(found.tags),
                "segments": list(found.segments),
                "rule_traits": found.traits,
            }
        return {
            "tags": sorted(state.tags),
            "segments": sorted(state.segments),
            "rule_traits": dict(state.traits),
        }

    def flush(self) -> None:
        """Write what was decided: ledger entries, outbox actions, labels, change feed."""
        if self.loyalty is not None:
            self.loyalty.flush()
        if self.label_changes:
            changes = [change for change, _ in self.label_changes]
            results = apply_label_changes(self.session, self.workspace_id, changes, now=self.now)
            for (_, outcome), result in zip(self.label_changes, results, strict=True):
                outcome.update({k: v for k, v in result.items() if k != "profile_id"})
            self.label_changes = []
        if self.messages:
            items = [(action_id, new, due) for action_id, new, due, _ in self.messages]
            written = enqueue_many(self.session, self.workspace_id, items, now=self.now)
            for action_id, _, _, outcome in self.messages:
                if action_id not in written:  # queued before (its key): nothing sent twice
                    outcome["status"] = "already_queued"
            self.messages = []
        if self.changes:
            record_changes(self.session, self.workspace_id, self.changes, now=self.now)
        self.changes = []

    # handlers: each returns its outcome (or raises: a failed outcome)

    def _send(self, step: Step) -> dict[str, Any]:
        action, context = step.action, step.context
        names = {"event": context.event, "profile": context.profile, "loyalty": context.loyalty}
        rendered: dict[str, str] = {}
        for part in ("subject", "text", "html"):
            source = action.params.get(part)
            if isinstance(source, str):
                try:
                    rendered[part] = template(source).render(names)
                except Exception as exc:  # a template error is the action's outcome
                    return failure(exc, f"template {part}: ")
        body: dict[str, Any] = {"idempotency_key": step.key, **rendered}
        if "subject" in body:
            body["subject"] = body["subject"].strip()
        if action.type == "send_sms":
            body["kind"] = SMS_SEND
        elif action.params.get("reply"):
            body.update(kind=EMAIL_REPLY, in_reply_to=step.event.message_id)
        else:
            body["kind"] = EMAIL_SEND
        if body["kind"] != EMAIL_REPLY:  # the profile's address, known: no lookup
            kind = IDENTIFIER_OF[CHANNEL_OF[body["kind"]]]
            address = context.profile.get("identifiers", {}).get(kind)
            if address is None:
                return {"status": "failed", "error": f"the profile has no {kind} identifier"}
            body["to"] = address
        new = parse_request(
            self.session,
            self.workspace_id,
            body,
            default_region=self.region,
            origin=step.rule.origin,
        )
        new = replace(new, profile_id=step.profile_id)
        channel = CHANNEL_OF[new.kind]
        status = self._consent_status(step.profile_id, channel, new.recipient)
        if status == OPTED_OUT:
            self.suppressed += 1
            return {"status": "suppressed", "kind": new.kind, "reason": f"no {channel} consent"}
        action_id = new_action_id()
        outcome: dict[str, Any] = {"status": "queued", "action_id": action_id, "kind": new.kind}
        due = step.due or self.now
        if due > self.now:
            outcome["due_at"] = due.isoformat()
        self.messages.append((action_id, new, due, outcome))
        return outcome

    def _consent_status(self, profile_id: str, channel: str, recipient: str) -> str | None:
        return self.consent(profile_id).get(channel) if recipient else None

    def _earn(self, step: Step) -> dict[str, Any]:
        params = step.action.params
        if "per_property" in params:
            value = step.event.properties.get(str(params["per_property"]))
            if not isinstance(value, int | float) or isinstance(value, bool):
                return {"status": "skipped", "reason": f"no number in {params['per_property']}"}
            points = round(value * float(params.get("rate", 1)))
        else:
            points = round(float(params["points"]))
        if points <= 0:
            return {"status": "skipped", "reason": "no points"}
        if step.action.type == "deduct_points":
            return self._through_ledger(step, points)
        assert self.loyalty is not None
        return self.loyalty.earn(
            step.profile_id,
            points,
            reason=str(params.get("reason") or f"rule {step.rule.id}"),
            source=step.rule.origin,
            event_id=step.event.id,
            key=step.key,
        )

    def _through_ledger(self, step: Step, points: int) -> dict[str, Any]:
        """A debit or a tier set: the ledger's own checks, after the earns so far."""
        assert self.loyalty is not None
        if self.dry_run:
            return self._rehearse_ledger(step, points)
        self.loyalty.flush()
        config, params = self.loyalty.config, step.action.params
        try:
            with self.session.begin_nested():
                if step.action.type == "set_tier":
                    tier = loyalty.set_tier(
                        self.session,
                        self.workspace_id,
                        step.profile_id,
                        str(params["tier"]),
                        source=step.rule.origin,
                        now=self.now,
                        config=config,
                    )
                    outcome: dict[str, Any] = {"status": "tier_set", "tier": tier}
                else:
                    posted = loyalty.deduct(
                        self.session,
                        self.workspace_id,
                        step.profile_id,
                        points,
                        reason=str(params.get("reason") or f"rule {step.rule.id}"),
                        source=step.rule.origin,
                        event_id=step.event.id,
                        key=step.key,
                        now=self.now,
                        config=config,
                    )
                    outcome = {"status": "deducted", "points": points, "balance": posted.balance}
        finally:
            self.loyalty.reload(step.profile_id)
        return outcome

    def _rehearse_ledger(self, step: Step, points: int) -> dict[str, Any]:
        """What a debit or tier set would do, against the balance held in memory."""
        assert self.loyalty is not None
        standing = self.loyalty.standing[step.profile_id]
        if step.action.type == "set_tier":
            return {"status": "tier_set", "tier": str(step.action.params["tier"])}
        if standing.balance < points:
            return {
                "status": "failed",
                "error": f"InsufficientPoints: balance {standing.balance}, needs {points}",
            }
        standing.balance -= points
        return {"status": "deducted", "points": points, "balance": standing.balance}

    def _tier(self, step: Step) -> dict[str, Any]:
        return self._through_ledger(step, 0)

    def _label(self, step: Step) -> dict[str, Any]:
        """A tag, segment or rule-set trait: checked now, written with the batch's others."""
        change = change_for_action(
            step.action.type,
            step.action.params,
            profile_id=step.profile_id,
            source=step.rule.origin,
            key=step.key,
            event_id=step.event.id,
        )
        state = self.label_state(step.profile_id)
        if state is None:
            state = self.labels[step.profile_id] = LabelState()
        changed = state.apply(change)
        if self.dry_run:  # what apply_label_changes would answer
            return {
                "status": _DONE[change.op] if changed else "unchanged",
                change.kind: change.name,
            }
        outcome: dict[str, Any] = {"status": "pending"}
        self.label_changes.append((change, outcome))
        return outcome

    def _emit(self, step: Step) -> dict[str, Any]:
        """A custom event for webhook subscribers: on the profile change feed."""
        name = str(step.action.params["event"])
        data = {
            "event": name,
            "data": dict(step.action.params.get("data") or {}),
            "rule_id": step.rule.id,
            "rule_version": step.rule.version,
            "event_id": step.event.id,
        }
        self.changes.append((f"custom.{name}", step.profile_id, data))
        return {"status": "emitted", "event": f"custom.{name}"}


def _typed(action_type: str, outcome: dict[str, Any]) -> dict[str, Any]:
    """``outcome`` with ``type`` first, in place: :meth:`Actions.flush` completes it later."""
    rest = dict(outcome)
    outcome.clear()
    outcome["type"] = action_type
    outcome.update(rest)
    return outcome


_HANDLERS: dict[str, Callable[[Actions, Step], dict[str, Any]]] = {
    "send_email": Actions._send,
    "send_sms": Actions._send,
    "award_points": Actions._earn,
    "deduct_points": Actions._earn,
    "set_tier": Actions._tier,
    "emit_webhook": Actions._emit,
    **dict.fromkeys(ACTION_CHANGES, Actions._label),
}


__all__ = [
    "NOT_SUPPORTED_YET",
    "Actions",
    "LabelState",
    "Step",
    "failure",
    "must_propagate",
    "template",
]
