"""profile timeline: which profile each processed event was counted in

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Until now the profile of an event was derived when asked (the owner of its strongest
identifier). ``profile_events`` stores it when the event is processed, so a profile's
timeline and history conditions are index reads. Existing processed events are carried
over with the rule that derived them then, frozen here as it was (identity priority of
revision 0004).
"""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

import pipeline.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_PRIORITY = (
    "user_id",
    "customer_id",
    "email",
    "phone",
    "loyalty_card",
    "device_id",
    "anonymous_id",
)
_RANK = {kind: i for i, kind in enumerate(_PRIORITY)}
_CHUNK = 2000

_profile_events = sa.table(
    "profile_events",
    sa.column("event_id", _ID),
    sa.column("workspace_id", sa.String()),
    sa.column("profile_id", sa.String()),
    sa.column("occurred_at", pipeline.db.UTCDateTime()),
)


def upgrade() -> None:
    op.create_table(
        "profile_events",
        sa.Column("event_id", _ID, autoincrement=False, nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.Column("occurred_at", pipeline.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"]),
        sa.ForeignKeyConstraint(["profile_id"], ["profiles.id"]),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index(
        "ix_profile_events_timeline",
        "profile_events",
        ["workspace_id", "profile_id", "occurred_at", "event_id"],
        unique=False,
    )
    _backfill(op.get_bind())


def _backfill(bind: sa.Connection) -> None:
    """Attribute every processed event to the owner of its strongest identifier."""
    processed = sa.text(
        "SELECT e.id, e.workspace_id, e.identifiers, e.occurred_at FROM events e"
        " JOIN batches b ON b.id = e.batch_id"
        " WHERE b.status = 'done' AND e.id > :after"
        " AND NOT EXISTS (SELECT 1 FROM event_failures f WHERE f.event_id = e.id)"
        " ORDER BY e.id LIMIT :n"
    ).columns(occurred_at=pipeline.db.UTCDateTime())
    owner_of = sa.text(
        "SELECT profile_id FROM profile_identifiers"
        " WHERE workspace_id = :ws AND kind = :kind AND value = :value"
    )
    after = 0
    while True:
        rows = bind.execute(processed, {"after": after, "n": _CHUNK}).all()
        if not rows:
            return
        found: list[dict[str, Any]] = []
        for event_id, workspace_id, identifiers, occurred_at in rows:
            ids = identifiers if isinstance(identifiers, dict) else json.loads(identifiers)
            for kind, value in sorted(ids.items(), key=lambda kv: _RANK.get(kv[0], len(_RANK))):
                profile_id = bind.execute(
                    owner_of, {"ws": workspace_id, "kind": kind, "value": value}
                ).scalar()
                if profile_id is not None:
                    found.append(
                        {
                            "event_id": event_id,
                            "workspace_id": workspace_id,
                            "profile_id": profile_id,
                            "occurred_at": occurred_at,
                        }
                    )
                    break
        if found:
            bind.execute(_profile_events.insert(), found)
        after = rows[-1][0]


def downgrade() -> None:
    op.drop_index("ix_profile_events_timeline", table_name="profile_events")
    op.drop_table("profile_events")
