"""A Twilio outage and an IMAP server restarted mid-fetch, inside the mixed stream.

PostgreSQL + Redis. The stream of :mod:`mixed_stream`, with two more touchpoints: each
customer's identify carries a phone, and every customer writes two emails to the support
mailbox (a real dovecot the scheduler's poller reads). A rule texts a thanks on the first
order through the real ``twilio`` client, against the local stand-in of Twilio's API.

- Twilio answers ``500`` to every request until every queued SMS has been refused at
  least once, then accepts (the hub retries after its backoff);
- dovecot is killed with SIGKILL while the poller is part-way through the mailbox (some
  chunks committed, others not), and started again on the same port with the same mail.

After recovery the effects are a fault-free run's (:func:`mixed_stream.check_effects`,
the emails counted in their senders' profiles): every email ingested once, every SMS
the rules queued accepted by Twilio exactly once, nothing needing a manual step.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import Hub
from mailserver import MailServer, serve_mail
from mixed_stream import (
    CUSTOMERS,
    HUB_ENV,
    RULES,
    check_effects,
    post_stream,
    stream,
    wait_for,
    wait_processed,
)
from twilio_api import TwilioApi, new_account

pytestmark = pytest.mark.timeout(300)
THANKS = {
    "id": "thanks_sms",
    "name": "text a thanks on the first order",
    "trigger": {"types": ["order.completed"]},
    "conditions": {
        "all": [{"field": "history.count(type=order.completed)", "op": "eq", "value": 1}]
    },
    "actions": [{"type": "send_sms", "text": "Thanks for your first order!"}],
}
MAILS_EACH = 2
# HTML to convert makes a chunk of 50 take a while: the restart lands between commits
HTML = "<table>" + "<tr><td>item</td><td>12.50</td></tr>" * 40 + "</table>"


@pytest.fixture(scope="module")
def mail_server() -> Iterator[MailServer]:
    yield from serve_mail()


def phone(n: int) -> str:
    return f"+1415555{n:04d}"


def mail(n: int, k: int) -> bytes:
    return (
        f"From: Customer {n} <Fault.{n:03d}@Example.com>\r\nTo: care@shop.example\r\n"
        f"Subject: question {k}\r\nMessage-ID: <fault-{n}-{k}@example.com>\r\n"
        f"Date: Mon, 02 Nov 2026 12:00:00 +0000\r\n"
        f"Content-Type: text/html; charset=utf-8\r\n\r\n{HTML}\r\n"
    ).encode()


def email_events(hub: Hub) -> int:
    engine = sa.create_engine(hub.database_url)
    try:
        with engine.connect() as conn:
            sql = "SELECT count(*) FROM events WHERE channel = 'email'"
            return int(conn.execute(sa.text(sql)).scalar_one())
    finally:
        engine.dispose()


def test_a_twilio_outage_and_an_imap_restart_mid_fetch_change_no_effect(
    hub_factory: Callable[..., Hub], mail_server: MailServer
) -> None:
    web, pos, expected = stream(seed=44)
    expected["other_rules"] = ["thanks_sms"]
    for message in web:
        if message["type"] == "identify":
            n = int(message["userId"].split("-")[1])
            message["traits"]["phone"] = phone(n)
    user, password = f"fault{time.monotonic_ns()}", "pw-fault"
    mail_server.add_user(user, password)
    mails = [mail(n, k) for n in range(CUSTOMERS) for k in range(MAILS_EACH)]
    mail_server.append(user, password, mails)
    expected["events"].update({f"fault-{n:03d}": MAILS_EACH for n in range(CUSTOMERS)})
    total = len(web) + len(pos) + len(mails)
    sid, token = new_account()
    with TwilioApi(sid, token) as twilio:
        twilio.outage = 500
        hub = hub_factory(
            "postgres+redis",
            **HUB_ENV,
            ECRM_WORKER_CONCURRENCY="2",
            ECRM_TWILIO_ACCOUNT_SID=sid,
            ECRM_TWILIO_AUTH_TOKEN=token,
            ECRM_TWILIO_FROM="+14155559999",
            ECRM_TWILIO_API_URL=twilio.url,
            ECRM_MAIL_POLL_SECONDS="1",
            MAIL_PW=password,
            ECRM_ACTION_RETRY_SECONDS="2",
        )
        added = hub.cli(
            *("mailboxes", "add", "support", "--host", mail_server.host),
            *("--port", str(mail_server.port), "--security", "none", "--user", user),
            *("--password-env", "MAIL_PW", "--no-test"),
        )
        assert added.returncode == 0, added.stderr
        hub.launch(("serve",), ("worker",))
        admin = hub.admin()
        assert admin.put("/v1/rules", json={"rules": [*RULES["rules"], THANKS]}).status_code == 200
        post_stream(hub, web, pos)
        hub.start("scheduler")  # the relay, and the poller: it starts on the mailbox now
        deadline = time.monotonic() + 60
        while (before := email_events(hub)) == 0:
            assert time.monotonic() < deadline, f"no email ingested in 60 s\n{hub.logs()}"
            time.sleep(0.005)
        logged = len(mail_server.log.read_text(errors="replace"))
        mail_server.restart()
        assert 0 < before < len(mails), f"the restart should land mid-mailbox: {before} in"
        assert wait_processed(hub, total, timeout=180) == total, hub.logs()[-3000:]

        def sms_actions() -> list[dict[str, Any]]:
            found = admin.get("/v1/actions", params={"limit": 1000}).json()["actions"]
            return [a for a in found if a["kind"] == "sms.send"]

        # every SMS is tried and refused while Twilio is down
        wait_for(
            lambda: (queued := sms_actions()) != [] and all(a["attempts"] for a in queued),
            hub,
            "every SMS tried during the outage",
            60,
        )
        assert all(r.answered == 500 for r in twilio.messages())
        refused = len(twilio.messages())
        twilio.outage = None  # Twilio is back
        wait_for(  # transient failures wait a backoff (ECRM_ACTION_RETRY_SECONDS) to retry
            lambda: all(a["status"] in ("sent", "failed") for a in sms_actions()),
            hub,
            "every SMS sent once Twilio is back",
            150,
        )
        sent = [a for a in sms_actions() if a["status"] == "sent"]
        # each SMS sent is an event of its recipient's profile (sms.sent)
        expected["events"].update(f"fault-{int(a['to'][-4:]):03d}" for a in sent)
        wait_processed(hub, total + len(sent), timeout=60)
        time.sleep(2)  # anything more would be a duplicate
        report = check_effects(hub, hub.database_url, expected, total + len(sent))
        accepted = Counter(r.form["To"] for r in twilio.messages() if r.answered == 201)
        assert [a for a in sms_actions() if a["status"] != "sent"] == []
        assert len(sent) >= CUSTOMERS // 4
        assert accepted == Counter(a["to"] for a in sent), accepted  # each action once
        ingested = email_events(hub)
        cursor = admin.get("/v1/mailboxes").json()["mailboxes"][0]["cursors"][0]
    assert ingested == len(mails) and cursor["ingested"] == len(mails), (ingested, cursor)
    # the poller logged in again after the restart (to go on fetching, or to IDLE)
    assert f"user=<{user}>" in mail_server.log.read_text(errors="replace")[logged:]
    print(
        f"\nfault twilio-outage+imap-restart (postgres+redis): {report}"
        f" emails={len(mails)} ({before} in at the restart) sms_sent_once={len(sent)}"
        f" twilio_refusals={refused}"
    )
