"""Webhook endpoints over HTTP and the CLI on one running hub (loopback URLs allowed)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from conftest import Hub

PATH = "/v1/webhooks/endpoints"
RECEIVER = "http://127.0.0.1:9/ecrm"  # never called: deliveries come in a later slice


def test_webhook_endpoints_api_and_cli(hub_factory: Callable[..., Hub]) -> None:
    hub = hub_factory("sqlite", ECRM_WEBHOOK_ALLOW_PRIVATE="1")
    hub.launch(("serve",))
    admin = hub.admin()

    assert httpx.get(f"{hub.base_url}{PATH}").status_code == 401
    assert httpx.post(f"{hub.base_url}{PATH}", json={"url": RECEIVER}).status_code == 401

    created = admin.post(PATH, json={"url": RECEIVER, "events": ["profile.*", "rule.fired"]})
    assert created.status_code == 201, created.text
    endpoint = created.json()
    endpoint_id, secret = endpoint["id"], endpoint["secret"]
    assert endpoint_id.startswith("whe_") and secret.startswith("whsec_")
    assert endpoint["events"] == ["profile.*", "rule.fired"] and endpoint["enabled"] is True
    everything = admin.post(PATH, json={"url": RECEIVER + "/all"}).json()
    assert everything["events"] == []  # missing events: all of them

    # bad input: 422 problem+json naming the field; nothing written
    for body, field in (
        ({"url": "ftp://127.0.0.1/x"}, "url"),
        ({"url": RECEIVER, "events": ["profile.created", "nope"]}, "events[1]"),
        ({"events": ["profile.created"]}, "url"),
        ({"url": RECEIVER, "enabled": "yes"}, "enabled"),
    ):
        bad = admin.post(PATH, json=body)
        assert bad.status_code == 422, bad.text
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert bad.json()["field"] == field

    listed = admin.get(PATH).json()["endpoints"]
    assert [e["id"] for e in listed] == [endpoint_id, everything["id"]]
    assert secret not in admin.get(PATH).text  # the secret is shown on creation only
    one = admin.get(f"{PATH}/{endpoint_id}")
    assert one.status_code == 200 and "secret" not in one.json()

    patched = admin.patch(f"{PATH}/{endpoint_id}", json={"enabled": False, "description": "crm"})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["enabled"], patched.json()["description"]) == (False, "crm")
    assert patched.json()["events"] == ["profile.*", "rule.fired"]  # unchanged
    bad_patch = admin.patch(f"{PATH}/{endpoint_id}", json={"events": ["profile.nope"]})
    assert bad_patch.status_code == 422 and bad_patch.json()["field"] == "events[0]"

    rotated = admin.post(f"{PATH}/{endpoint_id}/rotate-secret", json={"grace_seconds": 3600})
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_") and rotated.json()["secret"] != secret
    assert rotated.json()["previous_expires_at"]
    secrets = admin.get(f"{PATH}/{endpoint_id}").json()["secrets"]
    assert [s["expires_at"] is None for s in secrets] == [True, False]  # both still signing

    assert admin.delete(f"{PATH}/{endpoint_id}").status_code == 204
    for missing in (
        admin.get(f"{PATH}/{endpoint_id}"),
        admin.delete(f"{PATH}/{endpoint_id}"),
        admin.patch(f"{PATH}/{endpoint_id}", json={"enabled": True}),
        admin.post(f"{PATH}/{endpoint_id}/rotate-secret"),
    ):
        assert missing.status_code == 404 and missing.json()["field"] == "endpoint_id"

    # the CLI: add prints the id and the secret once, list shows no secret, remove
    added = hub.cli("webhooks", "add", RECEIVER + "/cli", "--events", "profile.created,custom.vip")
    assert added.returncode == 0, added.stderr
    cli_id = added.stdout.split()[0]
    assert cli_id.startswith("whe_") and "secret: whsec_" in added.stdout
    listing = hub.cli("webhooks", "list")
    assert listing.returncode == 0, listing.stderr
    assert cli_id in listing.stdout and everything["id"] in listing.stdout
    assert "whsec_" not in listing.stdout
    rotated_cli = hub.cli("webhooks", "rotate", cli_id, "--grace", "1h")
    assert rotated_cli.returncode == 0, rotated_cli.stderr
    assert rotated_cli.stdout.startswith("secret: whsec_")
    secrets = admin.get(f"{PATH}/{cli_id}").json()["secrets"]
    assert [s["expires_at"] is None for s in secrets] == [True, False]
    removed = hub.cli("webhooks", "remove", cli_id)
    assert removed.returncode == 0, removed.stderr
    assert [e["id"] for e in admin.get(PATH).json()["endpoints"]] == [everything["id"]]

    # without ECRM_WEBHOOK_ALLOW_PRIVATE a loopback URL is refused: one line, exit 2
    hub.extra_env["ECRM_WEBHOOK_ALLOW_PRIVATE"] = "0"
    refused = hub.cli("webhooks", "add", "https://127.0.0.1/hook")
    assert refused.returncode == 2
    assert refused.stderr.startswith("ecrm: url:") and len(refused.stderr.splitlines()) == 1
    assert "ECRM_WEBHOOK_ALLOW_PRIVATE" in refused.stderr
