"""Tables of GDPR erasure: the audit of each erasure and the tombstones it leaves.

Why tombstones hold a keyed hash and not the identifier: the point of erasure is that the
hub no longer holds the address or number. A keyed hash (HMAC-SHA256, see
:mod:`identity.tombstones`) still lets resolution recognise the same identifier when it
comes back, while a copy of the database alone cannot test a guessed address against it.
``key_id`` names the key (a digest of it, never the key): tombstones made under another
key cannot match, and the id shows which ones those are.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import ForeignKey, Index, String, Table, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.db import Base, BigId, JsonDoc, UTCDateTime


class Erasure(Base):
    """One erasure of a person: who asked, which profile rows, what was erased (counts).

    Nothing personal is kept here: the reason is scrubbed of the person's identifiers and
    trait values like everything else the erasure touches.
    """

    __tablename__ = "erasures"
    __table_args__ = (Index("ix_erasures_profile", "workspace_id", "profile_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    #: the surviving profile erased, and the id that was asked for (perhaps merged away)
    profile_id: Mapped[str] = mapped_column(String(40))
    requested_id: Mapped[str] = mapped_column(String(40))
    #: every profile row of the person (the survivor and those merged into it)
    profile_ids: Mapped[list[str]] = mapped_column(JsonDoc)
    requested_by: Mapped[str | None] = mapped_column(String(120), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    #: how many rows of each kind were erased (``identity.erasure.COUNTS`` and the extras)
    counts: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    key_id: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ErasureTombstone(Base):
    """An erased identifier, as ``HMAC(key, kind NUL value)``: recognisable, not readable."""

    __tablename__ = "erasure_tombstones"
    __table_args__ = (
        UniqueConstraint("workspace_id", "digest", name="uq_erasure_tombstones_digest"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    #: hex HMAC-SHA256 of ``kind NUL value`` under the key named by ``key_id``
    digest: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str] = mapped_column(String(16))
    erasure_id: Mapped[int] = mapped_column(BigId, ForeignKey("erasures.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


#: Core tables for bulk statements (typed for mypy).
ERASURES = cast(Table, Erasure.__table__)
TOMBSTONES = cast(Table, ErasureTombstone.__table__)

__all__ = ["ERASURES", "TOMBSTONES", "Erasure", "ErasureTombstone"]
