"""The pipeline: envelope, normalization, event log, ingest, outbox relay and settings.

It knows nothing of identity or personalization (they depend on it, not the reverse).
"""

from pipeline.db import Base, Database, dialect_insert
from pipeline.envelope import Channel, Touchpoint, utcnow
from pipeline.errors import (
    ConflictError,
    HubError,
    PermanentError,
    SettingsError,
    TransientError,
    ValidationError,
)
from pipeline.ingest import IngestResult, ingest
from pipeline.processing import BatchWork, StoredEvent
from pipeline.settings import DEFAULT_WORKSPACE, Settings, load_settings

__all__ = [
    "DEFAULT_WORKSPACE",
    "Base",
    "BatchWork",
    "Channel",
    "ConflictError",
    "Database",
    "HubError",
    "IngestResult",
    "PermanentError",
    "Settings",
    "SettingsError",
    "StoredEvent",
    "Touchpoint",
    "TransientError",
    "ValidationError",
    "dialect_insert",
    "ingest",
    "load_settings",
    "utcnow",
]
