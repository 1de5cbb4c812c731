"""Trait merge policy on real databases: source priority first, then the most recent event."""

from __future__ import annotations

import uuid
from typing import Any

from test_identity_merge import WS, ev, profile_of, run

from identity.config import IdentityConfig
from identity.views import profile_view
from pipeline import Database

CRM_FIRST = IdentityConfig.from_mapping({"trait_sources": ["crm-import"]})


def from_source(source: str, minute: int, traits: dict[str, Any], **ids: str) -> dict[str, Any]:
    return {**ev(minute, traits=traits, **ids), "source": source}


def traits_of(db: Database, item: dict[str, Any]) -> dict[str, Any]:
    with db.read() as session:
        view = profile_view(session, WS, str(profile_of(db, item)))
    assert view is not None
    return dict(view["traits"])


def test_a_ranked_source_keeps_its_value_over_newer_events(any_db: Database) -> None:
    t = uuid.uuid4().hex[:8]
    crm = from_source("crm-import", 0, {"name": "Robert", "tier": "gold"}, user_id=f"u-{t}")
    web = from_source("web-form", 5, {"name": "Bob", "city": "Oslo"}, user_id=f"u-{t}")
    run(any_db, [crm], [web], config=CRM_FIRST)
    assert traits_of(any_db, web) == {"name": "Robert", "tier": "gold", "city": "Oslo"}
    # a later event of the ranked source still replaces its own value
    again = from_source("crm-import", 9, {"name": "Rob"}, user_id=f"u-{t}")
    run(any_db, [again], config=CRM_FIRST)
    assert traits_of(any_db, again)["name"] == "Rob"


def test_without_priorities_the_most_recent_event_wins(any_db: Database) -> None:
    t = uuid.uuid4().hex[:8]
    crm = from_source("crm-import", 0, {"name": "Robert"}, user_id=f"u-{t}")
    web = from_source("web-form", 5, {"name": "Bob"}, user_id=f"u-{t}")
    late_upload = from_source("web-form", 3, {"name": "Bobby"}, user_id=f"u-{t}")
    run(any_db, [crm], [web], [late_upload])
    # the upload arrived last but happened before the web form: it does not win
    assert traits_of(any_db, web)["name"] == "Bob"


def test_a_merge_applies_the_same_priority(any_db: Database) -> None:
    t = uuid.uuid4().hex[:8]
    crm = from_source("crm-import", 0, {"name": "Robert"}, email=f"r-{t}@x.io")
    web = from_source("web-form", 5, {"name": "Bob"}, phone="+14155550142")
    both = ev(7, email=f"r-{t}@x.io", phone="+14155550142")
    run(any_db, [crm], [web], [both], config=CRM_FIRST)
    assert profile_of(any_db, crm) == profile_of(any_db, web)
    assert traits_of(any_db, both)["name"] == "Robert"
