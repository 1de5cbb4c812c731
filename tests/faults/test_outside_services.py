"""Faults of the services outside the hub, inside the mixed stream (PostgreSQL + RabbitMQ).

The stream of :mod:`mixed_stream` with two more consumers of its effects: a rule that
emails every customer a welcome on the first order (a real SMTP server, aiosmtpd), and
two webhook subscribers (real receiver processes verifying signatures with
``standardwebhooks``). While the stream is processed:

- the SMTP server refuses every message with ``451 4.3.0`` (try later), then accepts;
- one webhook receiver answers ``500`` to the first two attempts of every message;
- the other hangs for 30 s on every request (the hub gives up after 1 s and retries).

After recovery: the stream's effects are those of a run without the faults
(:func:`mixed_stream.check_effects`); every buyer got exactly one welcome, nobody else
any; the failing receiver holds every profile's final state, each message accepted once
under its ``webhook-id`` (retries reuse it, so a consumer can deduplicate); the hanging
receiver held back no one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import Hub, free_port
from mixed_stream import (
    HUB_ENV,
    RULES,
    check_effects,
    post_stream,
    stream,
    wait_for,
    wait_processed,
)
from smtp_server import SmtpSink, start

pytestmark = pytest.mark.timeout(300)
RECEIVER = Path(__file__).parents[1] / "e2e" / "webhook_receiver.py"
WELCOME = {
    "id": "welcome",
    "name": "welcome on the first order",
    "trigger": {"types": ["order.completed"]},
    "conditions": {
        "all": [{"field": "history.count(type=order.completed)", "op": "eq", "value": 1}]
    },
    "actions": [{"type": "send_email", "subject": "Welcome", "text": "Thanks for your order."}],
}


@contextmanager
def receiver(port: int, out: Path, secret: str, **env: str) -> Iterator[None]:
    process = subprocess.Popen(
        [sys.executable, str(RECEIVER), str(port), str(out)],
        env={"PATH": "/usr/bin:/bin", "RECEIVER_SECRET": secret, **env},
    )
    try:
        yield
    finally:
        process.kill()
        process.wait()


def records(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def test_smtp_refusals_and_failing_or_hanging_receivers_change_no_effect(
    hub_factory: Callable[..., Hub], tmp_path: Path
) -> None:
    web, pos, expected = stream(seed=33)
    expected["other_rules"] = ["welcome"]
    total = len(web) + len(pos)
    buyers = {user for user, points in expected["points"].items() if points}
    sink = SmtpSink(refuse_data="451 4.3.0 try later")
    smtp = start(sink)
    try:
        hub = hub_factory(
            "postgres+rabbitmq",
            **HUB_ENV,
            ECRM_WORKER_CONCURRENCY="2",
            ECRM_SMTP_HOST="127.0.0.1",
            ECRM_SMTP_PORT=str(smtp.port),
            ECRM_SMTP_SECURITY="none",
            ECRM_EMAIL_FROM="Shop <shop@example.com>",
            ECRM_WEBHOOK_ALLOW_PRIVATE="1",
            ECRM_WEBHOOK_RETRY_SCHEDULE="0,1,1,1,1,1,1,1",
            ECRM_WEBHOOK_TIMEOUT="1",
            ECRM_ACTION_RETRY_SECONDS="2",
        )
        hub.launch(("serve",), ("scheduler",), ("worker",), ("worker", "--webhooks"))
        admin = hub.admin()
        good_port, hang_port = free_port(), free_port()
        good = admin.post(
            "/v1/webhooks/endpoints", json={"url": f"http://127.0.0.1:{good_port}/hooks"}
        ).json()
        hanging = admin.post(
            "/v1/webhooks/endpoints", json={"url": f"http://127.0.0.1:{hang_port}/hooks"}
        ).json()
        rules = {"rules": [*RULES["rules"], WELCOME]}
        assert admin.put("/v1/rules", json=rules).status_code == 200
        good_out, hang_out = tmp_path / "good.jsonl", tmp_path / "hanging.jsonl"
        with (
            receiver(good_port, good_out, good["secret"], RECEIVER_FAILS="2"),
            receiver(hang_port, hang_out, hanging["secret"], RECEIVER_HANG="30"),
        ):
            post_stream(hub, web, pos)
            wait_processed(hub, total, timeout=180)

            def queued_actions() -> list[dict[str, Any]]:
                return list(admin.get("/v1/actions", params={"limit": 1000}).json()["actions"])

            # every welcome is tried and refused before the mail server comes back
            wait_for(
                lambda: sink.data_attempts >= len(queued_actions()) > 0,
                hub,
                "refused welcomes",
                60,
            )
            assert not sink.messages()
            sink.refuse_data = None  # the mail server is back

            def final_states() -> dict[str, dict[str, Any]]:
                """Each live profile's latest state (a profile merged away is no one's:
                a shop sale processed before its customer's identify is tagged on a
                profile of its own, which the identify then merges into the web one)."""
                latest: dict[str, dict[str, Any]] = {}
                merged: set[str] = set()
                for record in records(good_out):
                    payload = record["payload"] if record["status"] < 300 else None
                    if payload and payload["type"] in ("profile.created", "profile.updated"):
                        latest[payload["profile_id"]] = payload["data"]
                    elif payload and payload["type"] == "profile.merged":
                        merged.add(payload["data"]["merged_id"])
                return {pid: state for pid, state in latest.items() if pid not in merged}

            def buyers_tagged() -> bool:
                tagged = [d for d in final_states().values() if "buyer" in d.get("tags", [])]
                return len(tagged) == len(buyers)

            wait_for(buyers_tagged, hub, "every buyer's final state at the receiver", 120)
            # transient SMTP failures wait a backoff (ECRM_ACTION_RETRY_SECONDS) before the next try
            wait_for(
                lambda: all(a["status"] in ("sent", "failed") for a in queued_actions()),
                hub,
                "every welcome sent once the mail server is back",
                150,
            )
            # each message sent is an event of its recipient's profile (message.sent)
            sent = [a for a in queued_actions() if a["status"] == "sent"]
            expected["events"].update(f"fault-{a['to'].split('.')[1][:3]}" for a in sent)
            wait_processed(hub, total + len(sent), timeout=60)
            time.sleep(2)  # anything more would be a duplicate
            report = check_effects(hub, hub.database_url, expected, total + len(sent))
            received = sink.messages()
            sent_to = Counter(to for m in received for to in m.rcpt_tos)
            hung = len(records(hang_out))
            deliveries = admin.get(  # while the receiver still hangs
                "/v1/webhooks/deliveries", params={"endpoint": hanging["id"], "status": "retrying"}
            ).json()["deliveries"]
            tried = [d["last_error"] for d in deliveries if d["last_error"]]
        by_id: dict[str, list[int]] = {}
        for record in records(good_out):
            by_id.setdefault(record["id"], []).append(record["status"])
        # every action the rules queued reached the server exactly once, despite the 451s
        message_ids = Counter(m.message["Message-ID"].strip("<>").split("@")[0] for m in received)
        assert message_ids == Counter(a["id"] for a in sent), message_ids
        assert len(sent) >= len(buyers) // 2 and set(sent_to) <= {a["to"] for a in sent}
        assert [a for a in queued_actions() if a["status"] != "sent"] == []
        # each message failed twice, then was accepted once under the same webhook-id (the
        # latest ones may still be on their way when this looks)
        assert all(statuses == [500, 500, 204][: len(statuses)] for statuses in by_id.values())
        assert sum(statuses == [500, 500, 204] for statuses in by_id.values()) >= len(buyers)
        assert tried and all("timeout" in error for error in tried)  # still trying, no one held
        print(
            f"\nfault outside-services (postgres+rabbitmq): {report} emails_sent_once={len(sent)}"
            f" smtp_refusals={sink.data_attempts - len(sink.messages())}"
            f" webhook_messages={len(by_id)} hanging_attempts={hung}"
        )
    finally:
        smtp.stop()
