"""outbound delivery: the actions outbox and channel consent per address

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

``actions`` is the delivery outbox (email.send, email.reply, sms.send) with its retry
state; ``consents`` is the latest consent decision per (workspace, channel, address),
derived from events carrying ``properties.consent``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import pipeline.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "actions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("profile_id", sa.String(length=40), nullable=True),
        sa.Column("recipient", sa.String(length=256), nullable=False),
        sa.Column("payload", _JSON, nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("origin", sa.String(length=120), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due_at", pipeline.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lease_until", pipeline.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("provider_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", pipeline.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", pipeline.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", pipeline.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "idempotency_key", name="uq_actions_idempotency"),
    )
    op.create_index("ix_actions_status_due", "actions", ["status", "due_at"], unique=False)
    op.create_index(
        "ix_actions_workspace_status", "actions", ["workspace_id", "status", "id"], unique=False
    )
    op.create_table(
        "consents",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("updated_at", pipeline.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "channel", "address", name="uq_consents_address"),
    )


def downgrade() -> None:
    op.drop_table("consents")
    op.drop_index("ix_actions_workspace_status", table_name="actions")
    op.drop_index("ix_actions_status_due", table_name="actions")
    op.drop_table("actions")
