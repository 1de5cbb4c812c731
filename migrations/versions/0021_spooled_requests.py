"""spooled_requests, ingest_rejections: the raw-request spool of ECRM_INGEST_MODE=spool

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04

In spool mode the API checks a Segment batch's shape and stores the request as received
(``spooled_requests``, under a batch row the relay publishes); the worker expands it into
events. Messages refused only then are kept in ``ingest_rejections``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import pipeline.db

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "spooled_requests",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(63), sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("batch_id", _ID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("received_at", pipeline.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("skip", _JSON, nullable=False),
    )
    op.create_index("ix_spooled_requests_batch", "spooled_requests", ["batch_id"])
    op.create_table(
        "ingest_rejections",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(63), sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("batch_id", _ID, nullable=False),
        sa.Column("received_at", pipeline.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=True),
        sa.Column("field", sa.String(100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("rejected_at", pipeline.db.UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ingest_rejections_workspace", "ingest_rejections", ["workspace_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_ingest_rejections_workspace", "ingest_rejections")
    op.drop_table("ingest_rejections")
    op.drop_index("ix_spooled_requests_batch", "spooled_requests")
    op.drop_table("spooled_requests")
