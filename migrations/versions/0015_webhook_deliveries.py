"""webhook deliveries: the outbox of signed messages, their attempts and the feed cursor

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06

``webhook_deliveries`` holds one row per message for an endpoint (its exact body, state
and next attempt), ``webhook_attempts`` one row per POST (the delivery log) and
``webhook_cursors`` how far each workspace's change feed has been fanned out. Endpoints
gain ``failing_since`` (auto-disable) and a dispatcher lease.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pipeline.db

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = pipeline.db.UTCDateTime(timezone=True)
_OPEN = sa.text("state IN ('pending', 'retrying')")


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.add_column(sa.Column("failing_since", _TIME, nullable=True))
        batch.add_column(sa.Column("lease_token", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("lease_until", _TIME, nullable=True))
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("endpoint_id", sa.String(length=40), nullable=False),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=120), nullable=False),
        sa.Column("change_id", sa.BigInteger(), nullable=False),
        sa.Column("coalesced", sa.Integer(), nullable=False),
        sa.Column("replay", sa.Boolean(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TIME, nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("delivered_at", _TIME, nullable=True),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoints.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
    )
    op.create_index("ix_webhook_deliveries_workspace", "webhook_deliveries", ["workspace_id", "id"])
    op.create_index(
        "ix_webhook_deliveries_profile",
        "webhook_deliveries",
        ["endpoint_id", "profile_id", "id"],
        sqlite_where=_OPEN,
        postgresql_where=_OPEN,
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["endpoint_id", "next_attempt_at"],
        sqlite_where=_OPEN,
        postgresql_where=_OPEN,
    )
    if op.get_bind().dialect.name == "postgresql":
        # an outbox: rows come in bursts and are updated a few times each. Fresh statistics
        # matter (planned as a "1-row" table, the per-profile head check scanned every open
        # delivery per candidate), so autovacuum analyzes after a few hundred changed rows
        op.execute(
            "ALTER TABLE webhook_deliveries SET (autovacuum_analyze_threshold = 200, "
            "autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_scale_factor = 0.05)"
        )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("delivery_id", _ID, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("started_at", _TIME, nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.ForeignKeyConstraint(["delivery_id"], ["webhook_deliveries.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_attempts_delivery", "webhook_attempts", ["delivery_id", "id"])
    op.create_table(
        "webhook_cursors",
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("change_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("workspace_id"),
    )


def downgrade() -> None:
    op.drop_table("webhook_cursors")
    op.drop_index("ix_webhook_attempts_delivery", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_profile", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_workspace", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("lease_token")
        batch.drop_column("failing_since")
