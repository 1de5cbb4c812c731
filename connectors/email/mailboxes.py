"""Mailbox configuration in the database: add, find, list, remove; failures listed.

Why the password is a *reference*: ``password_env`` names an environment variable and
``password_file`` a secrets file (Docker/Kubernetes secrets, systemd credentials); the
process that connects reads it when it connects. So the secret is never in the database,
in ``ecrm mailboxes list``, in the API or in logs, and rotating it needs no hub command.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from connectors.email.models import Mailbox, MailCursor, MailFailure
from pipeline.envelope import utcnow
from pipeline.errors import HubError, ValidationError
from pipeline.models import Workspace

SECURITY_MODES = ("tls", "starttls", "none")
DEFAULT_PORTS = {"tls": 993, "starttls": 143, "none": 143}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9.:_-]{1,255}$")


class PasswordUnavailable(HubError):
    """The mailbox's password reference cannot be read (never says the password)."""


@dataclass(frozen=True)
class MailboxSettings:
    """What ``ecrm mailboxes add`` takes: where the account is and how to log in."""

    name: str
    host: str
    port: int
    security: str
    username: str
    password_env: str | None = None
    password_file: str | None = None
    folders: tuple[str, ...] = ("INBOX",)
    enabled: bool = True

    def validate(self) -> None:
        """Raise :class:`ValidationError` naming the first bad field."""
        if not _NAME_RE.match(self.name):
            raise ValidationError(
                "name", "use 1-64 lower-case letters, digits, '.', '_' or '-' (e.g. support)"
            )
        if not _HOST_RE.match(self.host):
            raise ValidationError("host", f"not a host name or address: {self.host!r}")
        if not 1 <= self.port <= 65535:
            raise ValidationError("port", f"must be 1..65535, got {self.port}")
        if self.security not in SECURITY_MODES:
            raise ValidationError("security", f"must be one of {', '.join(SECURITY_MODES)}")
        if not self.username or len(self.username) > 255:
            raise ValidationError("user", "the login name is missing or too long")
        if (self.password_env is None) == (self.password_file is None):
            raise ValidationError("password", "give exactly one of --password-env/--password-file")
        if self.password_env is not None and not _ENV_RE.match(self.password_env):
            raise ValidationError("password_env", "not an environment variable name")
        if self.password_file is not None and not Path(self.password_file).is_absolute():
            raise ValidationError("password_file", "give an absolute path")
        if not self.folders:
            raise ValidationError("folder", "watch at least one folder")
        for folder in self.folders:
            if not folder.strip() or len(folder) > 255 or any(c in folder for c in "\r\n\0"):
                raise ValidationError("folder", f"not a folder name: {folder!r}")
        if len(set(self.folders)) != len(self.folders):
            raise ValidationError("folder", "a folder is named twice")

    @property
    def password_source(self) -> str:
        """Where the password comes from, for listings (``env:VAR`` / ``file:/path``)."""
        return f"env:{self.password_env}" if self.password_env else f"file:{self.password_file}"

    def password(self, environ: Mapping[str, str] | None = None) -> str:
        """Read the password now, from the variable or the file (trailing newline dropped)."""
        env = os.environ if environ is None else environ
        if self.password_env:
            value = env.get(self.password_env)
            if not value:
                raise PasswordUnavailable(
                    f"mailbox {self.name}: environment variable {self.password_env} is not set "
                    "in this process (set it where ecrm scheduler/ecrm run runs)"
                )
            return value
        path = Path(self.password_file or "")
        try:
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise PasswordUnavailable(
                f"mailbox {self.name}: cannot read the password file {path}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from None
        if not value:
            raise PasswordUnavailable(f"mailbox {self.name}: the password file {path} is empty")
        return value


@dataclass(frozen=True)
class MailboxRecord:
    """A stored mailbox."""

    id: int
    workspace_id: str
    settings: MailboxSettings
    created_at: datetime
    updated_at: datetime

    @property
    def name(self) -> str:
        return self.settings.name


@dataclass(frozen=True)
class CursorView:
    """One folder's progress, as ``list`` and the API show it."""

    folder: str
    uidvalidity: int | None
    last_uid: int
    ingested: int
    failed: int
    last_polled_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    lease_owner: str | None
    lease_until: datetime | None

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("last_polled_at", "last_error_at", "lease_until"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


@dataclass(frozen=True)
class FailureView:
    """A refused message (headers kept, body never)."""

    id: int
    mailbox: str
    folder: str
    uidvalidity: int
    uid: int
    message_id: str | None
    size: int | None
    reason: str
    failed_at: datetime
    raw_headers: str | None = field(repr=False)

    def as_dict(self, *, headers: bool = True) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["failed_at"] = self.failed_at.isoformat()
        if not headers:
            out.pop("raw_headers")
        return out


def _record(row: Mailbox) -> MailboxRecord:
    settings = MailboxSettings(
        name=row.name,
        host=row.host,
        port=row.port,
        security=row.security,
        username=row.username,
        password_env=row.password_env,
        password_file=row.password_file,
        folders=tuple(row.folders),
        enabled=row.enabled,
    )
    return MailboxRecord(row.id, row.workspace_id, settings, row.created_at, row.updated_at)


def add_mailbox(session: Session, workspace_id: str, settings: MailboxSettings) -> MailboxRecord:
    """Store a new mailbox and a fresh cursor per folder (read from its first message)."""
    settings.validate()
    if session.get(Workspace, workspace_id) is None:
        raise ValidationError("workspace", f"no workspace {workspace_id!r}")
    if get_mailbox(session, workspace_id, settings.name) is not None:
        raise ValidationError(
            "name", f"mailbox {settings.name!r} already exists (ecrm mailboxes remove it first)"
        )
    now = utcnow()
    row = Mailbox(
        workspace_id=workspace_id,
        name=settings.name,
        host=settings.host,
        port=settings.port,
        security=settings.security,
        username=settings.username,
        password_env=settings.password_env,
        password_file=settings.password_file,
        folders=list(settings.folders),
        enabled=settings.enabled,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    for folder in settings.folders:
        session.add(
            MailCursor(
                workspace_id=workspace_id,
                mailbox_id=row.id,
                folder=folder,
                last_uid=0,
                ingested=0,
                failed=0,
            )
        )
    session.flush()
    return _record(row)


def get_mailbox(session: Session, workspace_id: str, name: str) -> MailboxRecord | None:
    row = session.scalars(
        select(Mailbox).where(Mailbox.workspace_id == workspace_id, Mailbox.name == name)
    ).one_or_none()
    return _record(row) if row else None


def list_mailboxes(
    session: Session, workspace_id: str | None = None, *, enabled_only: bool = False
) -> list[MailboxRecord]:
    """Mailboxes of one workspace (or of all, for the poller), by name."""
    query = select(Mailbox).order_by(Mailbox.workspace_id, Mailbox.name)
    if workspace_id is not None:
        query = query.where(Mailbox.workspace_id == workspace_id)
    if enabled_only:
        query = query.where(Mailbox.enabled.is_(True))
    return [_record(row) for row in session.scalars(query)]


def mailbox_cursors(session: Session, mailbox: MailboxRecord) -> list[CursorView]:
    """The cursor of each watched folder, in the mailbox's folder order."""
    rows = {
        row.folder: row
        for row in session.scalars(select(MailCursor).where(MailCursor.mailbox_id == mailbox.id))
    }
    views = []
    for folder in mailbox.settings.folders:
        row = rows.get(folder)
        if row is None:
            views.append(CursorView(folder, None, 0, 0, 0, None, None, None, None, None))
            continue
        views.append(
            CursorView(
                folder=row.folder,
                uidvalidity=row.uidvalidity,
                last_uid=row.last_uid,
                ingested=row.ingested,
                failed=row.failed,
                last_polled_at=row.last_polled_at,
                last_error=row.last_error,
                last_error_at=row.last_error_at,
                lease_owner=row.lease_owner,
                lease_until=row.lease_until,
            )
        )
    return views


def mailbox_view(mailbox: MailboxRecord, cursors: list[CursorView]) -> dict[str, Any]:
    """A mailbox as JSON for the CLI and the API: settings and cursors, no secret."""
    settings = mailbox.settings
    return {
        "name": settings.name,
        "workspace": mailbox.workspace_id,
        "host": settings.host,
        "port": settings.port,
        "security": settings.security,
        "user": settings.username,
        "password_source": settings.password_source,
        "folders": list(settings.folders),
        "enabled": settings.enabled,
        "created_at": mailbox.created_at.isoformat(),
        "cursors": [cursor.as_dict() for cursor in cursors],
    }


def remove_mailbox(session: Session, workspace_id: str, name: str) -> bool:
    """Delete a mailbox with its cursors and failure rows; False if there was none."""
    mailbox = get_mailbox(session, workspace_id, name)
    if mailbox is None:
        return False
    session.execute(delete(MailFailure).where(MailFailure.mailbox_id == mailbox.id))
    session.execute(delete(MailCursor).where(MailCursor.mailbox_id == mailbox.id))
    session.execute(delete(Mailbox).where(Mailbox.id == mailbox.id))
    return True


def list_failures(
    session: Session, workspace_id: str, *, mailbox: str | None = None, limit: int = 100
) -> list[FailureView]:
    """Refused messages, newest first; ``mailbox`` narrows to one (unknown name: error)."""
    query = (
        select(MailFailure, Mailbox.name)
        .join(Mailbox, Mailbox.id == MailFailure.mailbox_id)
        .where(MailFailure.workspace_id == workspace_id)
        .order_by(MailFailure.failed_at.desc(), MailFailure.id.desc())
        .limit(limit)
    )
    if mailbox is not None:
        if get_mailbox(session, workspace_id, mailbox) is None:
            raise ValidationError("mailbox", f"no mailbox {mailbox!r}")
        query = query.where(Mailbox.name == mailbox)
    return [
        FailureView(
            id=row.id,
            mailbox=name,
            folder=row.folder,
            uidvalidity=row.uidvalidity,
            uid=row.uid,
            message_id=row.message_id,
            size=row.size,
            reason=row.reason,
            failed_at=row.failed_at,
            raw_headers=row.raw_headers,
        )
        for row, name in session.execute(query).all()
    ]
