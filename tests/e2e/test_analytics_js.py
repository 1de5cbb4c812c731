"""The real Segment analytics.js, in headless Chromium, sends to a running hub, offline.

A small static site (Python's http.server, in a thread) serves ``analytics_js/index.html``
and the pinned ``@segment/analytics-next`` from ``analytics_js/node_modules`` (``npm ci``
there; ``.ci/run`` does it). The page passes the source settings inline, so analytics.js
never asks Segment's CDN for them, and sends to the hub (``ecrm serve`` + ``ecrm worker
--beat`` on SQLite) whose ``ECRM_CORS_ORIGINS`` names the site's origin. Debian's Chromium
(``/usr/bin/chromium``) runs the page, driven by Playwright without a browser download of
its own. A second site on another port, not in ``ECRM_CORS_ORIGINS``, is refused by the
browser: its events never reach the hub.

No request interception (``page.route``) on purpose: Playwright answers CORS preflights
itself while it intercepts, which would hide what the hub's CORS settings do.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from conftest import WRITE_KEY, Hub, basic_auth

from pipeline import load_settings

SITE = Path(__file__).parent / "analytics_js"
BUNDLE = SITE / "node_modules/@segment/analytics-next/dist/umd/index.js"
CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"

if not CHROMIUM.exists() and not IN_CI:
    pytest.skip(
        f"{CHROMIUM} is missing (apt-get install chromium); under CI=true this test runs",
        allow_module_level=True,
    )

from playwright.sync_api import (  # noqa: E402
    Browser,
    ConsoleMessage,
    Page,
    Request,
    Response,
    sync_playwright,
)


class StaticSite:
    """``analytics_js/`` over HTTP on 127.0.0.1 and a port of its own, in a thread."""

    def __init__(self) -> None:
        handler = functools.partial(_QuietHandler, directory=str(SITE))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Visit:
    """What the browser did for one page: the hub's answers, failures, outside requests."""

    url: str
    result: dict[str, Any] = field(default_factory=dict)
    hub_answers: list[tuple[str, int]] = field(default_factory=list)
    hub_failures: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def report(self) -> str:
        return (
            f"page {self.url}\n  hub answers: {self.hub_answers}\n"
            f"  failed requests: {self.hub_failures}\n  outside requests: {self.outside}\n"
            f"  console: {self.console[-20:]}"
        )


@pytest.fixture(scope="module")
def sites() -> Iterator[tuple[StaticSite, StaticSite]]:
    """The shop's site (an allowed origin) and another one (not allowed)."""
    if not BUNDLE.exists():
        pytest.fail(f"{BUNDLE} is missing: run `npm ci` in {SITE} (.ci/run does)")
    allowed, refused = StaticSite(), StaticSite()
    yield allowed, refused
    allowed.close()
    refused.close()


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, sites: tuple[StaticSite, StaticSite]
) -> Iterator[Hub]:
    home = tmp_path_factory.mktemp("analytics-js") / "home"
    settings = load_settings({"ECRM_HOME": str(home)})
    extra = {"ECRM_CORS_ORIGINS": sites[0].origin}
    hub = Hub(home, settings.database_url, settings.broker_url, extra_env=extra)
    try:
        hub.launch(("serve",), ("worker", "--beat"))
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing under CI=true: .ci/run installs Debian's chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--disable-quic", "--no-proxy-server", "--disable-dev-shm-usage"],
        )
        yield chromium
        chromium.close()


def visit(browser: Browser, site: StaticSite, hub: Hub, **params: str) -> tuple[Visit, Page]:
    """Open the test page in a fresh browser context and wait for its three calls."""
    query = {"writeKey": WRITE_KEY, "hub": urlsplit(hub.base_url).netloc, **params}
    seen = Visit(f"{site.origin}/index.html?{urlencode(query)}")
    context = browser.new_context()
    page = context.new_page()

    def on_request(request: Request) -> None:
        if urlsplit(request.url).hostname != "127.0.0.1":
            seen.outside.append(request.url)

    def on_response(response: Response) -> None:
        if response.url.startswith(hub.base_url):
            seen.hub_answers.append((urlsplit(response.url).path, response.status))

    def on_failure(request: Request) -> None:
        if request.url.startswith(hub.base_url):
            seen.hub_failures.append(f"{urlsplit(request.url).path}: {request.failure}")

    def on_console(message: ConsoleMessage) -> None:
        seen.console.append(f"{message.type}: {message.text}")

    page.on("request", on_request)
    page.on("response", on_response)
    page.on("requestfailed", on_failure)
    page.on("console", on_console)
    page.on("pageerror", lambda error: seen.console.append(f"pageerror: {error}"))
    page.goto(seen.url, wait_until="load")
    seen.result = page.evaluate(
        """() => Promise.race([
            window.ecrmResult,
            new Promise((_, reject) => setTimeout(
                () => reject(new Error("analytics.js calls unfinished after 20 s")), 20000)),
        ])"""
    )
    return seen, page


