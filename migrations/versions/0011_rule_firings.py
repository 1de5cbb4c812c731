"""rule firings: each time a rule fired for an event, exactly once

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03

``rule_firings`` holds one row per (workspace, rule, triggering event): the rule version,
the profile, the condition trace and each action's outcome. The unique constraint is what
keeps a retried batch from firing a rule twice.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import pipeline.db

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TIME = pipeline.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "rule_firings",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("rule_id", sa.String(length=63), nullable=False),
        sa.Column("rule_version", sa.Integer(), nullable=False),
        sa.Column("event_id", _ID, nullable=False),
        sa.Column("profile_id", sa.String(length=40), nullable=True),
        sa.Column("matched", sa.Boolean(), nullable=False),
        sa.Column("trace", _JSON, nullable=False),
        sa.Column("outcomes", _JSON, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "rule_id", "event_id", name="uq_rule_firings_event"),
    )
    op.create_index("ix_rule_firings_rule", "rule_firings", ["workspace_id", "rule_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_rule_firings_rule", table_name="rule_firings")
    op.drop_table("rule_firings")
