"""GDPR erasure: the audit of each erasure and the tombstones of erased identifiers

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

``erasures`` records each erasure of a person (the profile rows, who asked, what was
erased, as counts) and ``erasure_tombstones`` the keyed hash of each identifier it erased,
so that later events carrying one can be recognised (and suppressed when configured)
without the hub holding the identifier itself.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import pipeline.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TIME = pipeline.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.Column("requested_id", sa.String(length=40), nullable=False),
        sa.Column("profile_ids", _JSON, nullable=False),
        sa.Column("requested_by", sa.String(length=120), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("counts", _JSON, nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_erasures_profile", "erasures", ["workspace_id", "profile_id"])
    op.create_table(
        "erasure_tombstones",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("erasure_id", _ID, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["erasure_id"], ["erasures.id"]),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "digest", name="uq_erasure_tombstones_digest"),
    )


def downgrade() -> None:
    op.drop_table("erasure_tombstones")
    op.drop_index("ix_erasures_profile", table_name="erasures")
    op.drop_table("erasures")
