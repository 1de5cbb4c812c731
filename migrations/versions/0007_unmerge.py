"""unmerge and the profile change feed

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

``identity_splits`` records each unmerge and ``identity_split_members`` the identifiers it
keeps apart (resolution refuses to put both sides in one profile again); merges a split
recomputed are marked ``undone_by`` it. ``profiles.trait_sources`` keeps which source
set each trait (source priority). ``profile_changes`` is the feed of profile changes
(``profile.unmerged``, ``profile.erased``) that downstream subscribers read in id order.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import pipeline.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TIME = pipeline.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("profile_merges", schema=None) as batch_op:
        batch_op.add_column(sa.Column("undone_by", _ID, nullable=True))
    # a plain ALTER TABLE … ADD COLUMN: a rebuild of profiles would break the foreign
    # keys that point at it
    op.add_column(
        "profiles",
        sa.Column("trait_sources", _JSON, nullable=False, server_default=sa.text("'{}'")),
    )
    op.create_index(
        "ix_profiles_merged_into",
        "profiles",
        ["workspace_id", "merged_into"],
        sqlite_where=sa.text("merged_into IS NOT NULL"),
        postgresql_where=sa.text("merged_into IS NOT NULL"),
    )
    op.create_table(
        "identity_splits",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=300), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("requested_by", sa.String(length=120), nullable=True),
        sa.Column("result", _JSON, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_identity_splits_workspace", "identity_splits", ["workspace_id", "id"])
    op.create_table(
        "identity_split_members",
        sa.Column("split_id", _ID, autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("side", sa.String(length=1), nullable=False),
        sa.ForeignKeyConstraint(["split_id"], ["identity_splits.id"]),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("split_id", "kind", "value"),
    )
    op.create_index(
        "ix_identity_split_members_key",
        "identity_split_members",
        ["workspace_id", "kind", "value"],
    )
    op.create_table(
        "profile_changes",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.Column("data", _JSON, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_profile_changes_workspace", "profile_changes", ["workspace_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_profile_changes_workspace", table_name="profile_changes")
    op.drop_table("profile_changes")
    op.drop_index("ix_identity_split_members_key", table_name="identity_split_members")
    op.drop_table("identity_split_members")
    op.drop_index("ix_identity_splits_workspace", table_name="identity_splits")
    op.drop_table("identity_splits")
    op.drop_index("ix_profiles_merged_into", table_name="profiles")
    # ALTER TABLE … DROP COLUMN (SQLite 3.35+): a rebuild of profiles would break the
    # foreign keys that point at it
    op.drop_column("profiles", "trait_sources")
    with op.batch_alter_table("profile_merges", schema=None) as batch_op:
        batch_op.drop_column("undone_by")
