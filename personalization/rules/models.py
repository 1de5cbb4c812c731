"""Tables of the rules: the current state of each rule, every version it had, its firings.

Why two tables: ``rule_versions`` is the history (append-only: every change of a rule,
including being disabled because it left the rule file, is a new version, so an action can
name the exact ``rule:{id}@{version}`` that caused it); ``rules`` is the small current
index (version, enabled, digest) that an apply compares against without reading the
definitions. ``rule_firings`` records each time a rule fired for an event (the trace of
its conditions and the outcome of each action); its unique ``(workspace, rule, event)``
is what makes firing exactly once under retries.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.db import Base, BigId, JsonDoc, UTCDateTime


class Rule(Base):
    """One rule of a workspace as it is now (its latest version)."""

    __tablename__ = "rules"

    workspace_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("workspaces.id"), primary_key=True
    )
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean)
    priority: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    #: SHA-256 of the canonical JSON of the latest definition: unchanged rules make no version
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RuleVersion(Base):
    """One version of a rule: its whole definition, never changed once written."""

    __tablename__ = "rule_versions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "rule_id"],
            ["rules.workspace_id", "rules.id"],
            name="fk_rule_versions_rule",
        ),
    )

    workspace_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    enabled: Mapped[bool] = mapped_column(Boolean)
    #: the rule as checked (defaults filled in), JSON
    definition: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    digest: Mapped[str] = mapped_column(String(64))
    #: ``created``, ``updated`` or ``removed`` (left the rule set: disabled)
    change: Mapped[str] = mapped_column(String(16))
    #: where it came from: the file name given to ``ecrm rules apply``, or ``api``
    source: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RuleFiring(Base):
    """A rule that fired for one event: what its conditions saw and what its actions did."""

    __tablename__ = "rule_firings"
    __table_args__ = (
        # event first: a batch reads its events' firings by event id (see migration 0017)
        UniqueConstraint("workspace_id", "event_id", "rule_id", name="uq_rule_firings_event"),
        Index("ix_rule_firings_rule", "workspace_id", "rule_id", "id"),
        Index("ix_rule_firings_profile", "workspace_id", "profile_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    rule_id: Mapped[str] = mapped_column(String(63))
    rule_version: Mapped[int] = mapped_column(Integer)
    event_id: Mapped[int] = mapped_column(BigId)
    profile_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    #: false: a near miss (recorded only for rules with ``trace: true``)
    matched: Mapped[bool] = mapped_column(Boolean)
    #: ``None``: the actions ran; else why they were held back (``holdout``, a cap)
    held: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: the evaluated leaves with the values seen (``LeafResult.view``)
    trace: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc)
    #: one entry per action: ``{"type", "status", ...}``
    outcomes: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


RULES = cast(Table, Rule.__table__)
RULE_VERSIONS = cast(Table, RuleVersion.__table__)
RULE_FIRINGS = cast(Table, RuleFiring.__table__)
