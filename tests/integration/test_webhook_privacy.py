"""Erasure reaches webhook deliveries: nothing of the person is left in a body or a stored
answer, open deliveries are given up unsent, and the fan-out then sends ``profile.erased``
without personal data. Export lists what was sent about the person.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update
from test_erasure import KEY, WS, build_ann, leaks

from connectors.webhooks.endpoints import create_endpoint
from connectors.webhooks.models import WebhookAttempt, WebhookDelivery
from connectors.webhooks.privacy import ERASED_BODY
from identity.changes import record_change
from pipeline import Database, load_settings
from workers.api_privacy import erase as wired_erase
from workers.api_privacy import export_stream
from workers.runtime import Runtime
from workers.webhooks_dispatch import fan_out_all


def test_erasure_scrubs_deliveries_and_cancels_the_open_ones(
    any_db: Database, tmp_path: Path
) -> None:
    settings = load_settings(
        {
            "ECRM_HOME": str(tmp_path),
            "ECRM_DATABASE_URL": any_db.engine.url.render_as_string(hide_password=False),
            "ECRM_ERASURE_KEY": KEY.decode(),
            "ECRM_WEBHOOK_COALESCE_SECONDS": "0",
        }
    )
    runtime = Runtime(settings=settings, db=any_db)
    with any_db.write() as session:
        create_endpoint(
            session,
            WS,
            url="http://127.0.0.1:9/hook",
            events=[],
            allow_private=True,
            now=datetime.now(UTC) - timedelta(days=1),
        )
    ann = build_ann(any_db)
    with any_db.write() as session:  # two updates of Ann: bodies with her current state
        record_change(session, WS, "profile.updated", ann.survivor, {"traits": ["x"]})
    fan_out_all(runtime)
    with any_db.write() as session:  # the first one was sent, and the receiver echoed it
        first = session.scalars(
            select(WebhookDelivery).where(
                WebhookDelivery.profile_id == ann.survivor,
                WebhookDelivery.type == "profile.updated",
            )
        ).first()
        assert first is not None and ann.email in first.body
        session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == first.id).values(state="delivered")
        )
        session.add(
            WebhookAttempt(
                workspace_id=WS,
                delivery_id=first.id,
                number=1,
                started_at=datetime.now(UTC),
                status=200,
                latency_ms=1.0,
                outcome="delivered",
                response=f"thanks, got {ann.email}",
                error=None,
            )
        )
    with any_db.write() as session:
        record_change(session, WS, "profile.updated", ann.survivor, {"traits": ["y"]})
    fan_out_all(runtime)
    exported = b"".join(export_stream(runtime, WS, ann.survivor) or [])
    sent = json.loads(exported)["webhook_deliveries"]
    # hers only (Bob's profile.created is not), the merged-away profile's among them
    assert {d["profile_id"] for d in sent} == {ann.survivor, ann.merged}

    result = wired_erase(runtime, WS, ann.survivor, requested_by="test")
    assert result["counts"]["webhook_deliveries"] >= 2
    assert result["counts"]["webhook_deliveries_cancelled"] >= 1
    assert leaks(any_db, ann.secrets) == []
    with any_db.read() as session:
        rows = session.scalars(
            select(WebhookDelivery).where(
                WebhookDelivery.profile_id.in_([ann.survivor, ann.merged])
            )
        ).all()
    assert all(row.body == ERASED_BODY for row in rows)
    assert {row.state for row in rows} == {"delivered", "failed"}  # nothing left to send

    fan_out_all(runtime)  # the erasure's own change goes out, with no personal data
    with any_db.read() as session:
        erased = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.type == "profile.erased")
        ).all()
    assert [row.profile_id for row in erased] == [ann.survivor]
    assert erased[0].state == "pending"
    assert leaks(any_db, ann.secrets) == []
