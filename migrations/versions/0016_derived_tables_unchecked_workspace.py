"""derived identity tables: no foreign key from workspace_id to workspaces

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07

``profile_identifiers``, ``profile_changes``, ``profile_channel_counts`` and
``profile_events`` get a row per identifier or event and are written only by resolution,
in the event's own workspace; the check of their ``workspace_id`` key cost PostgreSQL
about 4 ms per 500 rows each (see ``identity.models.UNCHECKED_WORKSPACE``). Their keys to
profiles and events stay. SQLite rebuilds each table (batch mode), naming its unnamed key
by a convention so it can be dropped.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("profile_identifiers", "profile_changes", "profile_channel_counts", "profile_events")
#: how SQLite's unnamed keys are named for batch mode (PostgreSQL named them this way)
_CONVENTION = {"fk": "%(table_name)s_%(column_0_name)s_fkey"}


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, naming_convention=_CONVENTION) as batch_op:
            batch_op.drop_constraint(f"{table}_workspace_id_fkey", type_="foreignkey")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, naming_convention=_CONVENTION) as batch_op:
            batch_op.create_foreign_key(
                f"{table}_workspace_id_fkey", "workspaces", ["workspace_id"], ["id"]
            )
