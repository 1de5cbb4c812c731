"""Tables the email connector owns: mailboxes, per-folder cursors, refused messages.

Why the cursor lives in the database and not in a file: the events a poll ingests, the
cursor advance past them and the failure rows of the messages it refused are written in
one transaction, so the cursor can never lead or lag the event log. The lease columns let
several scheduler processes run side by side: only the holder of a folder's lease polls it.

Why no password column: a mailbox names *where* its password is (an environment variable
or a secrets file); the secret itself never reaches the database, its backups or a listing.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.db import Base, BigId, JsonDoc, UTCDateTime


class Mailbox(Base):
    """One IMAP account to watch: where it is, who logs in, which folders."""

    __tablename__ = "mailboxes"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_mailboxes_name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    name: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    #: ``tls`` (implicit, port 993), ``starttls`` (port 143) or ``none`` (loopback/tests)
    security: Mapped[str] = mapped_column(String(16))
    username: Mapped[str] = mapped_column(String(255))
    password_env: Mapped[str | None] = mapped_column(String(128), nullable=True)
    password_file: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    folders: Mapped[list[str]] = mapped_column(JsonDoc)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MailCursor(Base):
    """How far one folder of one mailbox has been read, and who is reading it now.

    ``last_uid`` is only meaningful under ``uidvalidity``: when the server reports another
    UIDVALIDITY the UIDs were renumbered and the folder is read again from the start.
    """

    __tablename__ = "mail_cursors"
    __table_args__ = (
        UniqueConstraint("workspace_id", "mailbox_id", "folder", name="uq_mail_cursors_folder"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    mailbox_id: Mapped[int] = mapped_column(BigId, ForeignKey("mailboxes.id"))
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    ingested: Mapped[int] = mapped_column(BigInteger, default=0)
    failed: Mapped[int] = mapped_column(BigInteger, default=0)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class MailFailure(Base):
    """A message the poller refused (too big, unusable): kept with the reason, never retried.

    Only headers are kept (capped), never the body: enough to find the message in the
    mailbox and see why, without copying customers' mail into a second place.
    """

    __tablename__ = "mail_failures"
    __table_args__ = (
        UniqueConstraint(
            "workspace_id",
            "mailbox_id",
            "folder",
            "uidvalidity",
            "uid",
            name="uq_mail_failures_message",
        ),
        Index("ix_mail_failures_recent", "workspace_id", "failed_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    mailbox_id: Mapped[int] = mapped_column(BigId, ForeignKey("mailboxes.id"))
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[str | None] = mapped_column(String(998), nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    raw_headers: Mapped[str | None] = mapped_column(Text, nullable=True)


#: Core tables for statements (typed for mypy).
MAILBOXES = cast(Table, Mailbox.__table__)
MAIL_CURSORS = cast(Table, MailCursor.__table__)
MAIL_FAILURES = cast(Table, MailFailure.__table__)
