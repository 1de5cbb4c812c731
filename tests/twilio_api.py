"""A local stand-in for Twilio's REST API (Messages resource), for the real ``twilio`` client.

It speaks what the client speaks: ``POST /2010-04-01/Accounts/{Sid}/Messages.json`` with
a form body and HTTP Basic auth (account SID : auth token), answered with Twilio-shaped
JSON (``201`` and a message resource, or an error body ``{"code", "message", "status"}``).
Every request is recorded (path, form fields, the Basic credentials it carried), and
answers can be scripted (``fail_next(500)``, ``fail_next(400, code=21211, …)``, or
``outage = 500`` until it is set back to ``None``) so the
hub's retry and failure paths meet a real HTTP exchange.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

_MESSAGES = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Messages\.json$")


@dataclass
class Recorded:
    """One request as the server saw it."""

    path: str
    account_sid: str
    form: dict[str, str]
    basic_user: str | None
    basic_password: str | None
    answered: int


@dataclass
class TwilioApi:
    """The server: ``url`` is what ``ECRM_TWILIO_API_URL`` points at."""

    account_sid: str
    auth_token: str
    requests: list[Recorded] = field(default_factory=list)
    _script: deque[tuple[int, dict[str, Any]]] = field(default_factory=deque)
    #: while set, every message request gets this status (an outage), after the script
    outage: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail_next(self, status: int, *, code: int | None = None, message: str = "") -> None:
        """The next message request gets this error answer (queued in order)."""
        body: dict[str, Any] = {"status": status, "message": message or "Internal error"}
        if code is not None:
            body["code"] = code
            body["more_info"] = f"https://www.twilio.com/docs/errors/{code}"
        with self._lock:
            self._script.append((status, body))

    def messages(self) -> list[Recorded]:
        with self._lock:
            return list(self.requests)

    def start(self) -> TwilioApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                api._answer(self, form)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> TwilioApi:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _answer(self, handler: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        user = password = None
        header = handler.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        match = _MESSAGES.match(handler.path)
        if match is None:
            status, body = 404, {"code": 20404, "message": "Not found", "status": 404}
        elif (user, password) != (self.account_sid, self.auth_token):
            status, body = 401, {"code": 20003, "message": "Authenticate", "status": 401}
        else:
            with self._lock:
                scripted = self._script.popleft() if self._script else None
                if scripted is None and self.outage is not None:
                    scripted = (self.outage, {"status": self.outage, "message": "Unavailable"})
            status, body = scripted or (201, self._message(match.group(1), form))
        with self._lock:
            self.requests.append(
                Recorded(
                    handler.path, match.group(1) if match else "", form, user, password, status
                )
            )
        raw = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        handler.wfile.write(raw)

    @staticmethod
    def _message(account_sid: str, form: dict[str, str]) -> dict[str, Any]:
        sid = "SM" + uuid.uuid4().hex
        now = formatdate(usegmt=True)
        return {
            "account_sid": account_sid,
            "api_version": "2010-04-01",
            "body": form.get("Body", ""),
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if form.get("MessagingServiceSid") else "queued",
            "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"
            },
            "to": form.get("To"),
            "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
        }


def new_account() -> tuple[str, str]:
    """A fresh (account SID, auth token) pair shaped like Twilio's."""
    return "AC" + uuid.uuid4().hex, uuid.uuid4().hex
