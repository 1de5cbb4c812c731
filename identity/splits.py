"""The sides unmerges keep apart, as resolution reads them (see ``IdentitySplit``).

Why cached per process: resolution needs them for every batch, they change only when an
operator unmerges, and a workspace rarely holds more than a few hundred. Each batch reads
the newest split id (one index search); the members are read again when it moved, and
at least every ``REFRESH_SECONDS`` (an erasure rewrites members' values in place: a
worker must not keep a person's erased address in memory for long).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from identity.graph import Key, Side
from identity.models import SPLIT_MEMBERS, SPLITS

Sides = Mapping[Key, frozenset[Side]]
_EMPTY: Sides = MappingProxyType({})
#: per engine (two in-memory databases share a URL), per workspace: newest id, when
#: read (monotonic), sides
_cache: weakref.WeakKeyDictionary[Engine, dict[str, tuple[int, float, Sides]]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()
REFRESH_SECONDS = 30.0


def split_sides(session: Session, workspace_id: str) -> Sides:
    """Every identifier an unmerge keeps apart, with its sides (empty: no unmerge yet)."""
    newest = session.execute(
        select(func.max(SPLITS.c.id)).where(SPLITS.c.workspace_id == workspace_id)
    ).scalar()
    if newest is None:
        return _EMPTY
    engine = session.get_bind().engine
    with _lock:
        cached = _cache.get(engine, {}).get(workspace_id)
    now = time.monotonic()
    if cached is not None and cached[0] == newest and now - cached[1] < REFRESH_SECONDS:
        return cached[2]
    members = SPLIT_MEMBERS.c
    sides: dict[Key, set[Side]] = {}
    rows = session.execute(
        select(members.kind, members.value, members.split_id, members.side).where(
            members.workspace_id == workspace_id
        )
    )
    for kind, value, split_id, side in rows:
        sides.setdefault((kind, value), set()).add((split_id, side))
    frozen: Sides = MappingProxyType({key: frozenset(s) for key, s in sides.items()})
    with _lock:
        _cache.setdefault(engine, {})[workspace_id] = (newest, now, frozen)
    return frozen


def add_split(
    session: Session,
    workspace_id: str,
    *,
    profile_id: str,
    mode: str,
    target: str,
    sides: Mapping[str, Iterable[Key]],
    reason: str | None,
    requested_by: str | None,
    now: Any,
) -> int:
    """Record an unmerge and the identifiers of each side; its id."""
    split_id = int(
        session.execute(
            SPLITS.insert().returning(SPLITS.c.id),
            {
                "workspace_id": workspace_id,
                "profile_id": profile_id,
                "mode": mode,
                "target": target,
                "reason": reason,
                "requested_by": requested_by,
                "result": {},
                "created_at": now,
            },
        ).scalar_one()
    )
    rows = [
        {"split_id": split_id, "workspace_id": workspace_id, "side": side, "kind": k, "value": v}
        for side, keys in sorted(sides.items())
        for k, v in sorted(set(keys))
    ]
    session.execute(SPLIT_MEMBERS.insert(), rows)
    return split_id


__all__ = ["Sides", "add_split", "split_sides"]
