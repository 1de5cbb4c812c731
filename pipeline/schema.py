"""Schema migrations (Alembic), applied by ``ecrm init``, ``ecrm run`` and ``ecrm serve``.

Why a function and not ``alembic upgrade``: users run one tool, ``ecrm``; and every process
start applies pending migrations idempotently, so a fresh ``ECRM_HOME`` just works.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select, text

from pipeline.db import Database
from pipeline.envelope import utcnow
from pipeline.models import Workspace


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at the bundled ``migrations`` package."""
    config = Config()
    config.set_main_option("script_location", str(Path(str(resources.files("migrations")))))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


#: Any constant: the advisory lock that serializes concurrent migrations on PostgreSQL.
_MIGRATION_LOCK = 0x6563726D


def upgrade(db: Database, revision: str = "head") -> None:
    """Apply every pending migration up to ``revision`` (no-op when up to date).

    API, worker and scheduler all call this at start-up, often at the same moment, so the
    migration runs under a lock: SQLite's write lock taken up front (``BEGIN IMMEDIATE``),
    a transaction-scoped advisory lock on PostgreSQL. The second process waits, then finds
    nothing to do.
    """
    config = alembic_config(db.engine.url.render_as_string(hide_password=False))
    with db.engine.execution_options(ecrm_write=True).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(db: Database, revision: str) -> None:
    """Undo migrations down to ``revision`` (for operators rolling back a release)."""
    config = alembic_config(db.engine.url.render_as_string(hide_password=False))
    with db.engine.execution_options(ecrm_write=True).begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def is_current(db: Database) -> bool:
    """True when the database is at the newest migration."""
    script = ScriptDirectory.from_config(alembic_config(str(db.engine.url)))
    with db.engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_heads()
    return set(current) == set(script.get_heads())


def ensure_workspaces(db: Database, workspace_ids: set[str]) -> None:
    """Create the workspaces that write keys name (``default`` comes with the schema)."""
    with db.write() as session:
        existing = set(session.scalars(select(Workspace.id)))
        for workspace_id in sorted(workspace_ids - existing):
            session.add(Workspace(id=workspace_id, name=workspace_id, created_at=utcnow()))
