"""The IMAP poller against a real dovecot, on SQLite and PostgreSQL.

Each test gets its own dovecot user (one server per module) and its own database.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import free_port
from mailserver import MailServer, serve_mail
from sqlalchemy import func, select

from connectors.email import (
    FolderResult,
    MailboxError,
    MailboxRecord,
    MailboxSettings,
    PollOptions,
    add_mailbox,
    check_mailbox,
    list_failures,
    mailbox_cursors,
    poll_mailbox,
    watch_folder,
)
from connectors.email.cursors import acquire_lease, ensure_cursor, release_lease
from pipeline import Database
from pipeline.models import Batch, Event

OPTIONS = PollOptions(
    max_bytes=8 * 1024, default_region="US", lease_seconds=30, poll_seconds=60, chunk_size=2
)


def message(
    n: int | str,
    *,
    sender: str = "Customer <customer{n}@example.com>",
    body: str = "",
    message_id: bool = True,
) -> bytes:
    headers = [f"From: {sender.format(n=n)}", "To: support@shop.example", f"Subject: case {n}"]
    if message_id:
        headers.append(f"Message-ID: <msg-{n}@example.com>")
    text = "\r\n".join(headers) + "\r\n\r\n" + (body or f"Hello, this is message {n}.") + "\r\n"
    return text.encode()


@pytest.fixture(scope="module")
def mail_server() -> Iterator[MailServer]:
    """One dovecot for the module; each test logs in as its own user."""
    yield from serve_mail()


@pytest.fixture
def account(mail_server: MailServer, tmp_path: Path) -> tuple[str, str, Path]:
    """A fresh dovecot user: (user, password, password file)."""
    user, password = f"u{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    mail_server.add_user(user, password)
    secret = tmp_path / "imap-password"
    secret.write_text(password + "\n")
    return user, password, secret


def configure(
    db: Database,
    server: MailServer,
    account: tuple[str, str, Path],
    folders: tuple[str, ...] = ("INBOX",),
    name: str = "support",
) -> MailboxRecord:
    user, _, secret = account
    settings = MailboxSettings(
        name=name,
        host=server.host,
        port=server.port,
        security="none",
        username=user,
        password_file=str(secret),
        folders=folders,
    )
    with db.write() as session:
        return add_mailbox(session, "default", settings)


def poll(
    db: Database, mailbox: MailboxRecord, options: PollOptions = OPTIONS
) -> list[FolderResult]:
    return poll_mailbox(
        db, mailbox, options, owner=f"test-{uuid.uuid4().hex[:6]}", lease_patience=5
    )


def event_ids(db: Database) -> list[str]:
    with db.read() as session:
        return list(session.scalars(select(Event.message_id).order_by(Event.id)))


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_each_message_is_ingested_once_across_polls(
    any_db: Database,
    mail_server: MailServer,
    account: tuple[str, str, Path],
) -> None:
    user, password, _ = account
    mail_server.append(user, password, [message(1), message(2), message(3, message_id=False)])
    mailbox = configure(any_db, mail_server, account)

    sizes = [len(message(n)) for n in (1, 2)]
    two_fit = replace(OPTIONS, chunk_size=50, chunk_bytes=sum(sizes) + 10)  # 3 don't
    [first] = poll(any_db, mailbox, two_fit)
    assert (first.error, first.accepted, first.duplicates, first.failed) == (None, 3, 0, 0)
    with any_db.read() as session:  # one ingest transaction (batch) per chunk
        assert session.scalar(select(func.count()).select_from(Batch)) == 2
    [again] = poll(any_db, mailbox)
    assert (again.error, again.accepted, again.duplicates) == (None, 0, 0)  # cursor, not dedupe

    mail_server.save(user, message(4))
    mail_server.save(user, message(5))
    [later] = poll(any_db, mailbox)
    assert (later.accepted, later.duplicates) == (2, 0)

    ids = event_ids(any_db)
    assert len(ids) == len(set(ids)) == 5
    assert ids[:2] == ["email:msg-1@example.com", "email:msg-2@example.com"]
    assert ids[2].startswith("email:nomid:")
    with any_db.read() as session:
        [cursor] = mailbox_cursors(session, mailbox)
        event = session.scalars(select(Event).where(Event.message_id == ids[0])).one()
    assert cursor.uidvalidity == mail_server.uidvalidity(user)
    assert (cursor.last_uid, cursor.ingested, cursor.failed, cursor.last_error) == (5, 5, 0, None)
    assert cursor.lease_owner is None  # released after the poll
    assert event.type == "email.received" and event.channel == "email"
    assert event.identifiers == {"email": "customer1@example.com"}
    assert event.context == {
        "mailbox": "support",
        "folder": "INBOX",
        "uid": 1,
        "uidvalidity": cursor.uidvalidity,
    }
    with mail_server.imap(user, password) as client:  # polling never marks mail as read
        client.select_folder("INBOX", readonly=True)
        flags = client.get_flags(client.search(["ALL"]))
    assert all(b"\\Seen" not in f for f in flags.values())


def test_uidvalidity_change_rereads_the_folder_without_duplicates(
    any_db: Database,
    mail_server: MailServer,
    account: tuple[str, str, Path],
) -> None:
    user, password, _ = account
    mail_server.create_folder(user, "Support")
    old = [message("a"), message("b"), message("c", message_id=False)]
    mail_server.append(user, password, old, folder="Support")
    mailbox = configure(any_db, mail_server, account, folders=("Support",))
    [first] = poll(any_db, mailbox)
    assert first.accepted == 3
    before = mail_server.uidvalidity(user, "Support")

    mail_server.recreate_folder(user, "Support")  # new UIDVALIDITY, UIDs start again at 1
    mail_server.append(user, password, [*old, message("d")], folder="Support")
    assert mail_server.uidvalidity(user, "Support") != before
    [resync] = poll(any_db, mailbox)
    assert resync.uidvalidity_changed is True
    assert (resync.accepted, resync.duplicates, resync.failed) == (1, 3, 0)

    ids = event_ids(any_db)
    assert len(ids) == len(set(ids)) == 4
    with any_db.read() as session:
        [cursor] = mailbox_cursors(session, mailbox)
    assert (cursor.uidvalidity, cursor.last_uid) == (mail_server.uidvalidity(user, "Support"), 4)


def test_huge_and_unusable_messages_are_refused_and_the_cursor_moves_on(
    any_db: Database,
    mail_server: MailServer,
    account: tuple[str, str, Path],
) -> None:
    user, password, _ = account
    huge = message("huge", body="x" * 20_000)
    no_sender = message("nosender", sender="undisclosed-recipients:;")
    mail_server.append(user, password, [message(1), huge, no_sender, message(2)])
    mailbox = configure(any_db, mail_server, account)

    [result] = poll(any_db, mailbox)
    assert (result.error, result.accepted, result.failed) == (None, 2, 2)
    mail_server.save(user, message(3))
    [later] = poll(any_db, mailbox)
    assert (later.accepted, later.failed) == (1, 0)
    assert event_ids(any_db) == [f"email:msg-{n}@example.com" for n in (1, 2, 3)]

    with any_db.read() as session:
        failures = {f.uid: f for f in list_failures(session, "default", mailbox="support")}
        [cursor] = mailbox_cursors(session, mailbox)
    assert (cursor.last_uid, cursor.ingested, cursor.failed) == (5, 3, 2)
    assert sorted(failures) == [2, 3]
    too_big = failures[2]
    assert too_big.reason == f"message is {len(huge)} bytes, over ECRM_MAIL_MAX_BYTES (8192)"
    assert too_big.message_id == "msg-huge@example.com" and too_big.size == len(huge)
    assert too_big.raw_headers is not None and "Subject: case huge" in too_big.raw_headers
    assert "xxxx" not in too_big.raw_headers  # the body was never fetched
    assert failures[3].reason.startswith("no usable From address")
    assert failures[3].uidvalidity == cursor.uidvalidity


def test_idle_ingests_new_mail_within_seconds_and_survives_a_dropped_connection(
    any_db: Database,
    mail_server: MailServer,
    account: tuple[str, str, Path],
) -> None:
    user = account[0]
    mail_server.save(user, message(1))
    mailbox = configure(any_db, mail_server, account)
    stop = threading.Event()
    # polling every 60 s: only IDLE can bring mail in within seconds
    thread = threading.Thread(
        target=watch_folder,
        args=(any_db, mailbox, "INBOX", OPTIONS),
        kwargs={"owner": "watcher", "stop": stop},
        daemon=True,
    )
    thread.start()
    try:
        wait_until(lambda: len(event_ids(any_db)) == 1, 10, "the first message")
        time.sleep(0.5)  # idling now
        started = time.monotonic()
        mail_server.save(user, message(2))
        wait_until(lambda: len(event_ids(any_db)) == 2, 5, "the message saved while idling")
        assert time.monotonic() - started < 5

        mail_server.kill_connections(user)  # the server drops us: reconnect with backoff
        time.sleep(0.3)
        mail_server.save(user, message(3))
        wait_until(lambda: len(event_ids(any_db)) == 3, 15, "the message after the reconnect")
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert event_ids(any_db) == [f"email:msg-{n}@example.com" for n in (1, 2, 3)]
    with any_db.read() as session:
        [cursor] = mailbox_cursors(session, mailbox)
    assert cursor.lease_owner is None  # released on stop


def test_bad_password_and_missing_folder_are_recorded_on_the_cursor(
    any_db: Database,
    mail_server: MailServer,
    account: tuple[str, str, Path],
) -> None:
    user, _, secret = account
    mailbox = configure(any_db, mail_server, account, folders=("INBOX", "Nope"))
    [inbox, nope] = poll(any_db, mailbox)
    assert inbox.error is None
    assert nope.error == "folder 'Nope' does not exist (the server has: INBOX)"

    secret.write_text("wrong-password\n")
    results = poll(any_db, mailbox)
    for result in results:
        assert result.error is not None
        assert result.error.startswith(f"login refused for user '{user}': ")
        assert "wrong-password" not in result.error
    with any_db.read() as session:
        cursors = mailbox_cursors(session, mailbox)
    assert all(c.last_error and "login refused" in c.last_error for c in cursors)
    assert all(c.last_error_at is not None for c in cursors)


def test_a_held_lease_keeps_a_second_poller_out(
    any_db: Database,
    mail_server: MailServer,
    account: tuple[str, str, Path],
) -> None:
    user = account[0]
    mail_server.save(user, message(1))
    mailbox = configure(any_db, mail_server, account)
    cursor_id = ensure_cursor(any_db, "default", mailbox.id, "INBOX")
    assert acquire_lease(any_db, cursor_id, "other-host:1", 30) is not None
    [held] = poll_mailbox(any_db, mailbox, OPTIONS, owner="me", lease_patience=0.5)
    assert held.error == "another process is polling this folder (lease held)"
    assert event_ids(any_db) == []
    release_lease(any_db, cursor_id, "other-host:1")
    [free] = poll(any_db, mailbox)
    assert (free.error, free.accepted) == (None, 1)
    with any_db.read() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 1


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    stray = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not stray, f"threads left running: {stray}"


def test_mailbox_check_says_which_step_failed(mail_server: MailServer) -> None:
    user, password = f"u{uuid.uuid4().hex[:10]}", "pw"
    mail_server.add_user(user, password)
    base = MailboxSettings(
        name="support",
        host=mail_server.host,
        port=mail_server.port,
        security="none",
        username=user,
        password_env="UNUSED",
        folders=("INBOX",),
    )
    steps = check_mailbox(base, password)
    assert [s.name for s in steps] == ["dns", "connect", "tls", "login", "folder", "idle"]

    def failure(**change: object) -> MailboxError:
        with pytest.raises(MailboxError) as error:
            check_mailbox(replace(base, **change), password)  # type: ignore[arg-type]
        return error.value

    dns = failure(host="no-such-host.invalid")
    assert dns.step == "dns"
    assert str(dns).startswith("DNS lookup of no-such-host.invalid failed: ")
    closed = free_port()
    refused = failure(port=closed)
    assert str(refused) == f"cannot connect to 127.0.0.1:{closed}: connection refused"
    tls = failure(security="tls")  # TLS spoken to a plain-text port
    assert tls.step == "tls" and "TLS handshake with" in str(tls)
    assert "try --security starttls" in str(tls)
    starttls = failure(security="starttls")  # this server offers no STARTTLS
    assert str(starttls) == (
        f"127.0.0.1:{mail_server.port} does not offer STARTTLS (try --security tls, port 993)"
    )
    login = failure(username="nobody-here")
    assert login.step == "login" and str(login).startswith("login refused for user 'nobody-here'")
