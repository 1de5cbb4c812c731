"""Inbound email end to end: ``ecrm mailboxes`` commands, a kill -9 mid-mailbox, ``ecrm run``.

Real processes against a real dovecot; the hub's own SQLite file is read directly to see
what is committed at the moment of the crash.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from mailserver import MailServer, serve_mail

if TYPE_CHECKING:
    from conftest import Hub

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def mail_server() -> Iterator[MailServer]:
    yield from serve_mail()


def new_account(server: MailServer) -> tuple[str, str]:
    user, password = f"e2e{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}"
    server.add_user(user, password)
    return user, password


def mail(n: int, sender: str = "Customer {n} <customer{n}@example.com>", body: str = "") -> bytes:
    text = (
        f"From: {sender.format(n=n)}\r\nTo: care@shop.example\r\nSubject: order {n}\r\n"
        f"Message-ID: <e2e-{n}@example.com>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    )
    if body:
        text += "Content-Type: text/html; charset=utf-8\r\n"
    return (text + "\r\n" + (body or f"message {n}") + "\r\n").encode()


def add_args(server: MailServer, user: str, *extra: str) -> tuple[str, ...]:
    return (
        "mailboxes",
        "add",
        "support",
        "--host",
        server.host,
        "--port",
        str(server.port),
        "--security",
        "none",
        "--user",
        user,
        *extra,
    )


def one_line_error(result: Any) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line: str = lines[0]
    assert line.startswith("ecrm: ")
    return line


def test_mailboxes_commands(hub_factory: Any, mail_server: MailServer) -> None:
    user, password = new_account(mail_server)
    hub: Hub = hub_factory("sqlite", MAIL_PW=password, ECRM_MAIL_MAX_BYTES="2048")
    outputs: list[str] = []

    def cli(*args: str) -> Any:
        result = hub.cli(*args)
        outputs.extend((result.stdout, result.stderr))
        return result

    unset = cli(*add_args(mail_server, user, "--password-env", "NOT_SET_ANYWHERE"))
    assert one_line_error(unset) == (
        "ecrm: mailbox support: environment variable NOT_SET_ANYWHERE is not set in this "
        "process (set it where ecrm scheduler/ecrm run runs)"
    )
    added = cli(*add_args(mail_server, user, "--password-env", "MAIL_PW"))
    assert added.returncode == 0, added.stderr
    steps = re.findall(r"^  ok  (\w+)", added.stdout, re.MULTILINE)
    assert steps == ["dns", "connect", "tls", "login", "folder", "idle"]
    assert "IDLE supported" in added.stdout

    big = mail(2, body="<p>" + "x" * 3000 + "</p>")
    mail_server.append(user, password, [mail(1), big, mail(3, sender="nobody")])
    polled = cli("mailboxes", "poll", "--once")
    assert polled.returncode == 0, polled.stderr
    assert polled.stdout.strip() == "support/INBOX: 1 new, 0 duplicate(s), 2 refused"

    listed = cli("mailboxes", "list")
    assert listed.returncode == 0, listed.stderr
    assert f"user {user}  password from env:MAIL_PW  enabled" in listed.stdout
    uidvalidity = mail_server.uidvalidity(user)
    assert f"INBOX: uidvalidity {uidvalidity}, last uid 3, 1 ingested, 2 refused" in listed.stdout
    refused = cli("mailboxes", "failures", "support")
    lines = refused.stdout.strip().splitlines()
    assert lines[-1] == "2 refused message(s)"
    assert f"support/INBOX uid 2 <e2e-2@example.com>: message is {len(big)} bytes" in lines[1]
    assert "support/INBOX uid 3 <e2e-3@example.com>: no usable From address" in lines[0]

    hub.extra_env["MAIL_PW"] = "not-the-password"
    login = cli("mailboxes", "test", "support")
    assert one_line_error(login).startswith(
        f"ecrm: mailbox support: login refused for user '{user}': "
    )
    assert login.stdout.count("  ok  ") == 3  # dns, connect, tls

    assert cli("mailboxes", "remove", "support").stdout.strip() == "mailbox support removed"
    assert not any(password in text or "not-the-password" in text for text in outputs)


def sqlite_count(path: str, sql: str) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:  # not migrated yet
        return 0


def test_poller_killed_mid_mailbox_ingests_each_message_exactly_once(
    hub_factory: Any, mail_server: MailServer
) -> None:
    total = 200
    user, password = new_account(mail_server)
    # HTML to convert makes a chunk of 50 take a while: the kill lands between commits
    html = "<table>" + "<tr><td>item</td><td>12.50</td></tr>" * 40 + "</table>"
    mail_server.append(user, password, [mail(n, body=html) for n in range(1, total + 1)])
    hub: Hub = hub_factory("sqlite", MAIL_PW=password, ECRM_MAIL_LEASE_SECONDS="2")
    added = hub.cli(*add_args(mail_server, user, "--password-env", "MAIL_PW", "--no-test"))
    assert added.returncode == 0, added.stderr
    database = hub.database_url.removeprefix("sqlite:///")

    poller = hub.start("mailboxes", "poll", "--once")
    deadline = time.monotonic() + 60
    while sqlite_count(database, "SELECT COUNT(*) FROM events") == 0:
        assert poller.poll() is None, hub.logs()
        assert time.monotonic() < deadline, "no event ingested in 60 s"
        time.sleep(0.005)
    os.kill(poller.pid, signal.SIGKILL)
    poller.wait()
    before = sqlite_count(database, "SELECT COUNT(*) FROM events")
    assert 0 < before < total, f"the kill should land mid-mailbox, {before} of {total} in"

    restarted = hub.cli("mailboxes", "poll", "--once")  # waits out the dead poller's lease
    assert restarted.returncode == 0, restarted.stderr
    # the cursor committed with the events: the rest is read, nothing twice
    expected = f"support/INBOX: {total - before} new, 0 duplicate(s), 0 refused"
    assert restarted.stdout.strip() == expected

    with sqlite3.connect(database) as conn:
        counts = dict(conn.execute("SELECT message_id, COUNT(*) FROM events GROUP BY message_id"))
        last_uid = conn.execute("SELECT last_uid FROM mail_cursors").fetchone()[0]
        batched = conn.execute("SELECT SUM(event_count) FROM batches").fetchone()[0]
    assert counts == {f"email:e2e-{n}@example.com": 1 for n in range(1, total + 1)}
    assert last_uid == total
    assert batched == total  # no batch counts an event twice either


def test_running_hub_turns_new_mail_into_a_profile(
    hub_factory: Any, mail_server: MailServer
) -> None:
    user, password = new_account(mail_server)
    hub: Hub = hub_factory("sqlite", MAIL_PW=password, ECRM_MAIL_POLL_SECONDS="1")
    added = hub.cli(*add_args(mail_server, user, "--password-env", "MAIL_PW", "--no-test"))
    assert added.returncode == 0, added.stderr
    hub.launch(("run",))
    address = f"zoe.{uuid.uuid4().hex[:8]}@example.com"
    mail_server.save(
        user,
        (
            f"From: =?utf-8?q?Zo=C3=AB_Martin?= <{address.upper()}>\r\nTo: care@shop.example\r\n"
            f"Subject: Where is my order?\r\nMessage-ID: <run-{address}>\r\n\r\nHello\r\n"
        ).encode(),
    )
    with hub.admin() as admin:
        deadline = time.monotonic() + 30
        while True:
            found = admin.get("/v1/profiles", params={"identifier": f"email:{address}"})
            if found.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert found.status_code == 200, (found.text, hub.logs())
        profile = found.json()
        assert profile["traits"]["name"] == "Zoë Martin"
        assert profile["channels"] == {"email": 1}
        event = admin.get(f"/v1/events/email:run-{address}").json()
        assert event["type"] == "email.received"
        assert event["properties"]["subject"] == "Where is my order?"

        boxes = admin.get("/v1/mailboxes").json()["mailboxes"]
        assert [(b["name"], b["password_source"]) for b in boxes] == [("support", "env:MAIL_PW")]
        assert boxes[0]["cursors"][0]["ingested"] == 1
        assert password not in json.dumps(boxes)
        assert admin.get("/v1/mailboxes/failures").json() == {"failures": []}
        missing = admin.get("/v1/mailboxes/failures", params={"mailbox": "nope"})
        assert missing.status_code == 404
    with hub.client() as anonymous:
        assert anonymous.get("/v1/mailboxes").status_code == 401
