"""mail connector: mailboxes, per-folder cursors, refused messages

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

``mailboxes`` names where each account's password is (environment variable or secrets
file), never the password. ``mail_cursors`` holds, per mailbox and folder, the UIDVALIDITY
and last UID read (advanced in the same transaction as the events it ingested) and the
lease that keeps two scheduler processes from polling one folder at once.
``mail_failures`` keeps refused messages' headers (capped) and the reason.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import pipeline.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "mailboxes",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("security", sa.String(length=16), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("password_env", sa.String(length=128), nullable=True),
        sa.Column("password_file", sa.String(length=1024), nullable=True),
        sa.Column("folders", _JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", pipeline.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", pipeline.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "name", name="uq_mailboxes_name"),
    )
    op.create_table(
        "mail_cursors",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("mailbox_id", _ID, nullable=False),
        sa.Column("folder", sa.String(length=255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("ingested", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.Column("last_polled_at", pipeline.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", pipeline.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_until", pipeline.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailboxes.id"]),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "mailbox_id", "folder", name="uq_mail_cursors_folder"),
    )
    op.create_table(
        "mail_failures",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("mailbox_id", _ID, nullable=False),
        sa.Column("folder", sa.String(length=255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("failed_at", pipeline.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("raw_headers", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailboxes.id"]),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "workspace_id",
            "mailbox_id",
            "folder",
            "uidvalidity",
            "uid",
            name="uq_mail_failures_message",
        ),
    )
    with op.batch_alter_table("mail_failures", schema=None) as batch_op:
        batch_op.create_index(
            "ix_mail_failures_recent", ["workspace_id", "failed_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("mail_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_mail_failures_recent")
    op.drop_table("mail_failures")
    op.drop_table("mail_cursors")
    op.drop_table("mailboxes")
