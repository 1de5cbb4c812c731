"""write_keys: write keys kept in the database, one per source, revocable at run time

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03

``ECRM_WRITE_KEYS`` can only change with a restart of every API process. Keys created with
``ecrm keys create`` or ``POST /v1/write-keys`` live here, as their SHA-256 only, and are
revoked with ``ecrm keys revoke`` or ``DELETE /v1/write-keys/{id}``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pipeline.db

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "write_keys",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("workspace_id", sa.String(63), sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", pipeline.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", pipeline.db.UTCDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("write_keys")
