"""A Segment ``batch`` request: its messages as touchpoints, or only checked at the door.

Why here and not in the route: the API maps a batch before it answers (``validate``
mode), and in spool mode a worker maps the stored request later with the same function,
so both give the same events and the same refusals. The door check is the cheap part of
the mapping (:func:`connectors.web.segment.shape_problem`), for spool mode's answer.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from connectors.web.segment import SegmentMessageError, shape_problem, to_touchpoint
from pipeline.spool import Mapper

#: Segment's limit on messages in one batch request
MAX_BATCH_MESSAGES = 2500
#: the kind of a spooled ``/v1/batch`` request (:mod:`pipeline.spool`)
SEGMENT_BATCH = "segment.batch"


@dataclass
class MappedBatch:
    """Touchpoints of the messages that mapped, their positions, and the refusals."""

    touchpoints: list[dict[str, Any]] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    #: ``{"index", "field", "reason"}`` per refused message, in order
    rejected: list[dict[str, Any]] = field(default_factory=list)


def _too_big(message: Any, max_event_bytes: int) -> str | None:
    size = len(orjson.dumps(message))
    if size <= max_event_bytes:
        return None
    return f"message is {size} bytes; the limit is {max_event_bytes}"


def map_batch(
    body: dict[str, Any],
    *,
    received_at: datetime,
    default_region: str,
    max_event_bytes: int,
    body_bytes: int,
    skip: Collection[int] = (),
) -> MappedBatch:
    """Map every message of ``body["batch"]`` (``skip``: positions left out).

    ``body_bytes`` is the body's size: when the whole body is within ``max_event_bytes``
    no message can be over it, and the messages are not measured one by one.
    """
    messages = body["batch"]
    shared = body.get("context") if isinstance(body.get("context"), dict) else {}
    measure = body_bytes > max_event_bytes
    mapped = MappedBatch()
    for index, message in enumerate(messages):
        if index in skip:
            continue
        if measure and (reason := _too_big(message, max_event_bytes)):
            mapped.rejected.append({"index": index, "field": "message", "reason": reason})
            continue
        if shared and isinstance(message, dict):
            own_context = message.get("context")
            if own_context is None or isinstance(own_context, dict):
                message = {**message, "context": {**shared, **(own_context or {})}}
        try:
            touchpoint = to_touchpoint(
                message, received_at=received_at, default_region=default_region
            )
        except SegmentMessageError as exc:
            mapped.rejected.append({"index": index, "field": exc.field, "reason": exc.reason})
            continue
        mapped.touchpoints.append(touchpoint)
        mapped.positions.append(index)
    return mapped


def check_batch(
    body: dict[str, Any], *, max_event_bytes: int, body_bytes: int
) -> tuple[int, list[dict[str, Any]]]:
    """The door's check of every message: (how many passed, the refusals in order)."""
    measure = body_bytes > max_event_bytes
    rejected: list[dict[str, Any]] = []
    for index, message in enumerate(body["batch"]):
        problem = shape_problem(message)
        if problem is None and measure and (reason := _too_big(message, max_event_bytes)):
            problem = ("message", reason)
        if problem is not None:
            rejected.append({"index": index, "field": problem[0], "reason": problem[1]})
    return len(body["batch"]) - len(rejected), rejected


def spooled_batch_mapper(default_region: str) -> Mapper:
    """The mapper of spooled ``segment.batch`` requests, for :func:`pipeline.spool.expand`.

    Sizes were checked at the door (an oversized message is in the request's skip list),
    so they are not measured again.
    """

    def mapper(
        body: Any, received_at: datetime, skip: Collection[int], body_bytes: int
    ) -> tuple[list[dict[str, Any]], list[int], list[dict[str, Any]]]:
        if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
            return [], [], [{"index": 0, "field": "batch", "reason": "body needs a 'batch' array"}]
        mapped = map_batch(
            body,
            received_at=received_at,
            default_region=default_region,
            max_event_bytes=body_bytes,
            body_bytes=body_bytes,
            skip=skip,
        )
        return mapped.touchpoints, mapped.positions, mapped.rejected

    return mapper


__all__ = [
    "MAX_BATCH_MESSAGES",
    "SEGMENT_BATCH",
    "MappedBatch",
    "check_batch",
    "map_batch",
    "spooled_batch_mapper",
]
