"""Storing rule sets: apply a whole set atomically, with a new version for every change.

:func:`apply_rule_set` takes a checked :class:`~personalization.rules.schema.RuleSet` (the
whole set of a workspace, as a rule file or ``PUT /v1/rules`` gives it) and, in the
caller's one transaction:

- a rule that is new gets version 1 (``created``);
- a rule whose definition changed gets the next version (``updated``); an unchanged one
  (same digest of its canonical JSON) gets none;
- a rule that is no longer in the set is *disabled*, not deleted: a new version with
  ``enabled: false`` (``removed``); its history stays, and actions keep naming it.

All or none: the set was checked before anything is written, and the writes share the
caller's transaction. Concurrent applies to one workspace are serialized by a lock on the
workspace row (PostgreSQL; SQLite's write transactions are serial anyway).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from personalization.rules.checks import check_rule_set
from personalization.rules.models import Rule, RuleVersion
from personalization.rules.schema import CompiledRule, RuleSet, RuleSetInvalid
from pipeline.envelope import utcnow
from pipeline.errors import HubError, ValidationError
from pipeline.models import Workspace

CREATED = "created"
UPDATED = "updated"
REMOVED = "removed"


@dataclass
class ApplyResult:
    """What an apply did, rule by rule (``id -> version``)."""

    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    disabled: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.disabled)

    def view(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "disabled": self.disabled,
            "unchanged": self.unchanged,
        }

    def summary(self) -> str:
        return (
            f"{len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.disabled)} disabled, {len(self.unchanged)} unchanged"
        )


def digest(definition: Mapping[str, Any]) -> str:
    """SHA-256 of a definition's canonical JSON (sorted keys)."""
    return hashlib.sha256(orjson.dumps(definition, option=orjson.OPT_SORT_KEYS)).hexdigest()


def apply_rule_set(
    session: Session,
    workspace_id: str,
    rule_set: RuleSet,
    *,
    source: str,
    now: datetime | None = None,
) -> ApplyResult:
    """Make ``rule_set`` the workspace's rules (see the module doc); returns what changed."""
    now = now or utcnow()
    lock = select(Workspace.id).where(Workspace.id == workspace_id)
    if session.get_bind().dialect.name == "postgresql":
        lock = lock.with_for_update()
    if session.execute(lock).first() is None:
        raise ValidationError("workspace", f"no workspace {workspace_id!r}")
    current = {
        rule.id: rule
        for rule in session.scalars(select(Rule).where(Rule.workspace_id == workspace_id))
    }
    result = ApplyResult()
    source = source[:255]
    for compiled in rule_set.rules:
        definition = dict(compiled.definition)
        new_digest = digest(definition)
        existing = current.get(compiled.id)
        if existing is None:
            row = Rule(
                workspace_id=workspace_id,
                id=compiled.id,
                version=1,
                enabled=compiled.enabled,
                priority=compiled.priority,
                name=compiled.name,
                digest=new_digest,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()  # the version row's foreign key needs it
            _add_version(session, row, definition, CREATED, source, now)
            result.created[compiled.id] = 1
        elif existing.digest == new_digest:
            result.unchanged[compiled.id] = existing.version
        else:
            _bump(existing, compiled.enabled, compiled.priority, compiled.name, new_digest, now)
            _add_version(session, existing, definition, UPDATED, source, now)
            result.updated[compiled.id] = existing.version
    incoming = {rule.id for rule in rule_set.rules}
    for rule_id in sorted(set(current) - incoming):
        existing = current[rule_id]
        if not existing.enabled:
            result.unchanged[rule_id] = existing.version
            continue
        latest = _version(session, workspace_id, rule_id, existing.version)
        definition = {**latest.definition, "enabled": False}
        _bump(existing, False, existing.priority, existing.name, digest(definition), now)
        _add_version(session, existing, definition, REMOVED, source, now)
        result.disabled[rule_id] = existing.version
    session.flush()
    return result


def _bump(
    row: Rule, enabled: bool, priority: int, name: str, new_digest: str, now: datetime
) -> None:
    row.version += 1
    row.enabled, row.priority, row.name = enabled, priority, name
    row.digest, row.updated_at = new_digest, now


def _add_version(
    session: Session,
    row: Rule,
    definition: dict[str, Any],
    change: str,
    source: str,
    now: datetime,
) -> None:
    session.add(
        RuleVersion(
            workspace_id=row.workspace_id,
            rule_id=row.id,
            version=row.version,
            enabled=row.enabled,
            definition=definition,
            digest=row.digest,
            change=change,
            source=source,
            created_at=now,
        )
    )


def _version(session: Session, workspace_id: str, rule_id: str, version: int) -> RuleVersion:
    found = session.get(RuleVersion, (workspace_id, rule_id, version))
    if found is None:  # the foreign key and apply_rule_set make this impossible
        raise HubError(f"rule {rule_id} has no version {version}")
    return found


def _current(session: Session, workspace_id: str) -> list[tuple[Rule, RuleVersion]]:
    query = (
        select(Rule, RuleVersion)
        .join(
            RuleVersion,
            (RuleVersion.workspace_id == Rule.workspace_id)
            & (RuleVersion.rule_id == Rule.id)
            & (RuleVersion.version == Rule.version),
        )
        .where(Rule.workspace_id == workspace_id)
        .order_by(Rule.priority.desc(), Rule.id)
    )
    return [(rule, version) for rule, version in session.execute(query).all()]


def rule_view(rule: Rule, version: RuleVersion) -> dict[str, Any]:
    """A rule as the API and the CLI show it: its current version's definition."""
    return {
        "id": rule.id,
        "version": rule.version,
        "enabled": rule.enabled,
        "priority": rule.priority,
        "name": rule.name,
        "definition": version.definition,
        "created_at": rule.created_at.isoformat(),
        "updated_at": rule.updated_at.isoformat(),
    }


def list_rules(session: Session, workspace_id: str) -> list[dict[str, Any]]:
    """Every rule of the workspace (disabled ones too), highest priority first."""
    return [rule_view(rule, version) for rule, version in _current(session, workspace_id)]


def get_rule(session: Session, workspace_id: str, rule_id: str) -> dict[str, Any] | None:
    """One rule with all its versions (newest first), or ``None``."""
    rule = session.get(Rule, (workspace_id, rule_id))
    if rule is None:
        return None
    versions = list(
        session.scalars(
            select(RuleVersion)
            .where(RuleVersion.workspace_id == workspace_id, RuleVersion.rule_id == rule_id)
            .order_by(RuleVersion.version.desc())
        )
    )
    view = rule_view(rule, versions[0])
    view["versions"] = [
        {
            "version": v.version,
            "enabled": v.enabled,
            "change": v.change,
            "source": v.source,
            "created_at": v.created_at.isoformat(),
            "definition": v.definition,
        }
        for v in versions
    ]
    return view


def load_rules(session: Session, workspace_id: str) -> list[CompiledRule]:
    """The enabled rules of the workspace, compiled, each with its version (for firing).

    A stored definition that no longer passes the checks (the vocabulary changed under
    it) raises :class:`RuleSetInvalid` naming it, rather than being skipped in silence.
    """
    rows = [(rule, version) for rule, version in _current(session, workspace_id) if rule.enabled]
    if not rows:
        return []
    try:
        checked = check_rule_set({"rules": [version.definition for _, version in rows]})
    except RuleSetInvalid as exc:
        raise RuleSetInvalid(exc.issues, source=f"stored rules of {workspace_id}") from None
    versions = {rule.id: rule.version for rule, _ in rows}
    return [replace(rule, version=versions[rule.id]) for rule in checked.rules]
