"""One webhook delivery attempt: POST, read a little of the answer, say what happened.

Why it never raises for the network: the dispatcher records every attempt and decides from
its :class:`Attempt` alone (deliver, retry later, disable the endpoint), so a refused
connection or a timeout is data, not an exception. The attempt is careful with a receiver
it does not trust: the target is re-checked right before connecting (DNS may have changed
since registration), redirects are never followed (a 3xx is a failure naming its
``Location``), timeouts are short and the response body is read only up to a cap.

Outcomes:

- ``delivered``: a 2xx answer;
- ``gone``: ``410 Gone``, the receiver asks us to stop: disable the endpoint;
- ``retry``: worth trying again on the schedule: network errors and timeouts, 408, 429,
  5xx, an unresolvable host; ``retry_after`` carries a 429/503's ``Retry-After``;
- ``failed``: the receiver rejected the request (3xx, other 4xx) or the target is forbidden;
  sending the same bytes again is unlikely to help until someone fixes the endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, cast
from urllib.parse import SplitResult, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from connectors.webhooks.targets import ResolveError, resolve_allowed, split_url
from pipeline.errors import ValidationError

Outcome = Literal["delivered", "retry", "gone", "failed"]
USER_AGENT = "ecrm-hub-webhooks/0.1"
_RETRY_STATUSES = frozenset({408, 425, 429})
_ERROR_CHARS = 500
_CHUNK = 1024


@dataclass(frozen=True)
class Attempt:
    """What one POST to an endpoint did, as the dispatcher records it."""

    status: int | None
    latency_ms: float
    #: the start of the response body (at most ``max_response_bytes``), for the attempt log
    response: str
    error: str | None
    #: seconds the receiver asked us to wait (``Retry-After`` on 429/503), else None
    retry_after: float | None
    outcome: Outcome


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date; None if unusable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


class PinnedAdapter(HTTPAdapter):
    """Connects to the address in the URL, but speaks TLS to the name in ``Host``.

    Why: :func:`post` checks the addresses a name resolves to, then sends to the checked
    address itself (the URL's host replaced by it, the name kept in ``Host``). Letting
    ``requests`` resolve the name again would open a window for DNS rebinding: a second
    answer pointing inside the network after the first one passed the check. TLS still
    verifies the certificate against the name (SNI and hostname check), not the address.
    """

    def build_connection_pool_key_attributes(
        self, request: Any, verify: Any, cert: Any = None
    ) -> Any:
        host_params, typed = super().build_connection_pool_key_attributes(request, verify, cert)
        pool_kwargs = cast(dict[str, Any], typed)
        name = request.headers.get(PINNED_HEADER)
        if name and host_params.get("scheme") == "https":
            pool_kwargs["server_hostname"] = name
            pool_kwargs["assert_hostname"] = name
        return host_params, pool_kwargs

    def add_headers(self, request: Any, **kwargs: Any) -> None:
        """The internal marker never leaves the hub."""
        request.headers.pop(PINNED_HEADER, None)


#: carries the name a pinned request's TLS must verify, from :func:`post` to the adapter
PINNED_HEADER = "X-Ecrm-Pinned-Host"


def new_session() -> requests.Session:
    """A session for webhook sends: pinned addresses, no proxies or ``.netrc`` from the
    environment (they could hand our credentials or our traffic to someone else)."""
    session = requests.Session()
    session.trust_env = False
    _pin(session)
    return session


def _pin(session: requests.Session) -> None:
    adapter = session.get_adapter("https://x")
    if not isinstance(adapter, PinnedAdapter):
        session.mount("https://", PinnedAdapter())
        session.mount("http://", PinnedAdapter())


def pinned_url(target: str, address: str) -> str:
    """``target`` with its host replaced by the checked ``address`` (port and path kept)."""
    parts = urlsplit(target)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, parts.query, ""))


def _outcome(status: int) -> Outcome:
    if 200 <= status < 300:
        return "delivered"
    if status == 410:
        return "gone"
    if status in _RETRY_STATUSES or status >= 500:
        return "retry"
    return "failed"


def _read_capped(response: requests.Response, limit: int, deadline: float) -> str:
    """At most ``limit`` bytes of the body, stopping at ``deadline`` (a slow drip holds no one)."""
    data = bytearray()
    if limit > 0:
        for chunk in response.iter_content(chunk_size=_CHUNK):
            data += chunk
            if len(data) >= limit or time.monotonic() > deadline:
                break
    return bytes(data[:limit]).decode(response.encoding or "utf-8", errors="replace")


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    max_response_bytes: int = 4096,
    allow_private: bool,
    session: requests.Session | None = None,
) -> Attempt:
    """POST ``body`` to ``url`` once with ``headers`` (the signature headers, usually).

    ``timeout`` bounds connecting and each wait for data (requests' semantics), and reading
    the capped body. The request goes to the first address the name resolved to when it
    was checked (:class:`PinnedAdapter`; a given ``session`` gets the adapter mounted).
    Without a ``session`` a fresh :func:`new_session` is used.
    """
    started = time.monotonic()

    def done(
        outcome: Outcome,
        *,
        status: int | None = None,
        response: str = "",
        error: str | None = None,
        retry_after: float | None = None,
    ) -> Attempt:
        latency = round((time.monotonic() - started) * 1000, 3)
        return Attempt(status, latency, response, error, retry_after, outcome)

    try:
        target, host, port = split_url(url, allow_private=allow_private)
        addresses = resolve_allowed(host, port, allow_private)
    except ValidationError as exc:
        return done("failed", error=f"refused target: {exc.message}"[:_ERROR_CHARS])
    except ResolveError as exc:
        return done("retry", error=str(exc)[:_ERROR_CHARS])

    sent = {"User-Agent": USER_AGENT, "Content-Type": "application/json", **headers}
    if addresses[0] != host:  # a name: connect to the address just checked (see PinnedAdapter)
        sent["Host"] = urlsplit(target).netloc
        sent[PINNED_HEADER] = host
        target = pinned_url(target, addresses[0])
    owned = session is None
    client = new_session() if session is None else session
    if not owned:
        _pin(client)
    try:
        with client.post(
            target,
            data=body,
            headers=sent,
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        ) as answer:
            status = answer.status_code
            text = _read_capped(answer, max_response_bytes, started + timeout * 2)
            retry_after = (
                parse_retry_after(answer.headers.get("Retry-After"))
                if status in (429, 503)
                else None
            )
            error: str | None = None
            if 300 <= status < 400:
                location = answer.headers.get("Location", "(none)")[:_ERROR_CHARS]
                error = f"redirect {status} to {location} not followed"
            elif not 200 <= status < 300:
                error = f"HTTP {status}"
            return done(
                _outcome(status),
                status=status,
                response=text,
                error=error,
                retry_after=retry_after,
            )
    except requests.Timeout as exc:
        return done("retry", error=f"timeout after {timeout:g}s ({_short(exc)})"[:_ERROR_CHARS])
    except (requests.RequestException, OSError) as exc:
        return done("retry", error=_short(exc))
    finally:
        if owned:
            client.close()
