"""what firing rules reads per batch: firings by event, balances from the index alone

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-08

- ``rule_firings``: a batch and the profile timeline read firings by event id
  (``event_id IN (...)``). The unique key ``(workspace_id, rule_id, event_id)`` could not
  serve that, so each read scanned every firing ever written (about 1 ms per batch at
  20,000 firings, growing with them). The same key as ``(workspace_id, event_id,
  rule_id)`` keeps exactly-once per (rule, event) and serves both. SQLite rebuilds the
  table (batch mode).
- ``loyalty_entries``: a batch sums each profile's balance and tier measure over its
  entries. The index by ``(workspace_id, profile_id, id)`` now also holds ``kind``,
  ``created_at`` and ``points``, so the sums read the index alone, not each entry's row.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIRINGS_KEY = "uq_rule_firings_event"
LEDGER_INDEX = "ix_loyalty_entries_profile"
_LEDGER_KEY = ["workspace_id", "profile_id", "id"]


def upgrade() -> None:
    with op.batch_alter_table("rule_firings") as batch_op:
        batch_op.drop_constraint(FIRINGS_KEY, type_="unique")
        batch_op.create_unique_constraint(FIRINGS_KEY, ["workspace_id", "event_id", "rule_id"])
    op.drop_index(LEDGER_INDEX, table_name="loyalty_entries")
    op.create_index(LEDGER_INDEX, "loyalty_entries", [*_LEDGER_KEY, "kind", "created_at", "points"])


def downgrade() -> None:
    op.drop_index(LEDGER_INDEX, table_name="loyalty_entries")
    op.create_index(LEDGER_INDEX, "loyalty_entries", _LEDGER_KEY)
    with op.batch_alter_table("rule_firings") as batch_op:
        batch_op.drop_constraint(FIRINGS_KEY, type_="unique")
        batch_op.create_unique_constraint(FIRINGS_KEY, ["workspace_id", "rule_id", "event_id"])
