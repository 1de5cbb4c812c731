"""Watching one folder for as long as the process runs: IDLE or polling, reconnecting.

Why IDLE with a 25-minute restart: RFC 2177 lets servers drop an IDLE after 30 minutes
of silence, so the poller ends and re-issues it before then (re-reading the folder, which
also catches anything a lost notification missed). Servers without IDLE are polled every
``ECRM_MAIL_POLL_SECONDS``.

Why backoff with jitter, capped at five minutes: a server that drops us, or rejects the
password, should not be hammered, and many pollers restarting together should not retry
in step; yet a fixed password or a recovered server is picked up within minutes, without
a restart. Every failure is written to the folder's cursor (``ecrm mailboxes list``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import structlog
from imapclient import IMAPClient

from connectors.email.cursors import (
    LeaseLost,
    acquire_lease,
    ensure_cursor,
    record_error,
    release_lease,
    renew_lease,
)
from connectors.email.imap import close_quietly, connect
from connectors.email.mailboxes import MailboxRecord
from connectors.email.poller import PollOptions, describe_error, sync_folder
from pipeline.db import Database

log = structlog.get_logger(__name__)

IDLE_RESTART_SECONDS = 25 * 60
BACKOFF_START_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 300.0
#: how often an idling poller looks at its stop flag
TICK_SECONDS = 1.0


class ConnectionLost(Exception):
    """The server ended the connection while we idled (BYE or EOF)."""


class Backoff:
    """Exponential delays with jitter: 1, 2, 4 … seconds (each 50-100%), capped."""

    def __init__(
        self, start: float = BACKOFF_START_SECONDS, cap: float = BACKOFF_CAP_SECONDS
    ) -> None:
        self.start, self.cap, self.failures = start, cap, 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.start * 2**self.failures)
        self.failures = min(self.failures + 1, 32)
        return float(delay * random.uniform(0.5, 1.0))

    def reset(self) -> None:
        self.failures = 0


def idle_until_news(
    client: IMAPClient,
    stop: threading.Event,
    renew: Callable[[], None],
    *,
    renew_every: float,
    restart_after: float = IDLE_RESTART_SECONDS,
) -> bool:
    """IDLE until the server reports new mail (True), or time to re-sync / stop (False)."""
    client.idle()
    started = last_renew = time.monotonic()
    quick_empty = 0
    news = False
    while not stop.is_set() and time.monotonic() - started < restart_after:
        asked = time.monotonic()
        responses = client.idle_check(timeout=TICK_SECONDS)
        if any(len(r) > 0 and r[0] == b"BYE" for r in responses):
            raise ConnectionLost("the server said BYE")  # no DONE: the socket is gone
        if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
            news = True
            break
        # imapclient returns [] at once on EOF: a dead socket, not a quiet one
        quick = not responses and time.monotonic() - asked < TICK_SECONDS / 10
        quick_empty = quick_empty + 1 if quick else 0
        if quick_empty >= 3:
            raise ConnectionLost("the connection was closed")
        if time.monotonic() - last_renew >= renew_every:
            renew()  # LeaseLost propagates: the caller reconnects and re-claims
            last_renew = time.monotonic()
    client.idle_done()
    return news


def wait_polling(
    stop: threading.Event, seconds: float, renew: Callable[[], None], every: float
) -> None:
    """Sleep ``seconds`` (poll mode), renewing the lease, waking at once on stop."""
    deadline = time.monotonic() + seconds
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if stop.wait(min(left, every)):
            return
        renew()


def watch_folder(
    db: Database,
    mailbox: MailboxRecord,
    folder: str,
    options: PollOptions,
    *,
    owner: str,
    stop: threading.Event,
) -> None:
    """Keep one folder ingested until ``stop`` is set. Never raises."""
    cursor_id = 0  # set on the first pass (the database may be away at start)
    renew_every = max(options.lease_seconds / 3, TICK_SECONDS)
    backoff = Backoff()
    bound = log.bind(mailbox=mailbox.name, folder=folder)

    def renew() -> None:
        renew_lease(db, cursor_id, owner, options.lease_seconds)

    while not stop.is_set():
        client: IMAPClient | None = None
        try:
            if not cursor_id:
                cursor_id = ensure_cursor(db, mailbox.workspace_id, mailbox.id, folder)
            if acquire_lease(db, cursor_id, owner, options.lease_seconds) is None:
                stop.wait(min(renew_every, options.poll_seconds))  # another process has it
                continue
            client = connect(mailbox.settings, mailbox.settings.password())
            idle = client.has_capability("IDLE")
            bound.info("mail_folder_watching", mode="idle" if idle else "poll")
            while not stop.is_set():
                sync_folder(db, client, mailbox, cursor_id, owner, options, stop=stop)
                backoff.reset()
                if idle:
                    idle_until_news(client, stop, renew, renew_every=renew_every)
                else:
                    wait_polling(stop, options.poll_seconds, renew, renew_every)
        except LeaseLost as exc:
            bound.warning("mail_lease_lost", reason=str(exc))
            stop.wait(renew_every)
        except Exception as exc:  # a poller thread must survive anything and say why
            if isinstance(exc, ConnectionLost):
                where = f"{mailbox.settings.host}:{mailbox.settings.port}"
                reason = f"connection to {where} lost: {exc}"
            else:
                reason = describe_error(exc, mailbox)
            delay = backoff.next_delay()
            bound.warning("mail_poll_failed", reason=reason, retry_in=round(delay, 1))
            try:
                if cursor_id:
                    record_error(db, cursor_id, reason)
            except Exception as db_exc:
                bound.warning("mail_error_not_recorded", reason=str(db_exc))
            stop.wait(delay)
        finally:
            if client is not None:
                close_quietly(client)
    try:
        if cursor_id:
            release_lease(db, cursor_id, owner)
    except Exception as exc:  # the lease then simply expires
        bound.warning("mail_lease_not_released", reason=str(exc))
