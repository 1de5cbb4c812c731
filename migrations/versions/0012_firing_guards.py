"""rule firings per profile, and why a firing's actions were held back

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

``held`` is ``NULL`` when the firing's actions ran, else why they did not: ``holdout``
(the profile is in the rule's holdout group) or ``frequency_cap`` / ``channel_cap``.
Frequency caps count a profile's recent firings whose actions ran, and the profile's
timeline lists its firings: both read ``ix_rule_firings_profile``. Channel caps count a
profile's recent messages in the outbox: ``ix_actions_profile``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rule_firings") as batch:
        batch.add_column(sa.Column("held", sa.String(length=32), nullable=True))
    op.create_index(
        "ix_rule_firings_profile", "rule_firings", ["workspace_id", "profile_id", "created_at"]
    )
    op.create_index("ix_actions_profile", "actions", ["workspace_id", "profile_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_actions_profile", table_name="actions")
    op.drop_index("ix_rule_firings_profile", table_name="rule_firings")
    with op.batch_alter_table("rule_firings") as batch:
        batch.drop_column("held")
