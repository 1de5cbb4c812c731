"""One delivery attempt against a real local HTTP server (http.server in a thread)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from connectors.webhooks import Attempt, headers, new_message_id, new_secret, post
from connectors.webhooks.send import PINNED_HEADER

BODY = b'{"type":"profile.updated","data":{"id":"p_1"}}'


class Receiver(BaseHTTPRequestHandler):
    """Answers by path: /ok, /error, /busy, /gone, /moved, /big, /slow."""

    received: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        Receiver.received.append((self.path, dict(self.headers.items()), body))
        if self.path == "/ok":
            self._answer(200, b"thanks")
        elif self.path == "/error":
            self._answer(500, b"boom")
        elif self.path == "/busy":
            self._answer(429, b"slow down", {"Retry-After": "120"})
        elif self.path == "/unavailable":
            self._answer(503, b"", {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})
        elif self.path == "/gone":
            self._answer(410, b"unsubscribed")
        elif self.path == "/moved":
            self._answer(302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"})
        elif self.path == "/big":
            self._answer(200, b"x" * 1_000_000)
        elif self.path == "/slow":
            time.sleep(1.5)
            self._answer(200, b"late")
        else:
            self._answer(404, b"no such hook")

    def _answer(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)  # the sender may stop reading at its cap

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def send(url: str, **kwargs: object) -> Attempt:
    options: dict[str, object] = {"timeout": 5.0, "allow_private": True, **kwargs}
    signed = headers([new_secret()], new_message_id(), int(time.time()), BODY)
    return post(url, BODY, signed, **options)  # type: ignore[arg-type]


def test_200_is_delivered_with_verifiable_signature(base_url: str) -> None:
    secret, msg_id = new_secret(), new_message_id()
    signed = headers([secret], msg_id, int(time.time()), BODY)
    attempt = post(f"{base_url}/ok", BODY, signed, timeout=5.0, allow_private=True)
    assert (attempt.outcome, attempt.status, attempt.response) == ("delivered", 200, "thanks")
    assert attempt.error is None and attempt.retry_after is None and attempt.latency_ms > 0
    path, got, body = next(r for r in Receiver.received if r[1].get("webhook-id") == msg_id)
    assert path == "/ok" and body == BODY
    assert got["Content-Type"] == "application/json"
    Webhook(secret).verify(body, got)  # the receiver's library accepts it as sent


def test_500_is_retried(base_url: str) -> None:
    attempt = send(f"{base_url}/error")
    assert (attempt.outcome, attempt.status, attempt.response) == ("retry", 500, "boom")
    assert attempt.error == "HTTP 500"


def test_429_carries_retry_after(base_url: str) -> None:
    attempt = send(f"{base_url}/busy")
    assert (attempt.outcome, attempt.status, attempt.retry_after) == ("retry", 429, 120.0)


def test_503_retry_after_as_http_date(base_url: str) -> None:
    attempt = send(f"{base_url}/unavailable")
    assert attempt.outcome == "retry" and attempt.status == 503
    assert attempt.retry_after is not None and attempt.retry_after > 86400


def test_410_means_gone(base_url: str) -> None:
    attempt = send(f"{base_url}/gone")
    assert (attempt.outcome, attempt.status) == ("gone", 410)


def test_other_4xx_fails(base_url: str) -> None:
    attempt = send(f"{base_url}/missing")
    assert (attempt.outcome, attempt.status, attempt.error) == ("failed", 404, "HTTP 404")


def test_redirect_is_not_followed(base_url: str) -> None:
    before = len(Receiver.received)
    attempt = send(f"{base_url}/moved")
    assert (attempt.outcome, attempt.status) == ("failed", 302)
    assert attempt.error == (
        "redirect 302 to http://169.254.169.254/latest/meta-data/ not followed"
    )
    assert len(Receiver.received) == before + 1


def test_big_response_is_truncated(base_url: str) -> None:
    attempt = send(f"{base_url}/big", max_response_bytes=100)
    assert attempt.outcome == "delivered" and attempt.response == "x" * 100
    default = send(f"{base_url}/big")
    assert len(default.response) == 4096


def test_timeout_is_a_retry_not_an_exception(base_url: str) -> None:
    started = time.monotonic()
    attempt = send(f"{base_url}/slow", timeout=0.3)
    assert time.monotonic() - started < 1.4
    assert attempt.outcome == "retry" and attempt.status is None
    assert attempt.error is not None and "timeout after 0.3s" in attempt.error


def test_connection_refused_is_a_retry() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    attempt = send(f"http://127.0.0.1:{port}/ok")
    assert attempt.outcome == "retry" and attempt.status is None
    assert attempt.error is not None and "ConnectionError" in attempt.error


def test_private_url_is_refused_without_allow_private(base_url: str) -> None:
    before = len(Receiver.received)
    attempt = send(f"{base_url}/ok", allow_private=False)
    assert attempt.outcome == "failed" and attempt.status is None
    assert attempt.error is not None and "ECRM_WEBHOOK_ALLOW_PRIVATE" in attempt.error
    https = send(f"{base_url.replace('http://', 'https://')}/ok", allow_private=False)
    assert https.outcome == "failed" and "127.0.0.1" in (https.error or "")
    assert len(Receiver.received) == before  # nothing was sent


def test_a_given_session_is_used(base_url: str) -> None:
    import requests

    with requests.Session() as session:
        session.headers["X-Test"] = "yes"
        attempt = send(f"{base_url}/ok", session=session)
    assert attempt.outcome == "delivered"
    assert Receiver.received[-1][1].get("X-Test") == "yes"


def test_a_name_is_resolved_once_and_the_checked_address_is_used(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No DNS rebinding window: requests connects to the address our check saw."""
    import socket

    lookups: list[str] = []
    real = socket.getaddrinfo

    def spy(host: str, *args: object, **kwargs: object) -> object:
        lookups.append(host)
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", spy)
    port = base_url.rsplit(":", 1)[1]
    attempt = send(f"http://localhost:{port}/ok")
    assert attempt.outcome == "delivered", attempt.error
    assert lookups.count("localhost") == 1  # ours; requests got the address itself
    sent = Receiver.received[-1][1]
    assert sent["Host"] == f"localhost:{port}"
    assert not any(name.lower() == PINNED_HEADER.lower() for name in sent)


def test_pinned_https_verifies_the_name_not_the_address() -> None:
    import requests

    from connectors.webhooks.send import PinnedAdapter, pinned_url

    url = pinned_url("https://hooks.example.com:8443/in?x=1", "93.184.216.34")
    assert url == "https://93.184.216.34:8443/in?x=1"
    assert pinned_url("https://h.example/in", "2001:db8::1") == "https://[2001:db8::1]/in"
    prepared = requests.Request(
        "POST", url, headers={PINNED_HEADER: "hooks.example.com"}, data=b"{}"
    ).prepare()
    host, pool = PinnedAdapter().build_connection_pool_key_attributes(prepared, True)
    assert host["host"] == "93.184.216.34"
    assert pool["server_hostname"] == pool["assert_hostname"] == "hooks.example.com"
