"""the loyalty points ledger, tiers and rewards

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

``loyalty_entries`` is the append-only points ledger (earn, redeem, expire, adjust; the
balance is its sum), an idempotency key unique per workspace; ``loyalty_accounts`` holds
each profile's tier, tier floor and next expiry, and is the row ledger changes lock.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pipeline.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = pipeline.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "loyalty_entries",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("source", sa.String(length=120), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("lot_id", sa.BigInteger(), nullable=True),
        sa.Column("reward_id", sa.String(length=64), nullable=True),
        sa.Column("expires_at", _TIME, nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "workspace_id", "idempotency_key", name="uq_loyalty_entries_idempotency"
        ),
    )
    op.create_index(
        "ix_loyalty_entries_profile", "loyalty_entries", ["workspace_id", "profile_id", "id"]
    )
    op.create_table(
        "loyalty_accounts",
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=True),
        sa.Column("tier_since", _TIME, nullable=True),
        sa.Column("tier_floor", sa.String(length=64), nullable=True),
        sa.Column("next_expiry_at", _TIME, nullable=True),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("workspace_id", "profile_id"),
    )
    op.create_index(
        "ix_loyalty_accounts_expiry", "loyalty_accounts", ["workspace_id", "next_expiry_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_loyalty_accounts_expiry", table_name="loyalty_accounts")
    op.drop_table("loyalty_accounts")
    op.drop_index("ix_loyalty_entries_profile", table_name="loyalty_entries")
    op.drop_table("loyalty_entries")
