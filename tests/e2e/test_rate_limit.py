"""Per-write-key rate limits over HTTP: 429 problem+json with ``Retry-After``, keys apart.

A hub (``ecrm serve`` on SQLite) with two write keys, ``ECRM_RATE_LIMIT=0.2`` (one request
every 5 s) and ``ECRM_RATE_BURST=3``: a key's first three requests pass, the fourth is
refused before its body is read and nothing of it is stored; the other key is unaffected.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from conftest import WRITE_KEY, Hub, basic_auth, sqlite_hub

OTHER_KEY = "wk_other_source_42"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    env = {
        "ECRM_WRITE_KEYS": f"{WRITE_KEY},{OTHER_KEY}",
        "ECRM_RATE_LIMIT": "0.2",
        "ECRM_RATE_BURST": "3",
    }
    with sqlite_hub(tmp_path_factory, "rate-limit", env, ("serve",)) as hub:
        yield hub


def track(client: httpx.Client, key: str, message_id: str) -> httpx.Response:
    return client.post(
        "/v1/track",
        json={"userId": "u-1", "event": "Viewed", "messageId": message_id},
        headers={"Authorization": basic_auth(key)},
    )


def test_a_key_over_its_rate_gets_429_with_retry_after(hub: Hub) -> None:
    tag = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=hub.base_url, timeout=30) as client:
        passed = [track(client, WRITE_KEY, f"{tag}-{n}").status_code for n in range(3)]
        refused = track(client, WRITE_KEY, f"{tag}-refused")
        other = track(client, OTHER_KEY, f"{tag}-other")
        in_body = client.post(  # the key in the body (Segment's other way) counts the same
            "/v1/track",
            json={"userId": "u", "event": "E", "messageId": f"{tag}-b", "writeKey": WRITE_KEY},
        )
    with hub.admin() as admin:
        stored = admin.get(f"/v1/events/{tag}-refused").status_code
        kept = admin.get(f"/v1/events/{tag}-2").status_code
    assert passed == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["field"] == "writeKey" and "ECRM_RATE_LIMIT" in refused.json()["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 5
    assert other.status_code == 200
    assert in_body.status_code == 429
    assert (stored, kept) == (404, 200)
