"""The mail poller's supervisor: one thread per (mailbox, folder), run by ``ecrm scheduler``.

Why threads in the scheduler process: watching a folder is waiting on a socket (IDLE),
not work for a core, and the scheduler is the one process of a hub that runs exactly once
per deployment. Should two run anyway, each folder's database lease keeps them from
polling it twice (see ``connectors.email.cursors``).

Why it reloads: ``ecrm mailboxes add/remove`` write the database, not this process; every
``reload_seconds`` the supervisor starts threads for new folders and stops those of
removed or changed mailboxes, so no restart is needed.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from dataclasses import dataclass

import structlog

from connectors.email import MailboxRecord, PollOptions, list_mailboxes, watch_folder
from workers.runtime import Runtime

log = structlog.get_logger(__name__)

MAX_RELOAD_SECONDS = 30.0


def new_owner() -> str:
    """A lease owner id unique to this process and call (host:pid:random)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class _Watcher:
    mailbox: MailboxRecord
    stop: threading.Event
    thread: threading.Thread


class MailPoller:
    """Keeps a :func:`~connectors.email.watch_folder` thread per enabled mailbox folder."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        only: str | None = None,
        workspace: str | None = None,
        reload_seconds: float | None = None,
    ) -> None:
        self.db = runtime.db
        self.options = PollOptions.from_settings(runtime.settings)
        self.only, self.workspace = only, workspace
        poll = runtime.settings.mail_poll_seconds
        self.reload_seconds = reload_seconds or max(1.0, min(MAX_RELOAD_SECONDS, poll))
        self._stop = threading.Event()
        self._watchers: dict[tuple[int, str], _Watcher] = {}
        self._retired: list[_Watcher] = []
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching in the background (returns at once)."""
        self._thread = threading.Thread(target=self._run, name="mail-supervisor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception as exc:  # the database may be briefly away: try again later
                log.warning("mail_poller_reload_failed", reason=f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.reload_seconds)

    def reconcile(self) -> None:
        """Match the running threads to the enabled mailboxes in the database."""
        with self.db.read() as session:
            mailboxes = list_mailboxes(session, self.workspace, enabled_only=True)
        wanted = {
            (mailbox.id, folder): mailbox
            for mailbox in mailboxes
            if self.only is None or mailbox.name == self.only
            for folder in mailbox.settings.folders
        }
        for key, watcher in list(self._watchers.items()):
            current = wanted.get(key)
            if current is None or current.updated_at != watcher.mailbox.updated_at:
                watcher.stop.set()
                self._retired.append(self._watchers.pop(key))
        self._retired = [w for w in self._retired if w.thread.is_alive()]
        for key, mailbox in wanted.items():
            if key not in self._watchers and not self._stop.is_set():
                self._watchers[key] = self._launch(mailbox, key[1])

    def _launch(self, mailbox: MailboxRecord, folder: str) -> _Watcher:
        stop = threading.Event()
        thread = threading.Thread(
            target=watch_folder,
            args=(self.db, mailbox, folder, self.options),
            kwargs={"owner": new_owner(), "stop": stop},
            name=f"mail:{mailbox.name}/{folder}",
            daemon=True,
        )
        thread.start()
        log.info("mail_folder_started", mailbox=mailbox.name, folder=folder)
        return _Watcher(mailbox, stop, thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every thread (each releases its folder's lease) and wait for them."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        watchers = list(self._watchers.values()) + self._retired
        for watcher in watchers:
            watcher.stop.set()
        for watcher in watchers:
            watcher.thread.join(timeout)
        self._watchers.clear()
        self._retired.clear()


__all__ = ["MailPoller", "new_owner"]
