"""Endpoint URLs: https, no credentials, no private/loopback/link-local addresses."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from connectors.webhooks import ResolveError, check_url, resolve_allowed
from pipeline.errors import ValidationError

PUBLIC = "93.184.216.34"


@pytest.fixture(autouse=True)
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only literal IPs and localhost resolve: these tests never touch the network."""
    real = socket.getaddrinfo

    def fake(host: str, port: Any, family: int = 0, type: int = 0, *_: Any) -> Any:
        if host == "localhost":
            return real("127.0.0.1", port, family, type) + real("::1", port, family, type)
        if host == "mixed.example":
            return real(PUBLIC, port, family, type) + real("10.1.2.3", port, family, type)
        if host == "public.example":
            return real(PUBLIC, port, family, type)
        try:
            return real(host, port, family, type, 0, socket.AI_NUMERICHOST)
        except socket.gaierror:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None

    monkeypatch.setattr(socket, "getaddrinfo", fake)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.5/hook",
        "https://172.16.3.4/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://100.64.0.1/hook",
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://[fe80::1]/hook",
        "https://[fc00::1]/hook",
        "https://[::]/hook",
        "https://localhost/hook",
        "https://mixed.example/hook",
    ],
)
def test_private_addresses_are_refused(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_url(url, allow_private=False)
    assert caught.value.field == "url"
    assert "ECRM_WEBHOOK_ALLOW_PRIVATE" in caught.value.message


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1:8443/hook", "http://localhost:8080/", "http://[::1]:9000/x"]
)
def test_private_addresses_pass_when_allowed(url: str) -> None:
    assert check_url(url, allow_private=True) == url


def test_public_literal_ip_passes_without_network() -> None:
    assert check_url(f"https://{PUBLIC}/hook?x=1", allow_private=False) == (
        f"https://{PUBLIC}/hook?x=1"
    )


def test_url_is_normalized() -> None:
    assert check_url("HTTPS://Public.Example:443#frag", allow_private=False) == (
        "https://public.example/"
    )
    assert check_url("https://public.example:8443/a/b", allow_private=False) == (
        "https://public.example:8443/a/b"
    )


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        (f"http://{PUBLIC}/hook", "https"),
        ("ftp://public.example/hook", "https://"),
        ("public.example/hook", "https://"),
        ("https:///hook", "host"),
        ("https://user:pw@public.example/hook", "credentials"),
        ("https://token@public.example/hook", "credentials"),
        ("https://public.example:99999/", "valid URL"),
        ("https://public.example/a b", "spaces"),
        ("", "required"),
        ("https://nowhere.invalid/hook", "does not resolve"),
    ],
)
def test_malformed_urls_are_refused_with_a_reason(url: str, needle: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_url(url, allow_private=False)
    assert caught.value.field == "url" and needle in caught.value.message


def test_http_refusal_says_how_to_allow_it() -> None:
    with pytest.raises(ValidationError, match="ECRM_WEBHOOK_ALLOW_PRIVATE=1"):
        check_url(f"http://{PUBLIC}/hook", allow_private=False)
    assert check_url(f"http://{PUBLIC}/hook", allow_private=True) == f"http://{PUBLIC}/hook"


def test_resolve_allowed_returns_every_address() -> None:
    assert resolve_allowed(PUBLIC, 443, False) == [PUBLIC]
    assert resolve_allowed("localhost", 80, True) == ["127.0.0.1", "::1"]
    with pytest.raises(ValidationError, match=r"10\.1\.2\.3"):
        resolve_allowed("mixed.example", 443, False)


def test_unresolvable_host_is_transient_at_send_time() -> None:
    with pytest.raises(ResolveError):
        resolve_allowed("nowhere.invalid", 443, False)
