"""Reading a folder into the event log: each message once, none skipped.

Why one transaction per chunk: the events a chunk produced, the failure rows of the
messages it refused and the cursor advance past it commit together (or not at all). After
a crash at any point the cursor names exactly the last message whose event is in the log,
so a restart neither skips nor re-reads; the event log's unique ``message_id`` is a second
net (the same mail copied into two watched folders, or a UIDVALIDITY resync).

Why UIDVALIDITY resets to the start: when the server renumbers a folder the old UIDs
mean nothing, so the folder is read again and everything already ingested comes back as
``duplicate`` (deduplicated by Message-ID, or by the bytes' digest for mail without one).

Why sizes first: ``RFC822.SIZE`` is fetched before any body, so a message over
``ECRM_MAIL_MAX_BYTES`` is never downloaded; its headers are kept in ``mail_failures``.
Bodies are fetched with ``BODY.PEEK[]`` on a read-only ``EXAMINE``: polling never marks
mail as read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import structlog
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from connectors.email.cursors import (
    Cursor,
    LeaseLost,
    acquire_lease,
    add_failures,
    advance,
    ensure_cursor,
    load_cursor,
    mark_polled,
    record_error,
    release_lease,
    restart_at,
)
from connectors.email.headers import header_block, header_message_id
from connectors.email.imap import MailboxError, close_quietly, connect, missing_folder
from connectors.email.mailboxes import MailboxRecord, PasswordUnavailable
from connectors.email.parse import MessageSource, UnusableMessage, parse_message
from pipeline import Settings, Touchpoint, ingest, utcnow
from pipeline.db import Database

log = structlog.get_logger(__name__)

CHUNK_SIZE = 50
#: bodies of one chunk held in memory at once, at most (one bigger message goes alone)
CHUNK_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class PollOptions:
    """What a poller needs from the settings."""

    max_bytes: int
    default_region: str
    lease_seconds: float
    poll_seconds: float
    chunk_size: int = CHUNK_SIZE
    chunk_bytes: int = CHUNK_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> PollOptions:
        return cls(
            max_bytes=settings.mail_max_bytes,
            default_region=settings.default_region,
            lease_seconds=settings.mail_lease_seconds,
            poll_seconds=settings.mail_poll_seconds,
        )


@dataclass
class FolderResult:
    """What one poll of one folder did."""

    mailbox: str
    folder: str
    accepted: int = 0
    duplicates: int = 0
    failed: int = 0
    uidvalidity_changed: bool = False
    error: str | None = None


def describe_error(exc: BaseException, mailbox: MailboxRecord) -> str:
    """One line saying why a poll failed (the server's words, never a password)."""
    settings = mailbox.settings
    if isinstance(exc, MailboxError | PasswordUnavailable):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"connection to {settings.host}:{settings.port} timed out"
    where = f"{settings.host}:{settings.port}"
    if isinstance(exc, OSError | IMAPClientAbortError):
        if "EOF" in str(exc):
            return f"connection to {where} closed by the server"
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"connection to {where} lost: {reason}"
    if isinstance(exc, IMAPClientError):
        return f"server error from {settings.host}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def sync_folder(
    db: Database,
    client: IMAPClient,
    mailbox: MailboxRecord,
    cursor_id: int,
    owner: str,
    options: PollOptions,
    *,
    stop: threading.Event | None = None,
) -> FolderResult:
    """Ingest every message after the cursor (the caller holds the folder's lease)."""
    with db.read() as session:
        cursor = load_cursor(session, cursor_id)
    result = FolderResult(mailbox.name, cursor.folder)
    try:
        status = client.select_folder(cursor.folder, readonly=True)
    except IMAPClientError:
        raise missing_folder(client, cursor.folder) from None
    uidvalidity = int(status[b"UIDVALIDITY"])
    if cursor.uidvalidity != uidvalidity:
        if cursor.uidvalidity is not None:
            result.uidvalidity_changed = True
            log.warning(
                "mail_uidvalidity_changed",
                mailbox=mailbox.name,
                folder=cursor.folder,
                old=cursor.uidvalidity,
                new=uidvalidity,
                last_uid=cursor.last_uid,
            )
        cursor = restart_at(db, cursor, owner, uidvalidity)
    found = client.search(["UID", f"{cursor.last_uid + 1}:*"])
    uids = sorted(int(uid) for uid in found if int(uid) > cursor.last_uid)  # n:* matches max
    if not uids:
        mark_polled(db, cursor.id, owner)
        return result
    while uids and not (stop is not None and stop.is_set()):
        chunk = _affordable(client, uids[: options.chunk_size], options)
        cursor = _ingest_chunk(db, client, mailbox, cursor, owner, chunk, options, result)
        uids = uids[len(chunk) :]
    return result


def _affordable(client: IMAPClient, uids: list[int], options: PollOptions) -> list[int]:
    """The leading UIDs whose bodies fit in memory together (at least one)."""
    sizes = client.fetch(uids, ["RFC822.SIZE"])
    total = 0
    for count, uid in enumerate(uids):
        size = int(sizes.get(uid, {}).get(b"RFC822.SIZE", 0))
        total += size if size <= options.max_bytes else 0  # too big: headers only
        if total > options.chunk_bytes and count > 0:
            return uids[:count]
    return uids


