"""Write keys kept in the database: one per source, created and revoked while the hub runs.

Why in the database as well as ``ECRM_WRITE_KEYS``: a key leaked from one shop's POS or
one web property must be revoked without restarting every API process or touching the
others' keys. Only the key's SHA-256 is stored (as a password would be, but a key is
long and random, so a plain hash is enough and lets every request be checked by one
dictionary lookup); the key itself is shown once, when created.

Each API process holds the active keys' hashes in memory (:class:`ManagedKeys`) and reads
them again when they are older than ``ECRM_KEY_REFRESH_SECONDS``: a revocation made in
another process (``ecrm keys revoke``, another API) takes effect within that time, one
made through this process's API at once. A request with an unknown key never reaches
the database, so guessing keys costs the hub nothing but the hash.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pipeline.db import Database
from pipeline.errors import ValidationError
from pipeline.models import Workspace, WriteKey

KEY_PREFIX = "wk_"
MAX_NAME = 100


def key_hash(key: str) -> str:
    """The stored form of a key: its SHA-256, in hex."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class CreatedKey:
    """A new key: its row's view and the secret, which is never shown again."""

    view: dict[str, Any]
    key: str


def key_view(row: WriteKey) -> dict[str, Any]:
    """A key as the API and CLI show it (never the secret or its hash)."""
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "created_at": row.created_at,
        "revoked_at": row.revoked_at,
        "active": row.revoked_at is None,
    }


def create_key(session: Session, workspace_id: str, name: str, now: datetime) -> CreatedKey:
    """A new write key for ``workspace_id``, named after its source (``pos-store-12``)."""
    if session.get(Workspace, workspace_id) is None:
        raise ValidationError("workspace", f"no workspace {workspace_id!r}")
    name = name.strip() if isinstance(name, str) else ""
    if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
        raise ValidationError("name", f"must be 1 to {MAX_NAME} printable characters")
    key = KEY_PREFIX + secrets.token_urlsafe(24)
    row = WriteKey(
        workspace_id=workspace_id,
        name=name,
        key_hash=key_hash(key),
        prefix=key[: len(KEY_PREFIX) + 6],
        created_at=now,
    )
    session.add(row)
    session.flush()
    return CreatedKey(key_view(row), key)


def list_keys(session: Session, workspace_id: str) -> list[dict[str, Any]]:
    """The workspace's keys, oldest first, revoked ones included."""
    rows = session.scalars(
        select(WriteKey).where(WriteKey.workspace_id == workspace_id).order_by(WriteKey.id)
    )
    return [key_view(row) for row in rows]


def revoke_key(session: Session, workspace_id: str, key_id: int, now: datetime) -> dict[str, Any]:
    """Revoke a key (again: nothing changes); :class:`KeyError` if the workspace has none."""
    session.execute(
        update(WriteKey)
        .where(
            WriteKey.workspace_id == workspace_id,
            WriteKey.id == key_id,
            WriteKey.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    row = session.scalar(
        select(WriteKey).where(WriteKey.workspace_id == workspace_id, WriteKey.id == key_id)
    )
    if row is None:
        raise KeyError(key_id)
    return key_view(row)


class ManagedKeys:
    """The active keys' hashes, in memory, read again when stale (see the module doc)."""

    def __init__(self, db: Database, refresh_seconds: float) -> None:
        self.db, self.refresh_seconds = db, refresh_seconds
        self._owners: dict[str, str] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def workspace_of(self, key: str) -> str | None:
        """The workspace of an active key, or None."""
        if time.monotonic() - self._loaded_at > self.refresh_seconds:
            self.reload()
        return self._owners.get(key_hash(key))

    def reload(self) -> None:
        """Read the active keys now (after a change made through this process)."""
        with self._lock:
            with self.db.read() as session:
                rows = session.execute(
                    select(WriteKey.key_hash, WriteKey.workspace_id).where(
                        WriteKey.revoked_at.is_(None)
                    )
                ).all()
            self._owners = {digest: workspace for digest, workspace in rows}
            self._loaded_at = time.monotonic()


__all__ = [
    "KEY_PREFIX",
    "CreatedKey",
    "ManagedKeys",
    "create_key",
    "key_hash",
    "key_view",
    "list_keys",
    "revoke_key",
]
