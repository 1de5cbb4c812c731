"""A running hub (``ecrm run``) delivers actions to a real SMTP server, over its HTTP API.

``POST /v1/actions`` answers 202 and the worker sends within seconds; a 5xx failure is
visible with its reason and retried by the operator; the delivery record reaches the
recipient's profile; the CLI queues and lists through the same outbox.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from conftest import Hub
from smtp_server import SmtpSink, start

FROM = "Shop Care <care@shop.example>"


def wait_for(check: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def action_in(admin: httpx.Client, action_id: str, *statuses: str) -> dict[str, Any] | None:
    body: dict[str, Any] = admin.get(f"/v1/actions/{action_id}").json()
    return body if body["status"] in statuses else None


def test_post_actions_is_delivered_by_the_running_hub(hub_factory: Callable[..., Hub]) -> None:
    sink = SmtpSink()
    controller = start(sink)
    try:
        hub = hub_factory(
            "sqlite",
            ECRM_SMTP_HOST="127.0.0.1",
            ECRM_SMTP_PORT=str(controller.port),
            ECRM_SMTP_SECURITY="none",
            ECRM_EMAIL_FROM=FROM,
        )
        hub.launch(("run",))
        admin = hub.admin()
        body = {
            "kind": "email.send",
            "to": "Ana@Example.com",
            "subject": "Your order shipped",
            "text": "It is on its way.",
            "idempotency_key": "order-1-shipped",
        }

        started = time.monotonic()
        answer = admin.post("/v1/actions", json=body)
        assert answer.status_code == 202, answer.text
        action_id = answer.json()["id"]
        assert answer.json()["status"] == "queued" and answer.json()["duplicate"] is False
        sent = wait_for(lambda: action_in(admin, action_id, "sent"), what="sent")
        assert time.monotonic() - started < 10  # woken at once, not at the next sweep
        assert sent["attempts"] == 1 and sent["provider_id"] == f"<{action_id}@shop.example>"
        [received] = sink.messages()
        assert received.rcpt_tos == ["ana@example.com"]
        assert received.message["Subject"] == "Your order shipped"

        again = admin.post("/v1/actions", json=body)
        assert again.status_code == 202 and again.json()["id"] == action_id
        assert again.json()["duplicate"] is True

        # the delivery record is processed onto the recipient's profile
        record = wait_for(
            lambda: (
                (r := admin.get(f"/v1/events/action:{action_id}")).status_code == 200
                and r.json()["profile_id"]
                and r.json()
            ),
            what="the email.sent record on a profile",
        )
        assert record["type"] == "email.sent"
        profile = admin.get(f"/v1/profiles/{record['profile_id']}").json()
        assert profile["channels"] == {"email": 1}
        shown = admin.get(f"/v1/profiles/{record['profile_id']}/timeline").json()
        assert [(e["type"], e["message_id"]) for e in shown["events"]] == [
            ("email.sent", f"action:{action_id}")
        ]
        assert shown["events"][0]["properties"]["subject"] == "Your order shipped"
        bad_cursor = admin.get(
            f"/v1/profiles/{record['profile_id']}/timeline", params={"before": "soon"}
        )
        assert bad_cursor.status_code == 400 and bad_cursor.json()["field"] == "before"
        assert admin.get("/v1/profiles/prof_nobody/timeline").status_code == 404

        # a 5xx is visible with its reason, and the operator retries it
        sink.refuse_rcpt = "550 5.1.1 no such user"
        failing = admin.post(
            "/v1/actions", json={**body, "to": "gone@example.com", "idempotency_key": None}
        ).json()["id"]
        failed = wait_for(lambda: action_in(admin, failing, "failed"), what="failed")
        assert failed["last_error"] == "SMTP 550 5.1.1 no such user (recipient refused)"
        listed = admin.get("/v1/actions", params={"status": "failed"}).json()["actions"]
        assert [a["id"] for a in listed] == [failing]
        sink.refuse_rcpt = None
        assert admin.post(f"/v1/actions/{failing}/retry").status_code == 202
        wait_for(lambda: action_in(admin, failing, "sent"), what="sent after retry")
        assert admin.post(f"/v1/actions/{failing}/retry").status_code == 409

        # refusals name the field or the missing setting, as problem+json
        bad = admin.post("/v1/actions", json={**body, "to": "nope", "idempotency_key": "x"})
        assert bad.status_code == 400 and bad.json()["field"] == "to"
        assert bad.headers["content-type"] == "application/problem+json"
        reused = admin.post("/v1/actions", json={**body, "text": "another text, same key"})
        assert reused.status_code == 409 and reused.json()["field"] == "idempotency_key"
        sms = admin.post(
            "/v1/actions", json={"kind": "sms.send", "to": "+14155550100", "text": "x"}
        )
        assert sms.status_code == 409 and "ECRM_TWILIO_ACCOUNT_SID" in sms.json()["detail"]
        assert httpx.post(f"{hub.base_url}/v1/actions", json=body).status_code == 401
        assert admin.get("/v1/actions/act_nothing").status_code == 404

        # the CLI queues through the same outbox; the running worker delivers
        queued = hub.cli(
            "actions", "send-email", "--to", "cli@example.com", "--subject", "Hi", "--text", "t"
        )
        assert queued.returncode == 0, queued.stderr
        cli_id = queued.stdout.split()[0]
        wait_for(lambda: action_in(admin, cli_id, "sent"), what="the CLI's action sent")
        listing = hub.cli("actions", "list", "--status", "sent")
        assert listing.returncode == 0 and cli_id in listing.stdout and action_id in listing.stdout
        assert [r.rcpt_tos[0] for r in sink.messages()] == [
            "ana@example.com",
            "gone@example.com",
            "cli@example.com",
        ]
    finally:
        controller.stop()
