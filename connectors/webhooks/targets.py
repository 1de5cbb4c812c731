"""Which URLs may receive webhooks: refuse the hub's own network unless told otherwise.

Why: whoever registers an endpoint chooses where the hub sends requests. Without these
checks a URL like ``http://169.254.169.254/`` (cloud metadata) or ``http://10.0.0.5/admin``
turns the hub into a proxy into its private network (SSRF). So endpoints must be https,
carry no credentials, and resolve only to public addresses; ``allow_private`` (the
``ECRM_WEBHOOK_ALLOW_PRIVATE`` setting, which tests use for loopback receivers) lifts the
address and https rules.

A name's addresses can change after registration (DNS rebinding), so the sender calls
:func:`resolve_allowed` again right before connecting.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit, urlunsplit

from pipeline.errors import TransientError, ValidationError

_FIELD = "url"
_DEFAULT_PORTS = {"http": 80, "https": 443}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ResolveError(TransientError):
    """The endpoint's host name does not resolve now (DNS may recover: retry later)."""


def is_forbidden(address: IPAddress) -> bool:
    """True for addresses that are not the public internet (checked through IPv4 mappings)."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None and is_forbidden(mapped):
            return True
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def resolve_allowed(host: str, port: int, allow_private: bool) -> list[str]:
    """Every address ``host`` resolves to, refusing the lot if any one is forbidden.

    Why all and not the first: a client may connect to any of them, so one private address
    among public ones is enough to reach inside. Raises :class:`ResolveError` when the
    name does not resolve and :class:`~pipeline.errors.ValidationError` (field ``url``)
    for a forbidden address.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolveError(f"host {host!r} does not resolve: {exc}") from None
    addresses: list[str] = []
    for *_, sockaddr in infos:
        text = str(sockaddr[0])
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise ResolveError(f"host {host!r} has no addresses")
    if not allow_private:
        for text in addresses:
            parsed = _literal(text)
            if parsed is None or is_forbidden(parsed):
                raise ValidationError(
                    _FIELD,
                    f"host {host!r} resolves to {text}, a private, loopback, link-local or "
                    "reserved address (set ECRM_WEBHOOK_ALLOW_PRIVATE=1 to allow)",
                )
    return addresses


def split_url(url: str, *, allow_private: bool) -> tuple[str, str, int]:
    """Check a URL's shape (no DNS): the normalized URL, its host and its port."""
    if not isinstance(url, str) or not url.strip():
        raise ValidationError(_FIELD, "a webhook URL is required")
    if any(ch.isspace() or ord(ch) < 32 for ch in url.strip()):
        raise ValidationError(_FIELD, "a webhook URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValidationError(_FIELD, f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValidationError(_FIELD, "a webhook URL must start with https:// (or http://)")
    if scheme == "http" and not allow_private:
        raise ValidationError(
            _FIELD, "a webhook URL must use https (set ECRM_WEBHOOK_ALLOW_PRIVATE=1 to allow http)"
        )
    if parts.username is not None or parts.password is not None:
        raise ValidationError(
            _FIELD, "a webhook URL must not carry credentials (user:password@); use the secret"
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValidationError(_FIELD, "a webhook URL needs a host")
    if _literal(host) is None:
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise ValidationError(_FIELD, f"host {host!r} is not a valid name") from None
    port = port if port is not None else _DEFAULT_PORTS[scheme]
    netloc = f"[{host}]" if ":" in host else host
    if port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    normalized = urlunsplit(SplitResult(scheme, netloc, parts.path or "/", parts.query, ""))
    return normalized, host, port


def check_url(url: str, *, allow_private: bool) -> str:
    """The normalized endpoint URL, or :class:`~pipeline.errors.ValidationError` (``url``).

    For registration: shape (http(s), https unless ``allow_private``, a host, no
    credentials; the fragment is dropped, the default port removed, the host lower-cased
    and IDNA-encoded), then every address the host resolves to (literal IPs need no DNS).
    """
    normalized, host, port = split_url(url, allow_private=allow_private)
    try:
        resolve_allowed(host, port, allow_private)
    except ResolveError as exc:
        raise ValidationError(_FIELD, str(exc)) from None
    return normalized
