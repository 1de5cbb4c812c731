"""How long an unmerge takes: one profile of N events, one identifier split off.

    python -m benchmarks.unmerge_time 5000 sqlite:////tmp/unmerge.db
    python -m benchmarks.unmerge_time 5000 postgresql+psycopg://postgres@127.0.0.1:5432/DB

The database must be empty (it is migrated here). Half the events carry the phone that is
split off; every one carries the email that is kept, so the replay resolves all of them.
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from identity.config import IdentityConfig
from identity.unmerge import unmerge
from identity.views import find_profile_id
from pipeline import Database, ingest
from pipeline.outbox import relay
from pipeline.schema import upgrade
from workers.processing import process_batches

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def main(events: int, url: str) -> None:
    db = Database.connect(url)
    upgrade(db)
    config = IdentityConfig()
    email, phone = f"big-{uuid.uuid4().hex[:6]}@example.com", "+14155550199"
    for start in range(0, events, 500):
        items = [
            {
                "message_id": f"um-{uuid.uuid4().hex}",
                "channel": "web",
                "type": "page.viewed",
                "occurred_at": T0 + timedelta(seconds=i),
                "identifiers": {"email": email, **({"phone": phone} if i % 2 else {})},
                "traits": {"visits": i},
            }
            for i in range(start, min(start + 500, events))
        ]
        with db.write() as session:
            ingest(session, items, workspace_id="default", default_region="US")
        published: list[list[int]] = []
        relay(db, published.append, batch_size=500, lease_seconds=60)
        for message in published:
            process_batches(db, message, config)
    with db.read() as session:
        profile_id = find_profile_id(session, "default", "email", email, "US")
    assert profile_id is not None
    started = time.perf_counter()
    with db.write() as session:
        result = unmerge(session, "default", profile_id, identifier=("phone", phone), config=config)
    took = time.perf_counter() - started
    parts = [part["events"] for part in result["profiles"]]
    print(
        f"{db.dialect}: unmerge of a {events:,}-event profile in {took:.2f} s "
        f"({events / took:,.0f} events/s replayed twice); parts {parts}"
    )
    db.dispose()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
