"""Write keys managed while the hub runs: created, used, revoked over HTTP and the CLI.

A hub (``ecrm serve`` on SQLite) with ``ECRM_KEY_REFRESH_SECONDS=0.5``: a key created
through the API works at once; one created or revoked by ``ecrm keys`` (another process)
within the refresh time; the secret is shown once and never listed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from conftest import Hub, basic_auth, sqlite_hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    env = {"ECRM_KEY_REFRESH_SECONDS": "0.5"}
    with sqlite_hub(tmp_path_factory, "write-keys", env, ("serve",)) as hub:
        yield hub


def track(hub: Hub, key: str) -> int:
    body = {"userId": "u-keys", "event": "Viewed", "messageId": uuid.uuid4().hex}
    headers = {"Authorization": basic_auth(key)}
    return httpx.post(f"{hub.base_url}/v1/track", json=body, headers=headers).status_code


def until(check: Callable[[], int], expected: int, seconds: float = 10) -> int:
    """Poll ``check()`` until it answers ``expected`` (or time is up); its last answer."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_a_key_made_over_http_works_at_once_and_revoked_by_the_cli_stops(hub: Hub) -> None:
    with hub.admin() as admin:
        made = admin.post("/v1/write-keys", json={"name": "pos-store-12"})
        assert made.status_code == 201, made.text
        key, key_id = made.json()["key"], made.json()["id"]
        assert track(hub, key) == 200  # this process reloaded its copy on creation
        listed = admin.get("/v1/write-keys").json()["write_keys"]
    [view] = [v for v in listed if v["id"] == key_id]
    assert view["name"] == "pos-store-12" and view["active"]
    assert key not in str(listed) and view["prefix"] == key[: len(view["prefix"])]
    revoked = hub.cli("keys", "revoke", str(key_id))
    assert revoked.returncode == 0, revoked.stderr
    began = time.monotonic()
    assert until(lambda: track(hub, key), 401) == 401
    assert time.monotonic() - began < 5  # within the refresh time, not at a restart
    with hub.admin() as admin:
        [view] = [v for v in admin.get("/v1/write-keys").json()["write_keys"] if v["id"] == key_id]
    assert view["revoked_at"] and not view["active"]
    assert "revoked" in hub.cli("keys", "list").stdout


def test_a_key_made_by_the_cli_works_and_a_revoked_one_over_http_stops_at_once(
    hub: Hub,
) -> None:
    made = hub.cli("keys", "create", "web-shop")
    assert made.returncode == 0, made.stderr
    key_id, _, key = made.stdout.split()
    assert until(lambda: track(hub, key), 200) == 200
    with hub.admin() as admin:
        gone = admin.delete(f"/v1/write-keys/{key_id}")
    assert gone.status_code == 200 and gone.json()["active"] is False
    assert track(hub, key) == 401


def test_mistakes_are_named(hub: Hub) -> None:
    with hub.admin() as admin:
        no_name = admin.post("/v1/write-keys", json={})
        extra = admin.post("/v1/write-keys", json={"name": "x", "secret": "mine"})
        blank = admin.post("/v1/write-keys", json={"name": " "})
        missing = admin.delete("/v1/write-keys/987654")
    assert (no_name.status_code, no_name.json()["field"]) == (400, "name")
    assert (extra.status_code, extra.json()["field"]) == (400, "secret")
    assert (blank.status_code, blank.json()["field"]) == (400, "name")
    assert (missing.status_code, missing.json()["field"]) == (404, "key_id")
    anonymous = httpx.post(f"{hub.base_url}/v1/write-keys", json={"name": "x"})
    assert anonymous.status_code == 401  # only the admin token makes keys
    bad_cli = hub.cli("keys", "revoke", "987654")
    assert bad_cli.returncode == 2 and bad_cli.stderr.count("\n") == 1
