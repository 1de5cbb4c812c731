"""GDPR erasure and export over HTTP and the CLI on a running hub (suppression switched on)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from conftest import Hub, basic_auth
from test_slice import wait_processed

PROBLEM = "application/problem+json"


def send(hub: Hub, batch: list[dict[str, Any]]) -> None:
    answer = hub.client().post(
        "/v1/batch", json={"batch": batch}, headers={"Authorization": basic_auth()}
    )
    assert answer.status_code == 200, answer.text


def wait_conflict(admin: httpx.Client, message_id: str, hub: Hub) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = admin.get("/v1/identity/conflicts", params={"limit": 1000}).json()
        found = [c for c in listed["conflicts"] if c["event"] == message_id]
        if found:
            return dict(found[0])
        time.sleep(0.2)
    raise AssertionError(f"no conflict for {message_id}\n{hub.logs()}")


def test_erase_and_export_over_http(hub_factory: Callable[..., Hub]) -> None:
    hub = hub_factory("sqlite", ECRM_ERASURE_SUPPRESS="true")
    hub.launch(("run",))
    admin = hub.admin()
    t = uuid.uuid4().hex[:8]
    user, anon, email, name = f"u-{t}", f"anon-{t}", f"ann-{t}@x.io", f"Annabel{t}"
    batch = [
        {"type": "page", "anonymousId": anon, "messageId": f"p-{t}", "name": "Home"},
        {
            "type": "identify",
            "userId": user,
            "anonymousId": anon,
            "messageId": f"i-{t}",
            "traits": {"email": email, "firstName": name},
        },
        {
            "type": "track",
            "userId": user,
            "messageId": f"o-{t}",
            "event": "Order Completed",
            "properties": {"total": 42.5, "currency": "EUR", "note": f"for {name}"},
        },
    ]
    send(hub, batch)
    views = wait_processed(admin, [m["messageId"] for m in batch], hub)
    profile = views[f"i-{t}"]["profile_id"]
    assert {v["profile_id"] for v in views.values()} == {profile}

    exported = admin.get(f"/v1/profiles/{profile}/export")
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("application/json")
    document = exported.json()
    assert document["profile_id"] == profile and document["event_count"] == 3
    assert [e["message_id"] for e in document["events"]] == [f"p-{t}", f"i-{t}", f"o-{t}"]
    assert {(i["kind"], i["value"]) for i in document["identifiers"]} >= {
        ("user_id", user),
        ("anonymous_id", anon),
        ("email", email),
    }
    assert document["profile"]["traits"]["firstName"] == name

    erased = admin.delete(f"/v1/profiles/{profile}")
    assert erased.status_code == 200, erased.text
    summary = erased.json()
    assert summary["profile_id"] == profile and summary["already_erased"] is False
    assert summary["counts"]["events"] == 3 and summary["counts"]["identifiers"] == 3
    assert summary["counts"]["tombstones"] == 3
    shown = admin.get(f"/v1/profiles/{profile}").json()
    assert shown["traits"] == {} and shown["event_count"] == 3
    assert all(i["value"].startswith("erased:") for i in shown["identifiers"])
    order = admin.get(f"/v1/events/o-{t}").json()
    assert order["properties"] == {"total": 42.5, "currency": "EUR"}
    after = admin.get(f"/v1/profiles/{profile}/export").text
    assert email not in after and name not in after and user not in after

    again = admin.delete(f"/v1/profiles/{profile}")
    assert again.status_code == 200 and again.json()["already_erased"] is True
    assert not any(again.json()["counts"].values())

    # the person writes again: stored, counted in no profile, listed as suppressed
    back = {"type": "identify", "userId": user, "messageId": f"b-{t}", "traits": {"x": 1}}
    send(hub, [back])
    assert wait_processed(admin, [f"b-{t}"], hub)[f"b-{t}"]["profile_id"] is None
    conflict = wait_conflict(admin, f"b-{t}", hub)
    assert conflict["reason"] == "suppressed"
    assert conflict["detail"]["erasure_ids"] == [summary["erasure_id"]]
    assert admin.get("/v1/profiles", params={"identifier": f"user_id:{user}"}).status_code == 404

    for method, path in (
        ("DELETE", "/v1/profiles/prof_nobody"),
        ("GET", "/v1/profiles/prof_nobody/export"),
    ):
        missing = admin.request(method, path)
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith(PROBLEM)
        assert missing.json()["field"] == "profile_id"
    for method, path in (
        ("DELETE", f"/v1/profiles/{profile}"),
        ("GET", f"/v1/profiles/{profile}/export"),
    ):
        assert httpx.request(method, hub.base_url + path).status_code == 401
    too_long = admin.delete(f"/v1/profiles/{profile}", params={"reason": "x" * 501})
    assert too_long.status_code == 400 and too_long.json()["field"] == "reason"


def test_profiles_cli_erases_and_exports(hub_factory: Callable[..., Hub]) -> None:
    hub = hub_factory("sqlite")
    hub.launch(("run",))
    admin = hub.admin()
    t = uuid.uuid4().hex[:8]
    email = f"cli-{t}@x.io"
    send(
        hub,
        [
            {
                "type": "identify",
                "userId": f"c-{t}",
                "messageId": f"c-{t}",
                "traits": {"email": email},
            }
        ],
    )
    profile = wait_processed(admin, [f"c-{t}"], hub)[f"c-{t}"]["profile_id"]

    exported = hub.cli("profiles", "export", profile)
    assert exported.returncode == 0, exported.stderr
    document = json.loads(exported.stdout)
    assert document["event_count"] == 1 and document["events"][0]["message_id"] == f"c-{t}"

    unconfirmed = hub.cli("profiles", "erase", profile)
    assert unconfirmed.returncode == 2
    assert unconfirmed.stderr.strip() == "ecrm: erasure cannot be undone: add --yes to confirm"
    erased = hub.cli(
        "profiles", "erase", profile, "--yes", "--json", "--reason", f"asked by {email}"
    )
    assert erased.returncode == 0, erased.stderr
    summary = json.loads(erased.stdout)
    assert summary["counts"]["events"] == 1 and summary["already_erased"] is False
    assert email not in hub.cli("profiles", "export", profile).stdout
    twice = hub.cli("profiles", "erase", profile, "--yes")
    assert twice.returncode == 0 and "already erased" in twice.stdout

    for args in (("erase", "prof_nobody", "--yes"), ("export", "prof_nobody")):
        missing = hub.cli("profiles", *args)
        assert missing.returncode == 2
        assert missing.stderr.strip() == "ecrm: no profile 'prof_nobody' in workspace 'default'"
