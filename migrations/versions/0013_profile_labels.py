"""profile labels: durable tags, segments and rule-set traits

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04

``profile_labels`` is append-only: one row per change of a profile's tag, segment or
rule-set trait (``add``/``remove``, ``set``/``unset``), keyed by the profile it was written
to, with its source, the event that caused it and an idempotency key unique per workspace.
The state of a (kind, name) is its latest row; ``ix_profile_labels_profile`` finds a set of
profiles' latest rows. Kept out of ``profiles.traits``, which an unmerge rebuilds from
events.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import pipeline.db

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TIME = pipeline.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "profile_labels",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("op", sa.String(length=8), nullable=False),
        sa.Column("value", _JSON, nullable=True),
        sa.Column("source", sa.String(length=120), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "workspace_id", "idempotency_key", name="uq_profile_labels_idempotency"
        ),
    )
    op.create_index(
        "ix_profile_labels_profile",
        "profile_labels",
        ["workspace_id", "profile_id", "kind", "name", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_profile_labels_profile", table_name="profile_labels")
    op.drop_table("profile_labels")
