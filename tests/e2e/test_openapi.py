"""Schemathesis against a live hub: every operation of ``/openapi.json``, generated inputs.

Why this way: hand-written bad-input tests (``test_bad_input.py``) cover the mistakes we
thought of; Schemathesis derives requests from the published document itself, both valid
ones (per the declared bodies and parameters) and invalid ones, and checks each answer: no
5xx, a documented status, a documented content type, and a body matching its schema (every
client error is problem+json). A hub (``ecrm serve`` + ``ecrm worker --beat`` on SQLite)
with a few processed events and the Twilio webhooks configured (so they answer 403 to an
unsigned request, not "not configured") serves the module.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from conftest import ADMIN_TOKEN, Hub, basic_auth, sqlite_hub
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

#: examples per operation and mode (63 operations: about a minute for both modes)
EXAMPLES = 12
INGEST = (
    "/v1/track",
    "/v1/identify",
    "/v1/page",
    "/v1/screen",
    "/v1/group",
    "/v1/alias",
    "/v1/batch",
    "/v1/import",
    "/v1/pos/transactions",
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    env = {"ECRM_TWILIO_AUTH_TOKEN": "twilio-auth-token-for-tests"}
    with sqlite_hub(tmp_path_factory, "openapi", env, ("serve",), ("worker", "--beat")) as hub:
        _seed(hub)
        yield hub


def _seed(hub: Hub) -> None:
    """A few processed events, so lookups by id also meet rows that exist."""
    tag = uuid.uuid4().hex[:8]
    batch = [
        {
            "type": "track",
            "event": "Order Completed",
            "userId": f"user-{tag}-{n}",
            "messageId": f"{tag}-{n}",
            "properties": {"total": 10 * n},
            "context": {"traits": {"email": f"c{n}-{tag}@example.com"}},
        }
        for n in range(5)
    ]
    with hub.client() as client:
        assert client.post("/v1/batch", json={"batch": batch}).status_code == 200
    with hub.admin() as admin:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answer = admin.get(f"/v1/events/{tag}-4")
            if answer.status_code == 200 and answer.json().get("status") == "processed":
                return
            time.sleep(0.2)
    raise AssertionError("seed events were not processed")


def _failures(hub: Hub, mode: GenerationMode) -> list[str]:
    """Each operation's first failing case under ``mode``, described (empty: none)."""
    schema = schemathesis.openapi.from_url(f"{hub.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 50, [op.path for op in operations]
    found = []
    for operation in operations:
        failure = _first_failure(hub, operation, mode)
        if failure is not None:
            found.append(f"{operation.method.upper()} {operation.path}: {failure[:1500]}")
    return found


def _first_failure(hub: Hub, operation: Any, mode: GenerationMode) -> str | None:
    credentials = basic_auth() if operation.path in INGEST else f"Bearer {ADMIN_TOKEN}"

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        case.call_and_validate(
            base_url=hub.base_url,
            headers={"Authorization": credentials},
            checks=CHECKS,
            timeout=30,
        )

    try:
        run()
    except Exception as exc:
        if "Unable to satisfy" in str(exc):  # nothing to negate (e.g. a free text id)
            return None
        return str(exc)
    return None


def test_the_document_declares_bodies_and_problem_answers(hub: Hub) -> None:
    document = httpx.get(f"{hub.base_url}/openapi.json", timeout=30).json()
    batch = document["paths"]["/v1/batch"]["post"]
    assert batch["requestBody"]["content"]["application/json"]["schema"]["required"] == ["batch"]
    pos = document["paths"]["/v1/pos/transactions"]["post"]["requestBody"]
    assert "Transaction" in str(pos) and "Transaction" in document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            problem = operation["responses"]["4XX"]["content"]["application/problem+json"]
            assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}, (method, path)
            assert "422" not in operation["responses"], (method, path)
    created = document["paths"]["/v1/webhooks/endpoints"]["post"]["responses"]
    assert "201" in created


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_get_documented_answers_and_no_server_error(
    hub: Hub, mode: GenerationMode
) -> None:
    assert _failures(hub, mode) == []


def test_framework_errors_are_problems_too(hub: Hub) -> None:
    """No such route, a wrong method, a declared body that is not JSON: problem+json."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=hub.base_url, timeout=30) as client:
        missing = client.post("/v1/no-such-route")
        wrong = client.delete("/healthz")
        garbled = client.post(
            "/v1/identity/reviews/1",
            content=b"{not json",
            headers={**admin, "Content-Type": "application/json"},
        )
    assert (missing.status_code, missing.json()["title"]) == (404, "Not Found")
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "GET")
    assert garbled.status_code == 400 and garbled.json()["field"] == "body"
    for answer in (missing, wrong, garbled):
        assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/v1/events?after=99999999999999999999", "after"),
        ("GET", "/v1/events?after=-1", "after"),
        ("GET", "/v1/identity/conflicts?after=99999999999999999999", "after"),
        ("GET", "/v1/identity/reviews?after=99999999999999999999", "after"),
        ("GET", "/v1/webhooks/deliveries?before=99999999999999999999", "before"),
        ("POST", "/v1/identity/reviews/99999999999999999999", "review_id"),
    ],
)
def test_ids_beyond_64_bits_are_refused_not_500(
    hub: Hub, method: str, path: str, field: str
) -> None:
    """Found by the generated requests above: the drivers raised on such numbers."""
    answer = httpx.request(
        method,
        f"{hub.base_url}{path}",
        json={"decision": "accept"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )
    assert (answer.status_code, answer.json()["field"]) == (400, field)
