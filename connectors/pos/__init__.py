"""POS connector: transactions over HTTP (``POST /v1/pos/transactions``) and file imports.

Every transaction, whichever way it comes, becomes one ``order.completed`` /
``order.refunded`` / ``order.voided`` touchpoint on the ``pos`` channel, idempotent on
(store id, transaction id).
"""

from connectors.pos.http import TransactionBatch, read_transactions
from connectors.pos.importer import ImportInterrupted, ImportSummary, import_pos_file
from connectors.pos.mapping import Mapping, MappingError, load_mapping, shipped_mappings
from connectors.pos.pan import contains_pan, find_pan, luhn_valid
from connectors.pos.transactions import (
    Kind,
    Transaction,
    message_id,
    parse_transaction,
    to_touchpoint,
    touchpoint_fields,
)

__all__ = [
    "ImportInterrupted",
    "ImportSummary",
    "Kind",
    "Mapping",
    "MappingError",
    "Transaction",
    "TransactionBatch",
    "contains_pan",
    "find_pan",
    "import_pos_file",
    "load_mapping",
    "luhn_valid",
    "message_id",
    "parse_transaction",
    "read_transactions",
    "shipped_mappings",
    "to_touchpoint",
    "touchpoint_fields",
]
