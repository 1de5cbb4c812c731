"""identity graph: merges with their audit, refused joins, identifier provenance

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

``profile_merges`` audits every merge (which profile went into which, the event and the
identifier that caused it); ``identity_conflicts`` keeps joins refused by the limits;
``profile_identifiers`` gains the event that attached each identifier, the identifier
that linked it, the profile it first joined (for ``explain``) and whether several people
share it. ``match_keys`` files profiles under blocking keys for probabilistic matching,
``identity_reviews`` holds probable matches waiting for a person. Identifiers of existing
profiles have no provenance.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import pipeline.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("profile_identifiers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_event_id", _ID, nullable=True))
        batch_op.add_column(sa.Column("linked_by", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("attached_to", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("sharing", sa.String(length=16), nullable=True))
    op.create_index(
        "ix_identifiers_sharing",
        "profile_identifiers",
        ["workspace_id", "sharing"],
        sqlite_where=sa.text("sharing IS NOT NULL"),
        postgresql_where=sa.text("sharing IS NOT NULL"),
    )
    op.create_table(
        "profile_merges",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("survivor_id", sa.String(length=40), nullable=False),
        sa.Column("merged_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", _ID, nullable=True),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("evidence", _JSON, nullable=False),
        sa.Column("created_at", pipeline.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_profile_merges_survivor", "profile_merges", ["workspace_id", "survivor_id"])
    op.create_index("ix_profile_merges_merged", "profile_merges", ["workspace_id", "merged_id"])
    op.create_table(
        "identity_conflicts",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("event_id", _ID, nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("profile_ids", _JSON, nullable=False),
        sa.Column("identifier", sa.String(length=300), nullable=True),
        sa.Column("detail", _JSON, nullable=False),
        sa.Column("created_at", pipeline.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_identity_conflicts_workspace", "identity_conflicts", ["workspace_id", "id"])
    op.create_index(
        "ix_identity_conflicts_identifier", "identity_conflicts", ["workspace_id", "identifier"]
    )
    op.create_table(
        "match_keys",
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("block", sa.String(length=300), nullable=False),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("workspace_id", "block", "profile_id"),
    )
    op.create_table(
        "identity_reviews",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("event_id", _ID, nullable=True),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.Column("candidate_id", sa.String(length=40), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("evidence", _JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", pipeline.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_at", pipeline.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=120), nullable=True),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_identity_reviews_status", "identity_reviews", ["workspace_id", "status", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_identity_reviews_status", table_name="identity_reviews")
    op.drop_table("identity_reviews")
    op.drop_table("match_keys")
    op.drop_index("ix_identity_conflicts_identifier", table_name="identity_conflicts")
    op.drop_index("ix_identity_conflicts_workspace", table_name="identity_conflicts")
    op.drop_table("identity_conflicts")
    op.drop_index("ix_profile_merges_merged", table_name="profile_merges")
    op.drop_index("ix_profile_merges_survivor", table_name="profile_merges")
    op.drop_table("profile_merges")
    op.drop_index("ix_identifiers_sharing", table_name="profile_identifiers")
    with op.batch_alter_table("profile_identifiers", schema=None) as batch_op:
        batch_op.drop_column("sharing")
        batch_op.drop_column("attached_to")
        batch_op.drop_column("linked_by")
        batch_op.drop_column("source_event_id")