def _ingest_chunk(
    db: Database,
    client: IMAPClient,
    mailbox: MailboxRecord,
    cursor: Cursor,
    owner: str,
    chunk: list[int],
    options: PollOptions,
    result: FolderResult,
) -> Cursor:
    assert cursor.uidvalidity is not None  # restart_at set it before any chunk
    meta = client.fetch(chunk, ["RFC822.SIZE", "INTERNALDATE"])
    sizes = {int(uid): int(data.get(b"RFC822.SIZE", 0)) for uid, data in meta.items()}
    small = [uid for uid in chunk if uid in sizes and sizes[uid] <= options.max_bytes]
    large = [uid for uid in chunk if uid in sizes and sizes[uid] > options.max_bytes]
    bodies = client.fetch(small, ["BODY.PEEK[]"]) if small else {}
    heads = client.fetch(large, ["BODY.PEEK[HEADER]"]) if large else {}

    received = utcnow()
    touchpoints: list[Touchpoint] = []
    parsed: list[tuple[int, bytes]] = []
    failures: list[dict[str, Any]] = []

    def refuse(uid: int, raw: bytes, reason: str) -> None:
        failures.append(
            {
                "workspace_id": mailbox.workspace_id,
                "mailbox_id": mailbox.id,
                "folder": cursor.folder,
                "uidvalidity": cursor.uidvalidity,
                "uid": uid,
                "message_id": (header_message_id(raw) or "")[:998] or None,
                "size": sizes.get(uid),
                "reason": reason,
                "failed_at": received,
                "raw_headers": header_block(raw) or None,
            }
        )

    for uid in chunk:
        if uid not in sizes:
            continue  # expunged since the search: nothing left to read
        if uid in heads or sizes[uid] > options.max_bytes:
            head = heads.get(uid, {}).get(b"BODY[HEADER]") or b""
            over = f"message is {sizes[uid]} bytes, over ECRM_MAIL_MAX_BYTES ({options.max_bytes})"
            refuse(uid, head, over)
            continue
        raw = bodies.get(uid, {}).get(b"BODY[]")
        if not isinstance(raw, bytes):
            refuse(uid, b"", "the server returned no content for this message")
            continue
        source = MessageSource(mailbox.name, cursor.folder, cursor.uidvalidity, uid)
        internal = meta[uid].get(b"INTERNALDATE")
        try:
            touchpoint = parse_message(
                raw, source, internal_date=internal, size=sizes[uid], received_at=received
            )
        except UnusableMessage as exc:
            refuse(uid, raw, exc.reason)
            continue
        touchpoints.append(touchpoint)
        parsed.append((uid, raw))

    with db.write() as session:
        results = (
            ingest(
                session,
                touchpoints,
                workspace_id=mailbox.workspace_id,
                default_region=options.default_region,
            )
            if touchpoints
            else []
        )
        for outcome, (uid, raw) in zip(results, parsed, strict=True):
            if outcome.status == "rejected":
                refuse(uid, raw, f"refused by ingest: {outcome.field}: {outcome.reason}")
        accepted = sum(outcome.status == "accepted" for outcome in results)
        add_failures(session, failures)
        advance(
            session,
            cursor,
            owner,
            last_uid=chunk[-1],
            ingested=accepted,
            failed=len(failures),
            lease_seconds=options.lease_seconds,
        )
    duplicates = sum(outcome.status == "duplicate" for outcome in results)
    result.accepted += accepted
    result.duplicates += duplicates
    result.failed += len(failures)
    log.info(
        "mail_ingested",
        mailbox=mailbox.name,
        folder=cursor.folder,
        accepted=accepted,
        duplicates=duplicates,
        failed=len(failures),
        last_uid=chunk[-1],
    )
    return replace(cursor, last_uid=chunk[-1])


def wait_for_lease(
    db: Database, cursor_id: int, owner: str, lease_seconds: float, patience: float
) -> Cursor | None:
    """Claim the folder, waiting up to ``patience`` seconds for another holder's lease."""
    deadline = time.monotonic() + patience
    while True:
        cursor = acquire_lease(db, cursor_id, owner, lease_seconds)
        if cursor is not None:
            return cursor
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(0.5, max(deadline - time.monotonic(), 0.01)))


def poll_mailbox(
    db: Database,
    mailbox: MailboxRecord,
    options: PollOptions,
    *,
    owner: str,
    lease_patience: float,
) -> list[FolderResult]:
    """Poll every folder of a mailbox once (``ecrm mailboxes poll --once``, cron, tests).

    Errors are recorded on the folder's cursor and returned, not raised.
    """
    folders = mailbox.settings.folders
    results = [FolderResult(mailbox.name, folder) for folder in folders]
    cursor_ids = [ensure_cursor(db, mailbox.workspace_id, mailbox.id, f) for f in folders]
    try:
        client = connect(mailbox.settings, mailbox.settings.password())
    except (MailboxError, PasswordUnavailable) as exc:
        for result, cursor_id in zip(results, cursor_ids, strict=True):
            result.error = str(exc)
            record_error(db, cursor_id, result.error)
        return results
    try:
        for index, cursor_id in enumerate(cursor_ids):
            if wait_for_lease(db, cursor_id, owner, options.lease_seconds, lease_patience) is None:
                results[index].error = "another process is polling this folder (lease held)"
                continue
            try:
                results[index] = sync_folder(db, client, mailbox, cursor_id, owner, options)
            except LeaseLost as exc:
                results[index].error = str(exc)
            except (MailboxError, IMAPClientError, OSError) as exc:
                results[index].error = describe_error(exc, mailbox)
                record_error(db, cursor_id, results[index].error or "")
            finally:
                release_lease(db, cursor_id, owner)
    finally:
        close_quietly(client)
    return results
