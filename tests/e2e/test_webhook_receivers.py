"""Profile webhooks end to end: ``ecrm run``, real receiver processes verifying signatures
with ``standardwebhooks``, a receiver failing the first attempts of every message beside
one that hangs; then the delivery log, retry and replay over HTTP and the CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import Hub, free_port
from test_slice import basic_auth, wait_processed

PATH = "/v1/webhooks/endpoints"
RECEIVER = Path(__file__).with_name("webhook_receiver.py")
USERS = 4
ROUNDS = 3


@contextmanager
def receiver(port: int, out: Path, secret: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, str(RECEIVER), str(port), str(out)],
        env={"PATH": "/usr/bin:/bin", "RECEIVER_SECRET": secret, **env},
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def lines(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def accepted(out: Path) -> list[dict[str, Any]]:
    return [r for r in lines(out) if r["status"] < 300]


def wait_for(check: Callable[[], bool], hub: Hub, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{hub.logs()}")
        time.sleep(0.3)


def test_deliveries_retry_in_order_and_a_hanging_receiver_blocks_nobody(
    hub_factory: Callable[..., Hub], tmp_path: Path
) -> None:
    hub = hub_factory(
        "sqlite",
        ECRM_WEBHOOK_ALLOW_PRIVATE="1",
        ECRM_WEBHOOK_RETRY_SCHEDULE="0,1,1,1,1,1",
        ECRM_WEBHOOK_TIMEOUT="1",
        ECRM_WEBHOOK_COALESCE_SECONDS="0",
        ECRM_RELAY_INTERVAL_SECONDS="0.5",
    )
    hub.launch(("run",))
    client, admin = hub.client(), hub.admin()
    good_port, hang_port = free_port(), free_port()
    good = admin.post(PATH, json={"url": f"http://127.0.0.1:{good_port}/hooks"}).json()
    hanging = admin.post(
        PATH, json={"url": f"http://127.0.0.1:{hang_port}/hooks", "events": ["profile.*"]}
    ).json()
    good_out, hang_out = tmp_path / "good.jsonl", tmp_path / "hanging.jsonl"

    with (
        receiver(good_port, good_out, good["secret"], RECEIVER_FAILS="2"),
        receiver(hang_port, hang_out, hanging["secret"], RECEIVER_HANG="30"),
    ):
        t = uuid.uuid4().hex[:8]
        users = [f"wh-{t}-{n}" for n in range(USERS)]
        sent: list[str] = []
        profiles: dict[str, str] = {}
        for round_ in range(ROUNDS):
            batch = [
                {
                    "type": "identify",
                    "userId": user,
                    "messageId": f"{user}-{round_}",
                    "traits": {"plan": f"plan-{round_}"},
                }
                for user in users
            ]
            answer = client.post(
                "/v1/batch", json={"batch": batch}, headers={"Authorization": basic_auth()}
            )
            assert answer.status_code == 200, answer.text
            sent += [m["messageId"] for m in batch]
            views = wait_processed(admin, [m["messageId"] for m in batch], hub)
            for user in users:
                profiles[user] = views[f"{user}-{round_}"]["profile_id"]
            for user in users:  # a label change is a profile update too
                tagged = admin.put(f"/v1/profiles/{profiles[user]}/tags/round-{round_}")
                assert tagged.status_code == 200, tagged.text

        def final_state_arrived() -> bool:
            latest: dict[str, dict[str, Any]] = {}
            for record in accepted(good_out):
                payload = record["payload"]
                if payload["type"] in ("profile.created", "profile.updated"):
                    latest[payload["profile_id"]] = payload["data"]
            return all(
                pid in latest
                and latest[pid]["traits"].get("plan") == f"plan-{ROUNDS - 1}"
                and f"round-{ROUNDS - 1}" in latest[pid]["tags"]
                for pid in profiles.values()
            )

        wait_for(final_state_arrived, hub, "every profile's final state at the good receiver")

        records = lines(good_out)
        assert records and all(r["status"] != 401 for r in records)  # every signature verified
        by_id: dict[str, list[int]] = {}
        for record in records:
            by_id.setdefault(record["id"], []).append(record["status"])
        # the receiver failed the first two attempts of every message; each was retried
        # with the same webhook-id and then accepted exactly once
        assert all(statuses[:3] == [500, 500, 204] for statuses in by_id.values()), by_id
        assert all(statuses.count(204) == 1 for statuses in by_id.values())
        # per profile, messages arrived in version order, each after its predecessor settled
        for pid in profiles.values():
            versions = [
                r["payload"]["version"]
                for r in accepted(good_out)
                if r["payload"]["profile_id"] == pid
            ]
            assert versions == sorted(versions) and len(set(versions)) == len(versions), pid
            # identity resolution announced the profile, then each identify that changed it
            types = [
                r["payload"]["type"]
                for r in accepted(good_out)
                if r["payload"]["profile_id"] == pid
            ]
            assert types[0] == "profile.created" and set(types[1:]) == {"profile.updated"}, types
            first = next(r for r in accepted(good_out) if r["payload"]["profile_id"] == pid)
            assert first["payload"]["data"]["id"] == pid

        # the delivery log
        delivered = admin.get(
            "/v1/webhooks/deliveries", params={"endpoint": good["id"], "status": "delivered"}
        ).json()["deliveries"]
        assert {d["id"] for d in delivered} == set(by_id)
        one = admin.get(f"/v1/webhooks/deliveries/{delivered[0]['id']}").json()
        assert [a["status"] for a in one["log"]] == [500, 500, 204]
        assert all(a["latency_ms"] > 0 for a in one["log"])
        assert one["payload"]["profile_id"] == one["profile_id"]
        stuck = admin.get(
            "/v1/webhooks/deliveries", params={"endpoint": hanging["id"], "status": "retrying"}
        ).json()["deliveries"]
        assert stuck and all(d["last_error"] and "timeout" in d["last_error"] for d in stuck)
        bad = admin.get("/v1/webhooks/deliveries", params={"status": "lost"})
        assert bad.status_code == 400 and bad.json()["field"] == "status"
        missing = admin.get("/v1/webhooks/deliveries/msg_nope")
        assert missing.status_code == 404 and missing.json()["field"] == "delivery_id"

        # retry one: the same webhook-id again (the receiver fails it twice more first)
        again = admin.post(f"/v1/webhooks/deliveries/{delivered[0]['id']}/retry")
        assert again.status_code == 202, again.text
        wait_for(
            lambda: by_status(good_out, delivered[0]["id"]).count(204) == 2,
            hub,
            "the retried delivery",
        )
        # replay: the changes since an hour ago queued again as new messages; a profile's
        # updates fold into one (they would all carry its current state)
        replayed = admin.post(f"{PATH}/{good['id']}/replay", json={"since": "1h"})
        assert replayed.status_code == 202, replayed.text
        queued = replayed.json()["queued"]
        assert queued >= len(profiles)
        bad_replay = admin.post(f"{PATH}/{good['id']}/replay", json={"since": "yesterday"})
        assert bad_replay.status_code == 422 and bad_replay.json()["field"] == "since"
        wait_for(
            lambda: len({r["id"] for r in accepted(good_out)}) >= len(by_id) + queued,
            hub,
            "the replayed deliveries",
        )

    listed = hub.cli("webhooks", "deliveries", "--endpoint", good["id"], "--status", "delivered")
    assert listed.returncode == 0, listed.stderr
    assert delivered[0]["id"] in listed.stdout
    assert hub.cli("webhooks", "retry", "msg_nope").returncode == 2
    kept = hub.cli("webhooks", "prune", "--older-than", "30d")  # all of it is younger
    assert kept.returncode == 0 and "removed 0 deliveries" in kept.stdout, kept.stderr
    assert hub.cli("webhooks", "prune", "--older-than", "soon").returncode == 2


def by_status(out: Path, message_id: str) -> list[int]:
    return [r["status"] for r in lines(out) if r["id"] == message_id]
