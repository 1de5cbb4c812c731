"""profile_events: the event's type, so history conditions need no join with events

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-08

A history condition (``history.count(type=order.completed, window=30d)``,
``history.days_since(type=page.viewed)``) counts a profile's events of a type before a
time. With the type only on ``events``, each of the profile's events was looked up there
(a join per row, with the event's whole row read). The type is copied onto
``profile_events`` (events are immutable, so it never goes stale): the timeline index
finds the profile's rows in the time range and the type is read from the small row
itself. (An index with the type as well made counting index-only, but cost 4-8% of the
no-rules pipeline's throughput in interleaved runs and gained nothing at 20-40 events a
profile, so it was left out.) Existing rows are filled from ``events``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("profile_events", sa.Column("type", sa.String(64), nullable=True))
    op.execute(
        "UPDATE profile_events SET type ="
        " (SELECT events.type FROM events WHERE events.id = profile_events.event_id)"
    )
    with op.batch_alter_table("profile_events") as batch_op:
        batch_op.alter_column("type", existing_type=sa.String(64), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("profile_events") as batch_op:
        batch_op.drop_column("type")
