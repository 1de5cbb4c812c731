"""marketing rules and their versions

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

``rules`` holds each rule's current state (version, enabled, priority, digest of its
definition); ``rule_versions`` every version it had, never changed once written. A rule
that leaves the rule set is disabled by a new version, not deleted.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import pipeline.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TIME = pipeline.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "rules",
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("workspace_id", "id"),
    )
    op.create_table(
        "rule_versions",
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("rule_id", sa.String(length=63), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("definition", _JSON, nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("change", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "rule_id"],
            ["rules.workspace_id", "rules.id"],
            name="fk_rule_versions_rule",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "rule_id", "version"),
    )


def downgrade() -> None:
    op.drop_table("rule_versions")
    op.drop_table("rules")
