"""The webhook endpoint registry on SQLite and PostgreSQL: CRUD, filters, secrets, URL checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connectors.webhooks.endpoints import (
    EVENT_TYPES,
    EndpointNotFound,
    active_secrets,
    check_events,
    create_endpoint,
    delete_endpoint,
    endpoint_wants,
    get_endpoint,
    list_endpoints,
    rotate_secret,
    update_endpoint,
)
from connectors.webhooks.models import WebhookSecret
from pipeline import Database, ValidationError

NOW = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
PUBLIC = "https://93.184.216.34/hooks/ecrm"  # a literal public address: no DNS needed
LOOPBACK = "http://127.0.0.1:8999/hook"


def test_create_list_get_update_delete(any_db: Database) -> None:
    with any_db.write() as session:
        view, secret = create_endpoint(
            session,
            "default",
            url="HTTPS://93.184.216.34:443/hooks/ecrm#frag",
            events=["profile.created", "loyalty.*", "profile.created"],
            description="  CRM sync ",
            allow_private=False,
            now=NOW,
        )
    assert view["id"].startswith("whe_") and len(view["id"]) == 36
    assert secret.startswith("whsec_")
    assert view["url"] == PUBLIC  # normalized: scheme, default port, fragment
    assert view["events"] == ["profile.created", "loyalty.*"]
    assert view["description"] == "CRM sync"
    assert (view["enabled"], view["disabled_reason"]) == (True, None)
    assert view["secrets"] == [{"created_at": NOW.isoformat(), "expires_at": None}]
    assert secret not in repr(view)  # a view never carries the secret

    with any_db.write() as session:
        second, _ = create_endpoint(
            session, "default", url=PUBLIC, enabled=False, allow_private=False, now=NOW
        )
    with any_db.read() as session:
        listed = list_endpoints(session, "default", now=NOW)
        assert [v["id"] for v in listed] == [view["id"], second["id"]]  # oldest first
        assert listed[1]["events"] == [] and listed[1]["enabled"] is False
        assert get_endpoint(session, "default", view["id"], now=NOW) == view
        assert get_endpoint(session, "default", "whe_nope", now=NOW) is None
        assert get_endpoint(session, "other", view["id"], now=NOW) is None  # workspaces

    later = NOW + timedelta(minutes=5)
    with any_db.write() as session:
        changed = update_endpoint(
            session,
            "default",
            second["id"],
            events=[],
            description="all of it",
            enabled=True,
            allow_private=False,
            now=later,
        )
    assert (changed["events"], changed["description"], changed["enabled"]) == (
        [],
        "all of it",
        True,
    )
    assert changed["url"] == PUBLIC and changed["updated_at"] == later.isoformat()

    with any_db.write() as session:
        delete_endpoint(session, "default", second["id"])
    with any_db.read() as session:
        assert [v["id"] for v in list_endpoints(session, "default", now=NOW)] == [view["id"]]
        assert session.query(WebhookSecret).filter_by(endpoint_id=second["id"]).count() == 0
    with pytest.raises(EndpointNotFound), any_db.write() as session:
        delete_endpoint(session, "default", second["id"])
    with pytest.raises(EndpointNotFound), any_db.write() as session:
        update_endpoint(session, "default", "whe_nope", enabled=False, allow_private=False, now=NOW)


def test_rotation_keeps_the_old_secret_for_the_grace_period(any_db: Database) -> None:
    with any_db.write() as session:
        view, first = create_endpoint(session, "default", url=PUBLIC, allow_private=False, now=NOW)
    endpoint_id = view["id"]
    with any_db.read() as session:
        assert active_secrets(session, "default", endpoint_id, now=NOW) == [first]

    t1 = NOW + timedelta(hours=1)
    with any_db.write() as session:
        second = rotate_secret(session, "default", endpoint_id, grace_seconds=3600, now=t1)
    assert second.startswith("whsec_") and second != first
    with any_db.read() as session:
        # newest first: what the sender signs with during the grace period
        assert active_secrets(session, "default", endpoint_id, now=t1) == [second, first]
        secrets = get_endpoint(session, "default", endpoint_id, now=t1)["secrets"]  # type: ignore[index]
        assert [s["expires_at"] for s in secrets] == [None, (t1 + timedelta(hours=1)).isoformat()]
        after = t1 + timedelta(hours=1, seconds=1)
        assert active_secrets(session, "default", endpoint_id, now=after) == [second]

    # rotating again within the grace: the first keeps its (earlier) expiry
    t2 = t1 + timedelta(minutes=10)
    with any_db.write() as session:
        third = rotate_secret(session, "default", endpoint_id, grace_seconds=86400, now=t2)
    with any_db.read() as session:
        assert active_secrets(session, "default", endpoint_id, now=t2) == [third, second, first]
        assert active_secrets(session, "default", endpoint_id, now=t1 + timedelta(hours=2)) == [
            third,
            second,
        ]

    # no grace: the old secret stops at once, and expired rows are cleaned up
    t3 = t2 + timedelta(days=2)
    with any_db.write() as session:
        fourth = rotate_secret(session, "default", endpoint_id, grace_seconds=0, now=t3)
    with any_db.read() as session:
        assert active_secrets(session, "default", endpoint_id, now=t3) == [fourth]
        assert session.query(WebhookSecret).filter_by(endpoint_id=endpoint_id).count() == 1

    with pytest.raises(ValidationError) as bad, any_db.write() as session:
        rotate_secret(session, "default", endpoint_id, grace_seconds=-1, now=t3)
    assert bad.value.field == "grace_seconds"
    with pytest.raises(EndpointNotFound), any_db.read() as session:
        active_secrets(session, "default", "whe_nope", now=t3)
    with pytest.raises(EndpointNotFound), any_db.write() as session:
        rotate_secret(session, "other", endpoint_id, now=t3)  # another workspace's


def test_private_and_plain_http_urls_are_refused_unless_allowed(any_db: Database) -> None:
    for url, allowed in ((LOOPBACK, False), ("https://10.1.2.3/x", False), ("ftp://x", True)):
        with pytest.raises(ValidationError) as refused, any_db.write() as session:
            create_endpoint(session, "default", url=url, allow_private=allowed, now=NOW)
        assert refused.value.field == "url"
    with any_db.write() as session:
        view, _ = create_endpoint(session, "default", url=LOOPBACK, allow_private=True, now=NOW)
    assert view["url"] == LOOPBACK
    # an update is checked again
    with pytest.raises(ValidationError) as refused, any_db.write() as session:
        update_endpoint(
            session,
            "default",
            view["id"],
            url="http://169.254.169.254/",
            allow_private=False,
            now=NOW,
        )
    assert refused.value.field == "url"
    with any_db.read() as session:
        assert list_endpoints(session, "default", now=NOW) == [view]  # nothing written


def test_bad_event_filters_name_the_item(any_db: Database) -> None:
    with pytest.raises(ValidationError) as bad, any_db.write() as session:
        create_endpoint(
            session,
            "default",
            url=PUBLIC,
            events=["profile.created", "profile.exploded"],
            allow_private=False,
            now=NOW,
        )
    assert bad.value.field == "events[1]" and "profile.exploded" in bad.value.message
    with any_db.read() as session:
        assert list_endpoints(session, "default", now=NOW) == []


def test_check_events() -> None:
    assert check_events(None) == [] and check_events([]) == []
    assert check_events(list(EVENT_TYPES)) == list(EVENT_TYPES)
    assert check_events(["*", "profile.*", "custom.vip_reached", " rule.fired "]) == [
        "*",
        "profile.*",
        "custom.vip_reached",
        "rule.fired",
    ]
    for events, field in (
        (["nope"], "events[0]"),
        (["rule.fired", "custom."], "events[1]"),
        (["custom.has space"], "events[0]"),
        (["orders.*"], "events[0]"),
        (["profile.cr*"], "events[0]"),
        ([3], "events[0]"),
        ("profile.created", "events"),
    ):
        with pytest.raises(ValidationError) as bad:
            check_events(events)  # type: ignore[arg-type]
        assert bad.value.field == field


def test_endpoint_wants() -> None:
    assert endpoint_wants([], "profile.created")
    assert endpoint_wants(["*"], "custom.anything")
    assert endpoint_wants(["profile.created"], "profile.created")
    assert not endpoint_wants(["profile.created"], "profile.updated")
    assert endpoint_wants(["profile.*"], "profile.merged")
    assert not endpoint_wants(["profile.*"], "loyalty.tier_changed")
    assert endpoint_wants(["custom.*"], "custom.vip")
    assert not endpoint_wants(["custom.vip"], "custom.vipx")
