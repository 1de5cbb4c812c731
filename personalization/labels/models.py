"""The table of rule-set profile state: tags, segments and traits, append-only.

Why a table of its own and not ``profiles.traits``: a profile's traits are derived from its
events and rebuilt from the event log whenever an unmerge replays a cluster; what rules
(or an operator) decided about a person is not in any event, so it would be lost there.
Like the loyalty ledger, each row is keyed by the profile it was written to (the survivor
at the time); a merged-away profile's rows count for its survivor (see
:mod:`personalization.labels.store`), and an unmerge keeps them with the id they name.

Why append-only: the state of a (kind, name) is its latest row, so history is kept for
free (export, audit, "since when is she VIP"), and an idempotency key unique per
workspace makes a retried batch write nothing twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Table, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from pipeline.db import Base, BigId, UTCDateTime


class ScalarJson(TypeDecorator[Any]):
    """A JSON scalar (JSONB on PostgreSQL); Python ``None`` is SQL ``NULL``.

    Why not plain ``JSON``: SQLite gives a column declared ``JSON`` numeric affinity, so
    the text ``1`` or ``2.5`` a number is written as comes back as an integer or a real,
    which the JSON parser refuses; such a value is the number it stands for.
    """

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        inner = super().result_processor(dialect, coltype)
        if dialect.name != "sqlite" or inner is None:
            return inner

        def process(value: Any) -> Any:
            if isinstance(value, int | float):  # numeric affinity took the text
                return value
            return inner(value)

        return process


_VALUE = ScalarJson()


class ProfileLabel(Base):
    """One change of one tag, segment or rule-set trait of a profile: never updated.

    Rows are deleted only by a GDPR erasure of the person.
    """

    __tablename__ = "profile_labels"
    __table_args__ = (
        UniqueConstraint("workspace_id", "idempotency_key", name="uq_profile_labels_idempotency"),
        # a set of profiles' latest row per (kind, name): one index range per profile
        Index("ix_profile_labels_profile", "workspace_id", "profile_id", "kind", "name", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    #: the profile the row was written to (the survivor at that time)
    profile_id: Mapped[str] = mapped_column(String(40))
    #: ``tag``, ``segment`` or ``trait``
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(64))
    #: ``add``/``remove`` (tags, segments) or ``set``/``unset`` (traits)
    op: Mapped[str] = mapped_column(String(8))
    #: a trait's value (a JSON scalar); ``NULL`` otherwise
    value: Mapped[Any] = mapped_column(_VALUE, nullable=True)
    #: who: ``rule:{id}@{version}``, ``api``, ``cli``
    source: Mapped[str] = mapped_column(String(120))
    #: the event log id of the event that caused it, when one did
    event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


LABELS = cast(Table, ProfileLabel.__table__)

__all__ = ["LABELS", "ProfileLabel"]
