"""The hub's one error tree.

::

    HubError                      anything the hub raises on purpose
    ├── SettingsError             a missing or malformed ECRM_* value (one line, exit 2)
    ├── ValidationError           bad input; carries the offending field
    ├── TransientError            worth retrying with backoff (database busy, broker down)
    │   └── ConflictError         a concurrent writer changed what a plan was built on
    └── PermanentError            retrying will not help; the work is quarantined, visible

HTTP maps ``ValidationError`` to ``application/problem+json`` naming the field; the CLI
prints ``str(error)`` on one line and exits 2.
"""

from __future__ import annotations


class HubError(Exception):
    """Base of every error the hub raises deliberately."""


class SettingsError(HubError):
    """An ``ECRM_*`` setting is missing or malformed."""


class ValidationError(HubError):
    """Input that cannot be accepted; ``field`` names the offending field (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TransientError(HubError):
    """A failure that may succeed when retried later (with backoff)."""


class ConflictError(TransientError):
    """Another worker changed what this work was planned from: plan again at once.

    Unlike other transient errors this one clears in milliseconds (the other transaction
    has committed), so it is retried in process, with a short jittered pause, before the
    work goes back to the broker.
    """


class PermanentError(HubError):
    """A failure that retrying cannot fix; the item is kept as failed with this reason."""
