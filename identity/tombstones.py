"""Tombstones of erased identifiers, and the suppression of events that carry them.

A tombstone is ``HMAC-SHA256(key, kind NUL value)`` of an identifier an erasure removed
(:mod:`identity.erasure`). The key is ``ECRM_ERASURE_KEY``; without it, a key derived from
``ECRM_ADMIN_TOKEN`` (every process of one hub has the same token: the embedded default
reads it from ``$ECRM_HOME/credentials``, a production hub from its environment). Either
way the key never reaches the database, so a copy of it cannot test guesses; changing the
key (or, when it is derived, the admin token) leaves older tombstones unmatched, which
their ``key_id`` shows.

Suppression is off by default. With ``ECRM_ERASURE_SUPPRESS=true`` the worker's
configuration carries the key (``IdentityConfig.suppress_erased_key``) and
:func:`suppress_erased`, called first thing when a batch is planned, takes out every event
any of whose identifiers has a tombstone: such an event is stored (the log keeps what
arrived) but counted in no profile, so the erased person is not created again; it is
listed as a ``suppressed`` conflict (``GET /v1/identity/conflicts``) naming the erasure,
never dropped silently. A second erasure of the same person scrubs those events too.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from identity.config import IdentityConfig
from identity.graph import Conflict
from identity.privacy_models import TOMBSTONES
from pipeline import Settings, SettingsError, StoredEvent
from pipeline.db import in_list

log = structlog.get_logger(__name__)

#: the conflict reason of a suppressed event
SUPPRESSED = "suppressed"
_DERIVE_LABEL = b"ecrm-hub erasure tombstones v1"
_CHUNK = 400

Key = tuple[str, str]


def tombstone_key(settings: Settings) -> bytes:
    """The HMAC key of tombstones: ``ECRM_ERASURE_KEY``, else derived from the admin token."""
    if settings.erasure_key:
        return settings.erasure_key.encode()
    if settings.admin_token:
        return hmac.new(_DERIVE_LABEL, settings.admin_token.encode(), hashlib.sha256).digest()
    raise SettingsError("erasure needs ECRM_ERASURE_KEY (or ECRM_ADMIN_TOKEN to derive it from)")


def key_id(key: bytes) -> str:
    """A name for a key that does not reveal it (16 hex digits)."""
    return hmac.new(key, b"ecrm-hub key id", hashlib.sha256).hexdigest()[:16]


def digest(key: bytes, kind: str, value: str) -> str:
    """The tombstone of one normalized identifier (64 hex digits)."""
    return hmac.new(key, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()


def find_tombstones(
    session: Session, workspace_id: str, digests: Iterable[str]
) -> dict[str, tuple[int, int]]:
    """For each digest that has a tombstone: (tombstone id, erasure id)."""
    wanted = sorted(set(digests))
    found: dict[str, tuple[int, int]] = {}
    t = TOMBSTONES.c
    for start in range(0, len(wanted), _CHUNK):
        rows = session.execute(
            select(t.digest, t.id, t.erasure_id).where(
                t.workspace_id == workspace_id,
                in_list(session, t.digest, wanted[start : start + _CHUNK]),
            )
        )
        for value, tombstone_id, erasure_id in rows:
            found[value] = (tombstone_id, erasure_id)
    return found


def suppress_erased(
    session: Session,
    workspace_id: str,
    events: Sequence[StoredEvent],
    config: IdentityConfig | None,
) -> tuple[Sequence[StoredEvent], list[Conflict]]:
    """The events to resolve, and a ``suppressed`` conflict for each one taken out.

    Costs nothing unless suppression is configured; then one HMAC per identifier and one
    indexed lookup per 400 of them.
    """
    key = config.suppress_erased_key if config is not None else None
    if key is None or not events:
        return events, []
    digests: dict[Key, str] = {}
    for event in events:
        for pair in event.identifiers.items():
            if pair not in digests:
                digests[pair] = digest(key, *pair)
    found = find_tombstones(session, workspace_id, digests.values())
    if not found:
        return events, []
    kept: list[StoredEvent] = []
    suppressed: list[Conflict] = []
    for event in events:
        hits = [
            (kind, ids)
            for kind, value in event.identifiers.items()
            if (ids := found.get(digests[(kind, value)])) is not None
        ]
        if not hits:
            kept.append(event)
            continue
        kinds = sorted({kind for kind, _ in hits})
        suppressed.append(
            Conflict(
                reason=SUPPRESSED,
                kind=kinds[0],
                event_id=event.id,
                profile_ids=(),
                detail={
                    "rule": "erased",
                    "identifiers": [f"{kind}:(erased)" for kind in kinds],
                    "tombstone_ids": sorted({ids[0] for _, ids in hits}),
                    "erasure_ids": sorted({ids[1] for _, ids in hits}),
                },
            )
        )
    log.info("events_suppressed", workspace_id=workspace_id, count=len(suppressed))
    return kept, suppressed


__all__ = ["SUPPRESSED", "digest", "find_tombstones", "key_id", "suppress_erased", "tombstone_key"]
