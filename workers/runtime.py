"""The composition root: settings, database and Celery app for one process.

Why lazily and per process: Celery's prefork pool forks workers after start-up, and a
database connection must never cross a fork; so each process builds its runtime on first
use (and a forked child drops the parent's, see ``workers.celery_app``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace

from identity.config import IdentityConfig
from identity.tombstones import tombstone_key
from pipeline import Database, Settings, load_settings
from pipeline.logs import configure_logging
from pipeline.settings import with_local_credentials

_lock = threading.Lock()
_runtime: Runtime | None = None


@dataclass(frozen=True)
class Runtime:
    """What every entry point needs."""

    settings: Settings
    db: Database
    identity: IdentityConfig = field(default_factory=IdentityConfig)


def build_runtime(settings: Settings | None = None) -> Runtime:
    """Create the runtime from settings (loaded from the environment when not given)."""
    settings = with_local_credentials(settings or load_settings())
    settings.home.mkdir(parents=True, exist_ok=True)
    configure_logging(settings.log_level, json=settings.log_json)
    identity_config = IdentityConfig.load(settings.identity_config)  # a bad file: one line
    if settings.erasure_suppress:  # events of erased people join no profile
        identity_config = replace(identity_config, suppress_erased_key=tombstone_key(settings))
    db = Database.connect(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    return Runtime(settings=settings, db=db, identity=identity_config)


def get_runtime() -> Runtime:
    """This process's runtime, built once."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = build_runtime()
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Install a runtime (start-up code, tests) or drop it (after a fork)."""
    global _runtime
    with _lock:
        _runtime = runtime
