"""``POST /v1/pos/transactions`` bodies -> touchpoints, and the answer to give back.

Why here and not in the route: the route in ``workers.api`` only authenticates, reads the
body and stores; what a body may look like and how each transaction is judged is the
connector's business, and is tested without a server.

A body is one transaction object, a JSON list of them, or ``{"transactions": [...]}``.
Each invalid transaction is reported by its ``index`` with the ``field`` and ``reason``;
the valid ones are stored, like Segment's ``/v1/batch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.pos.transactions import parse_transaction, touchpoint_fields
from pipeline.errors import ValidationError
from pipeline.ingest import IngestResult, request_outcome

MAX_TRANSACTIONS = 1000


class TooManyTransactions(ValidationError):
    """More transactions in one request than :data:`MAX_TRANSACTIONS` (HTTP 413)."""


@dataclass
class TransactionBatch:
    """The valid transactions of a body as touchpoint fields, and the refused ones."""

    single: bool
    touchpoints: list[dict[str, Any]] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def outcome(self, results: list[IngestResult]) -> tuple[int, int, list[dict[str, Any]]]:
        """(accepted, duplicates, every rejection sorted by index) once stored."""
        return request_outcome(results, self.positions, self.rejected)


def _items(body: Any) -> tuple[list[Any], bool]:
    if isinstance(body, list):
        return body, False
    if isinstance(body, dict):
        if "transactions" in body:
            if not isinstance(body["transactions"], list):
                raise ValidationError("transactions", "must be a list of transactions")
            return body["transactions"], False
        return [{k: v for k, v in body.items() if k != "writeKey"}], True
    raise ValidationError(
        "body", 'send a transaction object, a list of them, or {"transactions": [...]}'
    )


def read_transactions(body: Any, *, received_at: datetime, default_region: str) -> TransactionBatch:
    """Judge every transaction of a request body; raise ``ValidationError`` for the body."""
    items, single = _items(body)
    if not items:
        raise ValidationError("transactions", "no transactions in the body")
    if len(items) > MAX_TRANSACTIONS:
        raise TooManyTransactions("transactions", f"at most {MAX_TRANSACTIONS} per request")
    batch = TransactionBatch(single=single)
    for index, item in enumerate(items):
        try:
            transaction = parse_transaction(item, default_region=default_region)
        except ValidationError as exc:
            batch.rejected.append({"index": index, "field": exc.field, "reason": exc.message})
            continue
        batch.touchpoints.append(touchpoint_fields(transaction, received_at=received_at))
        batch.positions.append(index)
    return batch


__all__ = ["MAX_TRANSACTIONS", "TooManyTransactions", "TransactionBatch", "read_transactions"]
