"""The Twilio routes in-process over a real database (GroupWriter + SQLite/PostgreSQL).

What the end-to-end test's single hub (behind a "proxy") does not cover: signatures over the
hub's own URL, a hub without an agent number, a hub without an auth token, and a database
that is down while a customer calls. Requests go to the
real router (httpx's ASGI transport, each request on its own event loop as the writer
answers on the caller's loop); signatures come from the real ``twilio`` validator.
"""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from twilio.request_validator import RequestValidator

from pipeline import DEFAULT_WORKSPACE, Database, load_settings
from pipeline.events import get_event
from workers.api_twilio import twilio_router
from workers.group_writer import GroupWriter
from workers.problems import PROBLEM, Problem

TOKEN = "twilio_test_auth_token_0123456789"
ACCOUNT = "AC" + "5" * 32
OWN = "http://testserver"


class Client:
    """A synchronous client for the ASGI app (no server, no thread)."""

    def __init__(self, app: FastAPI) -> None:
        self.transport = httpx.ASGITransport(app, raise_app_exceptions=False)

    def post(self, path: str, **options: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.transport, base_url=OWN) as client:
                return await client.post(path, **options)

        return asyncio.run(send())


def client_for(db: Database, home: Path, **env: str) -> Iterator[Client]:
    settings = load_settings({"ECRM_HOME": str(home), **env})

    def committed(*_: Any) -> None:
        pass

    writer = GroupWriter(db, settings.default_region, on_commit=committed)
    app = FastAPI()

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    app.include_router(twilio_router(settings, writer.store))
    writer.start()
    try:
        yield Client(app)
    finally:
        writer.stop()


@pytest.fixture
def twilio(any_db: Database, tmp_path: Path) -> Iterator[Client]:
    yield from client_for(any_db, tmp_path, ECRM_TWILIO_AUTH_TOKEN=TOKEN)


def post(client: Client, path: str, params: dict[str, str], url: str | None = None) -> Any:
    signature = RequestValidator(TOKEN).compute_signature(url or OWN + path, params)
    return client.post(
        path,
        content=urlencode(params),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        },
    )


def sms(message_sid: str, body: str = "hello") -> dict[str, str]:
    return {
        "MessageSid": message_sid,
        "AccountSid": ACCOUNT,
        "From": "+14155550123",
        "To": "+15005550001",
        "Body": body,
        "NumMedia": "0",
        "ApiVersion": "2010-04-01",
    }


def call(call_sid: str) -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": ACCOUNT,
        "From": "+14155550123",
        "To": "+15005550001",
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }


def test_own_url_is_signed_without_a_public_url(twilio: Client, any_db: Database) -> None:
    message_sid = "SM" + uuid.uuid4().hex
    forged = post(
        twilio, "/v1/twilio/sms", sms(message_sid), url="https://elsewhere.example/v1/twilio/sms"
    )
    assert forged.status_code == 403
    response = post(twilio, "/v1/twilio/sms", sms(message_sid, "STOP"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    again = post(twilio, "/v1/twilio/sms", sms(message_sid, "STOP"))
    assert again.status_code == 200 and again.text == response.text
    with any_db.read() as session:
        event = get_event(session, DEFAULT_WORKSPACE, f"twilio:sms:{message_sid}")
    assert event is not None
    assert event.event.properties["consent"]["status"] == "opted_out"
    assert event.event.identifiers == {"phone": "+14155550123"}


def test_without_an_agent_the_call_is_greeted_and_hung_up(twilio: Client) -> None:
    response = post(twilio, "/v1/twilio/voice", call("CA" + uuid.uuid4().hex))
    assert response.status_code == 200, response.text
    root = ET.fromstring(response.text)
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert root[0].text == load_settings({}).twilio_greeting


def test_only_form_bodies_are_read(twilio: Client) -> None:
    response = twilio.post(
        "/v1/twilio/sms",
        json=sms("SM" + uuid.uuid4().hex),
        headers={"X-Twilio-Signature": "x"},
    )
    assert response.status_code == 415 and response.headers["content-type"] == PROBLEM


def test_without_an_auth_token_every_route_answers_503(sqlite_db: Database, tmp_path: Path) -> None:
    for client in client_for(sqlite_db, tmp_path):
        for path in ("/v1/twilio/sms", "/v1/twilio/voice", "/v1/twilio/status"):
            response = post(client, path, sms("SM" + uuid.uuid4().hex))
            assert response.status_code == 503
            assert response.headers["content-type"] == PROBLEM
            assert "ECRM_TWILIO_AUTH_TOKEN" in response.json()["detail"]


def test_a_caller_is_answered_even_when_the_database_is_down(
    sqlite_url: str, tmp_path: Path
) -> None:
    down = Database.connect(sqlite_url)  # never migrated: every write fails
    try:
        for client in client_for(
            down, tmp_path, ECRM_TWILIO_AUTH_TOKEN=TOKEN, ECRM_TWILIO_FORWARD_TO="+15005550006"
        ):
            answer = post(client, "/v1/twilio/voice", call("CA" + uuid.uuid4().hex))
            assert answer.status_code == 200, answer.text
            assert [child.tag for child in ET.fromstring(answer.text)] == ["Say", "Dial"]
            # an SMS is not acknowledged as if it were stored (Twilio may retry it)
            assert post(client, "/v1/twilio/sms", sms("SM" + uuid.uuid4().hex)).status_code == 500
    finally:
        down.dispose()


def test_an_unknown_call_status_is_refused_and_not_stored(twilio: Client, any_db: Database) -> None:
    call_sid = "CA" + uuid.uuid4().hex
    params = {**call(call_sid), "CallStatus": "teleported"}
    response = post(twilio, "/v1/twilio/status", params)
    assert response.status_code == 400 and response.json()["field"] == "CallStatus"
    with any_db.read() as session:
        assert get_event(session, DEFAULT_WORKSPACE, f"twilio:call:{call_sid}:completed") is None


def test_an_odd_account_sid_is_refused_not_a_crash(sqlite_db: Database, tmp_path: Path) -> None:
    for client in client_for(
        sqlite_db, tmp_path, ECRM_TWILIO_AUTH_TOKEN=TOKEN, ECRM_TWILIO_ACCOUNT_SID=ACCOUNT
    ):
        params = {**sms("SM" + uuid.uuid4().hex), "AccountSid": "AC✓"}
        response = post(client, "/v1/twilio/sms", params)
        assert response.status_code == 403 and response.json()["field"] == "AccountSid"
