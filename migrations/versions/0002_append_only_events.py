"""append-only event log: processing state moves to batches and event_failures

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Events are no longer updated after they are appended: an event is processed when its batch
is done, failed when an ``event_failures`` row quarantines it. Every event now belongs to
the batch of the transaction that appended it. Existing data is carried over: failed events
get failure rows, and events still waiting for a batch get one per workspace.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import pipeline.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("replay", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    bind = op.get_bind()
    _batch_the_unbatched(bind)
    failed = bind.execute(
        sa.text(
            "SELECT id, workspace_id, COALESCE(error, 'failed'), attempts + 1, "
            "COALESCE(processed_at, received_at) AS failed_at FROM events WHERE status = 'failed'"
        ).columns(failed_at=pipeline.db.UTCDateTime())
    ).all()
    # events is rebuilt (SQLite) before anything references it, so foreign keys hold
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_status")
        for column in ("status", "profile_id", "attempts", "error", "processed_at"):
            batch_op.drop_column(column)
        batch_op.alter_column("batch_id", existing_type=_ID, nullable=False)
        # pages of the log in id order (events, ?status=processed) without sorting it
        batch_op.create_index("ix_events_workspace_log", ["workspace_id", "id"], unique=False)
    failures = op.create_table(
        "event_failures",
        sa.Column("event_id", _ID, nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failed_at", pipeline.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("retry_batch_id", _ID, nullable=True),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"]),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index(
        "ix_event_failures_workspace", "event_failures", ["workspace_id", "event_id"], unique=False
    )
    op.create_index("ix_event_failures_retry", "event_failures", ["retry_batch_id"], unique=False)
    if failed and failures is not None:
        columns = ("event_id", "workspace_id", "error", "attempts", "failed_at")
        op.bulk_insert(failures, [dict(zip(columns, row, strict=True)) for row in failed])


def _batch_the_unbatched(bind: sa.Connection) -> None:
    """Events still waiting for the old relay get a fresh batch per workspace."""
    now = datetime.now(UTC)
    workspaces = bind.execute(
        sa.text(
            "SELECT workspace_id, COUNT(*) FROM events WHERE batch_id IS NULL GROUP BY workspace_id"
        )
    ).all()
    for workspace_id, count in workspaces:
        batch_id = bind.execute(
            sa.text(
                "INSERT INTO batches (workspace_id, status, event_count, created_at, due_at, "
                "publish_count, attempts, replay) VALUES (:ws, 'queued', :n, :now, :now, 0, 0, "
                ":replay) RETURNING id"
            ).bindparams(sa.bindparam("now", type_=pipeline.db.UTCDateTime())),
            {"ws": workspace_id, "n": count, "now": now, "replay": False},
        ).scalar_one()
        bind.execute(
            sa.text(
                "UPDATE events SET batch_id = :batch WHERE batch_id IS NULL AND workspace_id = :ws"
            ),
            {"batch": batch_id, "ws": workspace_id},
        )


def downgrade() -> None:
    bind = op.get_bind()
    failed = bind.execute(sa.text("SELECT event_id, error, attempts FROM event_failures")).all()
    op.drop_index("ix_event_failures_retry", table_name="event_failures")
    op.drop_index("ix_event_failures_workspace", table_name="event_failures")
    op.drop_table("event_failures")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_workspace_log")
        batch_op.alter_column("batch_id", existing_type=_ID, nullable=True)
        batch_op.add_column(
            sa.Column("status", sa.String(length=16), nullable=False, server_default="pending")
        )
        batch_op.add_column(sa.Column("profile_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("processed_at", pipeline.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index("ix_events_status", ["workspace_id", "status"], unique=False)
    bind.execute(
        sa.text(
            "UPDATE events SET status = 'processed' WHERE batch_id IN "
            "(SELECT id FROM batches WHERE status = 'done' AND NOT replay)"
        )
    )
    for event_id, error, attempts in failed:
        bind.execute(
            sa.text(
                "UPDATE events SET status = 'failed', error = :e, attempts = :n WHERE id = :id"
            ),
            {"e": error, "n": attempts, "id": event_id},
        )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("replay")
