"""Bad input over HTTP gets a precise ``application/problem+json`` answer, never a 500.

One hub (``ecrm serve`` + ``ecrm worker --beat`` on SQLite) serves the whole module, with
a small ``ECRM_MAX_REQUEST_BYTES`` so size limits are cheap to reach. Message ids are
uuids, so tests sharing the hub never see each other's events.
"""

from __future__ import annotations

import gzip
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_TOKEN, WRITE_KEY, Hub, basic_auth

from pipeline import load_settings

LIMIT = 4096  # ECRM_MAX_REQUEST_BYTES of the module's hub
EVENT_LIMIT = 3600  # its ECRM_MAX_EVENT_BYTES
SHOP = "https://shop.example.com"  # its ECRM_CORS_ORIGINS
PROBLEM = "application/problem+json"
WRITE = {"Authorization": basic_auth()}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    home = tmp_path_factory.mktemp("bad-input") / "home"
    settings = load_settings({"ECRM_HOME": str(home)})
    hub = Hub(
        home,
        settings.database_url,
        settings.broker_url,
        extra_env={
            "ECRM_MAX_REQUEST_BYTES": str(LIMIT),
            "ECRM_MAX_EVENT_BYTES": str(EVENT_LIMIT),
            "ECRM_CORS_ORIGINS": SHOP,
        },
    )
    try:
        hub.launch(("serve",), ("worker", "--beat"))
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def api(hub: Hub) -> Iterator[httpx.Client]:
    """A client with no credentials: each test says which it sends."""
    with httpx.Client(base_url=hub.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def admin(hub: Hub) -> Iterator[httpx.Client]:
    with hub.admin() as client:
        yield client


def problem(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """Assert ``response`` is a problem+json with ``status`` (and ``field``); return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    if field is not None:
        assert body.get("field") == field, body
    return body


def track(**fields: Any) -> dict[str, Any]:
    """A valid Segment track message, with ``fields`` overriding (``None`` removes)."""
    message: dict[str, Any] = {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "userId": f"bad-input-{uuid.uuid4().hex[:8]}",
        "event": "Product Viewed",
        "properties": {"sku": "S1"},
        "timestamp": "2024-03-01T10:00:00.000Z",
    }
    message.update(fields)
    return {k: v for k, v in message.items() if v is not None}


def wait_processed(admin: httpx.Client, message_ids: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    waiting = set(message_ids)
    while waiting:
        for message_id in sorted(waiting):
            response = admin.get(f"/v1/events/{message_id}")
            assert response.status_code == 200, response.text
            assert response.json()["status"] != "failed", response.json()
            if response.json()["status"] == "processed":
                waiting.discard(message_id)
        if waiting:
            assert time.monotonic() < deadline, f"not processed after {timeout}s: {waiting}"
            time.sleep(0.2)


# --------------------------------------------------------------------------- bodies


@pytest.mark.parametrize("body", [b'{"userId": "u1", ', b"not json", b"", b"\xff\xfe"])
def test_malformed_json_is_400_naming_the_body(api: httpx.Client, body: bytes) -> None:
    headers = {**WRITE, "Content-Type": "application/json"}
    problem(api.post("/v1/track", content=body, headers=headers), 400, "body")


@pytest.mark.parametrize(
    "ids",
    [
        {"userId": None, "anonymousId": None},
        {"userId": "", "anonymousId": None},
        {"userId": None, "anonymousId": ""},
    ],
)
def test_missing_user_and_anonymous_id_is_400_naming_user_id(
    api: httpx.Client, ids: dict[str, Any]
) -> None:
    response = api.post("/v1/track", json=track(**ids), headers=WRITE)
    body = problem(response, 400, "userId")
    assert "anonymousId" in body["detail"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("properties", "a string"),
        ("properties", [1, 2]),
        ("timestamp", "yesterday"),
        ("timestamp", "2024-03-01T10:00:00"),  # no time zone
        ("timestamp", 1709287200),
        ("userId", ["u1"]),
        ("userId", {"id": "u1"}),
        ("anonymousId", True),
        ("messageId", ["m1"]),
        ("event", 42),
        ("context", "web"),
        ("type", "purchase"),
    ],
)
def test_wrong_types_are_400_naming_the_field(api: httpx.Client, field: str, value: Any) -> None:
    message = track(**{field: value})
    if field != "type":  # /v1/track implies the type; only a batch element can get it wrong
        problem(api.post("/v1/track", json=message, headers=WRITE), 400, field)
    response = api.post("/v1/batch", json={"batch": [message]}, headers=WRITE)
    body = problem(response, 400, "batch")
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [(0, field)]


def test_track_needs_an_event_and_an_object(api: httpx.Client) -> None:
    problem(api.post("/v1/track", json=track(event=None), headers=WRITE), 400, "event")
    problem(api.post("/v1/track", json=track(event="  "), headers=WRITE), 400, "event")
    problem(api.post("/v1/track", json=[track()], headers=WRITE), 400, "body")


# --------------------------------------------------------------------------- write auth


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": basic_auth("wk_unknown_0123456789")},
        {"Authorization": "Basic !!!not-base64!!!"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ],
    ids=["missing", "unknown-key", "malformed-basic", "admin-token"],
)
def test_write_routes_need_a_known_write_key(api: httpx.Client, headers: dict[str, str]) -> None:
    for path, body in [("/v1/track", track()), ("/v1/batch", {"batch": [track()]})]:
        response = api.post(path, json=body, headers=headers)
        problem(response, 401)
        assert response.headers["www-authenticate"] == "Basic"


def test_write_key_in_the_body_is_accepted(api: httpx.Client) -> None:
    response = api.post("/v1/track", json={**track(), "writeKey": WRITE_KEY})
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "status": "accepted"}
    problem(api.post("/v1/track", json={**track(), "writeKey": "wk_unknown_01234"}), 401)


# --------------------------------------------------------------------------- sizes, gzip


def test_body_over_the_limit_is_413(api: httpx.Client) -> None:
    big = track(properties={"blob": "x" * LIMIT})
    problem(api.post("/v1/track", json=big, headers=WRITE), 413)


def test_one_event_over_the_event_limit_is_413(api: httpx.Client) -> None:
    big = track(properties={"blob": "x" * EVENT_LIMIT})
    assert len(httpx.Request("POST", "/", json=big).content) < LIMIT
    body = problem(api.post("/v1/track", json=big, headers=WRITE), 413, "body")
    assert str(EVENT_LIMIT) in body["detail"]


def test_event_over_the_limit_in_a_batch_is_rejected_alone(
    api: httpx.Client, admin: httpx.Client
) -> None:
    small, big = track(), track(properties={"blob": "x" * (EVENT_LIMIT - 100)})
    response = api.post("/v1/batch", json={"batch": [small, big]}, headers=WRITE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (1, 0)
    [rejected] = body["rejected"]
    assert (rejected["index"], rejected["field"]) == (1, "message")
    assert f"the limit is {EVENT_LIMIT}" in rejected["reason"]
    wait_processed(admin, [small["messageId"]])
    assert admin.get(f"/v1/events/{big['messageId']}").status_code == 404


def test_cors_allows_the_configured_origin_only(api: httpx.Client) -> None:
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = api.options("/v1/batch", headers={**preflight, "Origin": SHOP})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == SHOP
    assert "POST" in allowed.headers["access-control-allow-methods"]
    other = api.options("/v1/batch", headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    sent = api.post("/v1/track", json=track(), headers={**WRITE, "Origin": SHOP})
    assert sent.status_code == 200 and sent.headers["access-control-allow-origin"] == SHOP


def test_streamed_body_over_the_limit_is_413(api: httpx.Client) -> None:
    """No Content-Length (chunked): the limit still holds while reading."""

    def chunks() -> Iterator[bytes]:
        yield b'{"userId": "u1", "event": "E", "properties": {"blob": "'
        for _ in range(4):
            yield b"x" * 2048
        yield b'"}}'

    headers = {**WRITE, "Content-Type": "application/json"}
    problem(api.post("/v1/track", content=chunks(), headers=headers), 413)


def test_gzip_body_is_accepted_and_processed(api: httpx.Client, admin: httpx.Client) -> None:
    message = track(properties={"text": "gzip " * 600})  # 3 kB inflated, ~0.2 kB packed
    packed = gzip.compress(httpx.Request("POST", "/", json=message).content)
    headers = {**WRITE, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    response = api.post("/v1/track", content=packed, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "status": "accepted"}
    wait_processed(admin, [message["messageId"]])
    stored = admin.get(f"/v1/events/{message['messageId']}").json()
    assert stored["properties"] == message["properties"]


def test_gzip_bomb_is_413(api: httpx.Client) -> None:
    inflated = b'{"userId": "u1", "event": "E", "properties": {"blob": "' + b" " * 2_000_000
    bomb = gzip.compress(inflated + b'"}}', compresslevel=9)
    assert len(bomb) < LIMIT  # passes the raw size check: only inflating reveals it
    headers = {**WRITE, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    problem(api.post("/v1/track", content=bomb, headers=headers), 413)


def test_body_claiming_gzip_that_is_not_is_400(api: httpx.Client) -> None:
    headers = {**WRITE, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    response = api.post(
        "/v1/track", content=httpx.Request("POST", "/", json=track()).content, headers=headers
    )
    problem(response, 400, "body")


# --------------------------------------------------------------------------- batches


def test_mixed_batch_accepts_the_valid_and_reports_each_invalid(
    api: httpx.Client, admin: httpx.Client
) -> None:
    batch: list[Any] = [
        track(),
        track(userId=None),  # 1: no id at all
        {"type": "page", "messageId": str(uuid.uuid4()), "anonymousId": "anon-ok", "name": "Home"},
        track(properties="a string"),  # 3
        track(timestamp="last tuesday"),  # 4
        {"type": "identify", "messageId": str(uuid.uuid4()), "userId": "id-ok", "traits": {}},
        "not an object",  # 6
        track(type="purchase"),  # 7
        track(event=None),  # 8
        track(userId=["u1"]),  # 9
    ]
    response = api.post("/v1/batch", json={"batch": batch}, headers=WRITE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert (body["accepted"], body["duplicates"]) == (3, 0)
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [
        (1, "userId"),
        (3, "properties"),
        (4, "timestamp"),
        (6, "body"),
        (7, "type"),
        (8, "event"),
        (9, "userId"),
    ]
    assert all(r["reason"] for r in body["rejected"])

    valid = [batch[i]["messageId"] for i in (0, 2, 5)]
    wait_processed(admin, valid)
    for index in (1, 3, 4, 7, 8, 9):
        response = admin.get(f"/v1/events/{batch[index]['messageId']}")
        problem(response, 404, "message_id")

    again = api.post("/v1/batch", json={"batch": batch}, headers=WRITE).json()
    assert (again["accepted"], again["duplicates"], len(again["rejected"])) == (0, 3, 7)


def test_batch_where_all_are_invalid_is_400_with_rejected(api: httpx.Client) -> None:
    batch = [track(userId=None), track(timestamp="soon"), 17]
    body = problem(api.post("/v1/batch", json={"batch": batch}, headers=WRITE), 400, "batch")
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [
        (0, "userId"),
        (1, "timestamp"),
        (2, "body"),
    ]


@pytest.mark.parametrize("body", [{"batch": "x"}, {"messages": []}, [track()], {"batch": None}])
def test_batch_needs_a_batch_array(api: httpx.Client, body: Any) -> None:
    problem(api.post("/v1/batch", json=body, headers=WRITE), 400, "batch")


def test_batch_context_of_wrong_type_is_rejected_not_a_crash(api: httpx.Client) -> None:
    """A shared top-level ``context`` merged into a message whose own context is bad."""
    batch = [track(), track(context="web"), {**track(), "context": None}]
    body = {"batch": batch, "context": {"library": {"name": "analytics-python"}}}
    response = api.post("/v1/batch", json=body, headers=WRITE)
    assert response.status_code == 200, response.text
    assert [(r["index"], r["field"]) for r in response.json()["rejected"]] == [(1, "context")]


# --------------------------------------------------------------------------- admin routes


ADMIN_ROUTES = [
    "/v1/events",
    "/v1/events/m1",
    "/v1/profiles/prof_x",
    "/v1/profiles?identifier=user_id:u",
]


@pytest.mark.parametrize("path", ADMIN_ROUTES)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer adm_wrong_0123456789abcdef"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": basic_auth()},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
    ],
    ids=["missing", "wrong", "longer", "write-key", "basic"],
)
def test_admin_routes_need_the_admin_token(
    api: httpx.Client, path: str, headers: dict[str, str]
) -> None:
    problem(api.get(path, headers=headers), 401)


def test_event_list_rejects_unknown_status(admin: httpx.Client) -> None:
    body = problem(admin.get("/v1/events", params={"status": "bogus"}), 400, "status")
    assert "processed" in body["detail"]
    problem(admin.get("/v1/events", params={"limit": 0}), 400, "limit")
    assert admin.get("/v1/events", params={"status": "processed", "limit": 1}).status_code == 200


def test_unknown_profile_and_event_are_404(admin: httpx.Client) -> None:
    problem(admin.get("/v1/profiles/prof_does_not_exist"), 404, "profile_id")
    missing = f"user_id:nobody-{uuid.uuid4().hex}"
    problem(admin.get("/v1/profiles", params={"identifier": missing}), 404, "identifier")
    problem(admin.get(f"/v1/events/{uuid.uuid4()}"), 404, "message_id")


@pytest.mark.parametrize("identifier", ["", "user_id", "user_id:", ":u1", "Bad Kind:u1", "email:x"])
def test_malformed_profile_lookup_is_400(admin: httpx.Client, identifier: str) -> None:
    response = admin.get("/v1/profiles", params={"identifier": identifier})
    problem(response, 400, "identifier")


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ECRM_HTTP_PORT", "abc"),
        ("ECRM_HTTP_PORT", "70000"),
        ("ECRM_DATABASE_URL", "not a url"),
        ("ECRM_DATABASE_URL", "mysql://u@db/hub"),
        ("ECRM_DATABASE_URL", "postgresql://u:s3cr3t-pw@db:notaport/hub"),
    ],
)
def test_cli_config_error_is_one_line_exit_2(tmp_path: Path, name: str, value: str) -> None:
    hub = Hub(
        tmp_path, f"sqlite:///{tmp_path / 'hub.sqlite'}", "memory://", extra_env={name: value}
    )
    result = hub.cli("config", timeout=60)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0]
    assert "s3cr3t-pw" not in result.stderr  # passwords never reach the terminal
    assert result.stdout == ""


def test_a_bad_basic_key_is_refused_before_the_body_is_read(api: httpx.Client) -> None:
    """An unknown write key gets 401 even when its body is malformed or oversized."""
    headers = {"Authorization": basic_auth("wk_not_a_key_000"), "Content-Type": "application/json"}
    assert api.post("/v1/track", content=b"{not json", headers=headers).status_code == 401
    huge = b"[" + b"0," * LIMIT + b"0]"
    assert api.post("/v1/batch", content=huge, headers=headers).status_code == 401


def test_event_ids_with_slashes_can_be_looked_up(api: httpx.Client, admin: httpx.Client) -> None:
    message = track(messageId=f"orders/2026/{uuid.uuid4().hex[:8]}")
    assert api.post("/v1/track", json=message, headers=WRITE).status_code == 200
    wait_processed(admin, [message["messageId"]])
    assert (
        admin.get(f"/v1/events/{message['messageId']}").json()["message_id"] == message["messageId"]
    )
