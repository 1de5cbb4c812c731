"""Group commit for the API: concurrent requests' events are appended in one transaction.

Why: each ingest transaction has a fixed cost (taking SQLite's write lock or a PostgreSQL
round trip, the commit, the batch row, waking a thread), and with one thread per request
the API's threads mostly queued for the lock and traded the GIL. Here requests put their
touchpoints on a queue and await; writer threads take everything queued (up to
``max_events``), append it per workspace in one transaction each, and hand every request
its own results. Nothing is answered before its transaction commits, so an acknowledged
event is durable exactly as before. Validation, normalization and encoding happen before
the transaction begins: on SQLite the write lock, shared with the workers, is then held
only for the insert itself. One writer on SQLite (one write lock anyway), a few on
PostgreSQL so round trips overlap.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from pipeline import Database, IngestResult
from pipeline.ingest import append, prepare
from pipeline.spool import SpoolItem, spool

log = structlog.get_logger(__name__)

#: called after a group commits: (workspace, touchpoints, results) of each request
Committed = Callable[[str, Sequence[dict[str, Any]], Sequence[IngestResult]], None]
#: called after spooled requests commit: (workspace, messages spooled)
Spooled = Callable[[str, int], None]


@dataclass
class _Request:
    workspace: str
    touchpoints: list[dict[str, Any]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[IngestResult]] = field(repr=False)
    #: a request to store raw (spool mode) instead of touchpoints
    item: SpoolItem | None = None

    @property
    def size(self) -> int:
        return self.item.count if self.item is not None else len(self.touchpoints)


class GroupWriter:
    """Writer threads appending the touchpoints of many requests per transaction."""

    def __init__(
        self,
        db: Database,
        default_region: str,
        *,
        on_commit: Committed,
        on_spooled: Spooled | None = None,
        writers: int | None = None,
        max_events: int = 5000,
    ) -> None:
        self._db = db
        self._region = default_region
        self._on_commit = on_commit
        self._on_spooled = on_spooled
        self._max_events = max_events
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        count = writers or (1 if db.dialect == "sqlite" else 4)
        self._threads = [
            threading.Thread(target=self._run, name=f"ecrm-writer-{n}", daemon=True)
            for n in range(count)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    async def store(self, workspace: str, touchpoints: list[dict[str, Any]]) -> list[IngestResult]:
        """Append ``touchpoints`` (with other requests'), return once committed."""
        loop = asyncio.get_running_loop()
        request = _Request(workspace, touchpoints, loop, loop.create_future())
        self._queue.put(request)
        return await request.future

    async def store_raw(self, workspace: str, item: SpoolItem) -> None:
        """Spool one request (with other requests'), return once committed."""
        loop = asyncio.get_running_loop()
        request = _Request(workspace, [], loop, loop.create_future(), item)
        self._queue.put(request)
        await request.future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group, events = [first], first.size
            while events < self._max_events:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # leave the stop signal for this thread's next turn
                    break
                group.append(more)
                events += more.size
            self._write(group)

    def _write(self, group: list[_Request]) -> None:
        by_workspace: dict[str, list[_Request]] = {}
        for request in group:
            by_workspace.setdefault(request.workspace, []).append(request)
        for workspace, all_requests in by_workspace.items():
            raw = [request for request in all_requests if request.item is not None]
            if raw:
                self._spool(workspace, raw)
            requests = [request for request in all_requests if request.item is None]
            if not requests:
                continue
            touchpoints = [tp for request in requests for tp in request.touchpoints]
            try:
                # validated and encoded before the write lock, which is held for the insert
                prepared = prepare(touchpoints, self._region, self._db.dialect)
                with self._db.write() as session:
                    results = append(session, workspace, prepared)
            except Exception as exc:  # the database failed: every request of the group does
                log.error("ingest_failed", workspace=workspace, error=str(exc))
                _resolve([(request, exc) for request in requests])
                continue
            start = 0
            settled: list[tuple[_Request, list[IngestResult] | BaseException]] = []
            for request in requests:
                own = _renumber(results[start : start + len(request.touchpoints)], start)
                start += len(request.touchpoints)
                try:
                    self._on_commit(workspace, request.touchpoints, own)
                except Exception as exc:  # bookkeeping (metrics) must never lose a result
                    log.error("ingest_commit_hook_failed", error=str(exc))
                settled.append((request, own))
            _resolve(settled)

    def _spool(self, workspace: str, requests: list[_Request]) -> None:
        """Store spooled requests in one transaction, under one batch."""
        items = [request.item for request in requests if request.item is not None]
        try:
            with self._db.write() as session:
                spool(session, workspace, items)
        except Exception as exc:  # the database failed: every request of the group does
            log.error("spool_failed", workspace=workspace, error=str(exc))
            _resolve([(request, exc) for request in requests])
            return
        if self._on_spooled is not None:
            try:
                self._on_spooled(workspace, sum(item.count for item in items))
            except Exception as exc:  # bookkeeping (metrics) must never lose a result
                log.error("ingest_commit_hook_failed", error=str(exc))
        _resolve([(request, []) for request in requests])


def _renumber(results: Sequence[IngestResult], offset: int) -> list[IngestResult]:
    """Results of one request's slice, indexed from 0 again."""
    if not offset:
        return list(results)
    return [
        IngestResult(r.index - offset, r.message_id, r.status, r.field, r.reason) for r in results
    ]


def _resolve(outcomes: Sequence[tuple[_Request, list[IngestResult] | BaseException]]) -> None:
    """Hand each request its outcome: one wake-up per event loop for the whole group,
    not one per request (each is a write to the loop's self-pipe and a GIL hand-off)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
    for request, outcome in outcomes:
        by_loop.setdefault(request.loop, []).append((request, outcome))

    def settle(pairs: list[tuple[_Request, list[IngestResult] | BaseException]]) -> None:
        for request, outcome in pairs:
            if request.future.done():
                continue
            if isinstance(outcome, BaseException):
                request.future.set_exception(outcome)
            else:
                request.future.set_result(outcome)

    for loop, pairs in by_loop.items():
        loop.call_soon_threadsafe(settle, pairs)


__all__ = ["GroupWriter"]
