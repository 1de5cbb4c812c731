"""Group commit: concurrent requests share transactions, yet each gets exactly its results."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from pipeline import Database, IngestResult
from pipeline.models import Event
from workers.group_writer import GroupWriter


def touch(message_id: str) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "channel": "web",
        "type": "page.viewed",
        "occurred_at": datetime(2026, 11, 1, tzinfo=UTC),
        "identifiers": {"anonymous_id": message_id},
    }


def test_concurrent_requests_get_their_own_results(any_db: Database) -> None:
    run = uuid.uuid4().hex[:6]
    committed: list[tuple[str, int]] = []

    def on_commit(
        workspace: str, tps: Sequence[dict[str, Any]], res: Sequence[IngestResult]
    ) -> None:
        committed.append((workspace, len(res)))

    writer = GroupWriter(any_db, "US", on_commit=on_commit)
    writer.start()
    # 30 requests of 10; request r shares its first message id with request r - 1.
    requests = [
        [f"{run}-{r}-{n}" if n else f"{run}-{max(r - 1, 0)}-9" for n in range(10)]
        for r in range(30)
    ]
    requests[5][3] = "not valid"  # and one invalid touchpoint
    bodies = [[touch(m) for m in ids] for ids in requests]
    bodies[5][3]["type"] = "Not Past Tense"

    async def send_all() -> list[list[IngestResult]]:
        return await asyncio.gather(*(writer.store("default", body) for body in bodies))

    try:
        answers = asyncio.run(send_all())
    finally:
        writer.stop()
    assert [len(a) for a in answers] == [10] * 30
    for answer in answers:
        assert [r.index for r in answer] == list(range(10))
    statuses = [r.status for answer in answers for r in answer]
    unique = {m for ids in requests for m in ids} - {"not valid"}
    assert statuses.count("accepted") == len(unique)
    assert statuses.count("rejected") == 1 and answers[5][3].field == "type"
    assert statuses.count("duplicate") == 300 - 1 - len(unique)
    assert sum(n for _, n in committed) == 300 and len(committed) == 30
    with any_db.read() as session:
        stored = session.scalar(
            select(func.count()).select_from(Event).where(Event.message_id.like(f"{run}-%"))
        )
    assert stored == len(unique)


def test_a_failed_transaction_fails_only_its_requests(sqlite_db: Database) -> None:
    writer = GroupWriter(sqlite_db, "US", on_commit=lambda *_: None)
    writer.start()

    async def both() -> list[Any]:
        return await asyncio.gather(
            writer.store("no-such-workspace", [touch(f"x-{uuid.uuid4()}")]),
            writer.store("default", [touch(f"y-{uuid.uuid4()}")]),
            return_exceptions=True,
        )

    try:
        bad, good = asyncio.run(both())
    finally:
        writer.stop()
    assert isinstance(bad, Exception) and "FOREIGN KEY" in str(bad)
    assert isinstance(good, list) and good[0].status == "accepted"
