"""``POST /v1/pos/transactions`` against a running hub (``ecrm serve`` + ``ecrm worker``).

One SQLite hub serves the module; every test uses fresh store/transaction ids, so tests
sharing it never see each other's events.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import Hub, basic_auth

from pipeline import load_settings

PROBLEM = "application/problem+json"
PAN = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    home = tmp_path_factory.mktemp("pos-api") / "home"
    settings = load_settings({"ECRM_HOME": str(home)})
    hub = Hub(home, settings.database_url, settings.broker_url)
    try:
        hub.launch(("serve",), ("worker", "--beat"))
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def api(hub: Hub) -> Iterator[httpx.Client]:
    with hub.client() as client:
        yield client


@pytest.fixture
def admin(hub: Hub) -> Iterator[httpx.Client]:
    with hub.admin() as client:
        yield client


def transaction(store: str, number: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transaction_id": number,
        "store_id": store,
        "terminal_id": "R1",
        "cashier_id": "C9",
        "occurred_at": "2026-11-02T10:15:00+01:00",
        "currency": "EUR",
        "totals": {"subtotal": 20, "tax": 4, "discount": 0, "total": 24},
        "items": [{"sku": "SKU-1", "name": "Tea", "quantity": 2, "unit_price": 10}],
    }
    body.update(extra)
    return body


def processed(admin: httpx.Client, hub: Hub, message_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = admin.get(f"/v1/events/{message_id}")
        assert response.status_code == 200, response.text
        view = response.json()
        assert view["status"] != "failed", view
        if view["status"] == "processed":
            return view
        assert time.monotonic() < deadline, f"{message_id} not processed\n{hub.logs()}"
        time.sleep(0.3)


def test_sale_is_stored_once_per_store_and_transaction(
    api: httpx.Client, admin: httpx.Client, hub: Hub
) -> None:
    store = f"S-{uuid.uuid4().hex[:8]}"
    sale = transaction(store, "T-1", customer={"loyalty_card": "LC-77"})
    first = api.post("/v1/pos/transactions", json=sale)
    assert first.status_code == 200, first.text
    assert first.json() == {"success": True, "accepted": 1, "duplicates": 0, "rejected": []}
    again = api.post("/v1/pos/transactions", json={**sale, "totals": {"subtotal": 1, "total": 1}})
    assert again.json()["duplicates"] == 1  # same (store, transaction): the first one wins
    elsewhere = api.post("/v1/pos/transactions", json=transaction(f"{store}-B", "T-1"))
    assert elsewhere.json()["accepted"] == 1  # the same number in another store is a sale
    view = processed(admin, hub, f"pos:{store}:T-1")
    assert view["channel"] == "pos" and view["type"] == "order.completed"
    assert view["properties"]["total"] == 24 and view["properties"]["store_id"] == store
    assert view["identifiers"] == {"loyalty_card": "LC-77"}
    assert view["occurred_at"].startswith("2026-11-02T09:15:00")


def test_refund_is_linked_to_its_sale(api: httpx.Client, admin: httpx.Client, hub: Hub) -> None:
    store = f"S-{uuid.uuid4().hex[:8]}"
    card = f"LC-{uuid.uuid4().hex[:8]}"
    body = {
        "transactions": [
            transaction(store, "T-9", customer={"loyalty_card": card}),
            transaction(
                store,
                "R-9",
                kind="refund",
                original_transaction_id="T-9",
                customer={"loyalty_card": card},
            ),
            transaction(store, "A-1"),  # anonymous sale ...
            transaction(store, "A-1-V", kind="void", original_transaction_id="A-1"),  # voided
        ]
    }
    response = api.post("/v1/pos/transactions", json=body)
    assert response.json()["accepted"] == 4, response.text
    refund = processed(admin, hub, f"pos:{store}:R-9")
    assert refund["type"] == "order.refunded"
    link = refund["properties"]["original_message_id"]
    assert link == f"pos:{store}:T-9"
    sale = processed(admin, hub, link)
    assert sale["profile_id"] == refund["profile_id"] is not None
    void = processed(admin, hub, f"pos:{store}:A-1-V")
    anonymous = processed(admin, hub, void["properties"]["original_message_id"])
    assert void["type"] == "order.voided"
    assert void["profile_id"] == anonymous["profile_id"] != sale["profile_id"]


def test_card_number_is_400_naming_the_field_and_never_echoed(
    api: httpx.Client, admin: httpx.Client
) -> None:
    store = f"S-{uuid.uuid4().hex[:8]}"
    body = transaction(store, "P-1", customer={"card_fingerprint": PAN})
    response = api.post("/v1/pos/transactions", json=body)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["field"] == "customer.card_fingerprint"
    assert "4111" not in response.text
    assert admin.get(f"/v1/events/pos:{store}:P-1").status_code == 404


def test_a_list_with_one_bad_transaction_accepts_the_others(api: httpx.Client) -> None:
    store = f"S-{uuid.uuid4().hex[:8]}"
    body = [
        transaction(store, "L-1"),
        transaction(store, "L-2", currency="EURO"),
        transaction(store, "L-3", properties={"note": f"card {PAN}"}),
        transaction(store, "L-4"),
    ]
    response = api.post("/v1/pos/transactions", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["accepted"], answer["duplicates"]) == (2, 0)
    assert [(r["index"], r["field"]) for r in answer["rejected"]] == [
        (1, "currency"),
        (2, "properties.note"),
    ]
    assert "4111" not in response.text


def test_nothing_valid_is_400_with_each_rejection(api: httpx.Client) -> None:
    store = f"S-{uuid.uuid4().hex[:8]}"
    body = [transaction(store, "N-1", kind="refund"), transaction(store, "N-2", currency=1)]
    response = api.post("/v1/pos/transactions", json=body)
    assert response.status_code == 400
    problem = response.json()
    assert problem["field"] == "original_transaction_id"
    assert [r["index"] for r in problem["rejected"]] == [0, 1]
    bad_body = api.post("/v1/pos/transactions", json="sale")
    assert bad_body.status_code == 400 and bad_body.json()["field"] == "body"


def test_write_key_is_required(hub: Hub) -> None:
    body = transaction("S-x", "K-1")
    response = httpx.post(f"{hub.base_url}/v1/pos/transactions", json=body, timeout=10)
    assert response.status_code == 401
    wrong = httpx.post(
        f"{hub.base_url}/v1/pos/transactions",
        json=body,
        headers={"Authorization": basic_auth("wk_wrong")},
        timeout=10,
    )
    assert wrong.status_code == 401