def settle(page: Page, seen: Visit, answers: int, failures: int = 0) -> None:
    """Let the browser's network events reach Python (they trail the page's promises)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if len(seen.hub_answers) >= answers and len(seen.hub_failures) >= failures:
            return
        page.wait_for_timeout(100)


def hub_events(admin: httpx.Client) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        response = admin.get("/v1/events", params={"after": after, "limit": 1000})
        assert response.status_code == 200, response.text
        body = response.json()
        events += body["events"]
        if body["next_after"] is None:
            return events
        after = body["next_after"]


def mentioning(events: list[dict[str, Any]], *ids: str) -> list[dict[str, Any]]:
    return [e for e in events if set(ids) & set(e["identifiers"].values())]


@pytest.mark.parametrize("strategy", ["standard", "batching"])
def test_analytics_js_in_chromium_reaches_the_hub_only_from_allowed_origins(
    browser: Browser, sites: tuple[StaticSite, StaticSite], hub: Hub, strategy: str
) -> None:
    allowed, refused = sites
    user, stranger = f"ajs-{uuid.uuid4().hex[:8]}", f"ajs-refused-{uuid.uuid4().hex[:8]}"

    # The origin not in ECRM_CORS_ORIGINS first: the browser refuses the hub's preflight
    # answer, so neither analytics.js nor a plain fetch gets an event through.
    seen_refused, page = visit(browser, refused, hub, userId=stranger, strategy=strategy)
    settle(page, seen_refused, answers=0, failures=1)
    direct = page.evaluate(
        """async ([url, auth]) => {
            try {
                const response = await fetch(url, {method: "POST", body: JSON.stringify(
                    {userId: "direct-" + Math.random(), event: "Refused Fetch"}),
                    headers: {"Authorization": auth, "Content-Type": "application/json"}})
                return "answered " + response.status
            } catch (error) { return "refused: " + error }
        }""",
        [f"{hub.base_url}/v1/track", basic_auth()],
    )
    page.context.close()
    assert direct.startswith("refused: TypeError"), direct
    assert seen_refused.hub_failures, f"the browser sent nothing\n{seen_refused.report()}"
    assert any("blocked by CORS policy" in line for line in seen_refused.console), (
        seen_refused.report()
    )
    assert seen_refused.hub_answers == [], seen_refused.report()
    assert seen_refused.outside == [], seen_refused.report()

    seen, page = visit(browser, allowed, hub, userId=user, strategy=strategy)
    settle(page, seen, answers=1 if strategy == "batching" else 3)
    page.context.close()
    anonymous_id, user_agent = seen.result["anonymousId"], seen.result["userAgent"]
    assert anonymous_id and "HeadlessChrome" in user_agent, seen.result
    assert seen.outside == [], f"analytics.js reached outside 127.0.0.1\n{seen.report()}"
    assert seen.hub_answers, f"the browser sent nothing to the hub\n{seen.report()}"
    short_paths_missing = [path for path, status in seen.hub_answers if status == 404]
    assert not short_paths_missing, (
        f"the hub does not serve {short_paths_missing}: analytics.js posts to Segment's short "
        f"paths (/v1/t, /v1/i, /v1/p, /v1/s, /v1/g, /v1/a; /v1/b when batching)\n{seen.report()}"
    )
    assert all(200 <= status < 300 for _, status in seen.hub_answers), seen.report()
    assert seen.hub_failures == [], seen.report()

    deadline = time.monotonic() + 30
    with hub.admin() as admin:
        while True:
            events = mentioning(hub_events(admin), user, anonymous_id)
            if len(events) >= 3 and all(e["status"] == "processed" for e in events):
                break
            assert time.monotonic() < deadline, f"{events}\n{seen.report()}\n{hub.logs()}"
            time.sleep(0.2)
        profile = admin.get("/v1/profiles", params={"identifier": f"user_id:{user}"})
        everything = hub_events(admin)

    assert sorted(e["type"] for e in events) == [
        "order.completed",
        "page.viewed",
        "profile.identified",
    ], events
    for event in events:
        assert event["channel"] == "web"
        assert event["identifiers"]["anonymous_id"] == anonymous_id
        assert event["identifiers"]["user_id"] == user
        assert event["context"]["userAgent"] == user_agent
        assert event["context"]["page"]["url"] == seen.url
        assert event["context"]["library"]["name"] == "analytics.js"
    [order] = [e for e in events if e["type"] == "order.completed"]
    assert order["properties"]["total"] == 42
    assert order["context"]["segment"]["event"] == "Order Completed"

    assert profile.status_code == 200, profile.text
    found = profile.json()
    assert found["traits"]["email"] == f"{user}@Example.com"
    assert found["traits"]["name"] == "Ada Lovelace"
    assert found["event_count"] == 3
    assert {(i["kind"], i["value"]) for i in found["identifiers"]} >= {
        ("user_id", user),
        ("anonymous_id", anonymous_id),
        ("email", f"{user}@example.com"),
    }

    # Nothing from the refused origin ever arrived (its page ran first).
    assert mentioning(everything, stranger, seen_refused.result["anonymousId"]) == []
    refused_fetches = [e for e in everything if e["type"] == "refused.fetch"]
    assert refused_fetches == []
