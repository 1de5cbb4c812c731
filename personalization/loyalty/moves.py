"""Points follow their events when an unmerge moves events to another profile.

Why needed: an unmerge (:mod:`identity.unmerge`) recomputes which profile each event is
counted in. Points earned for an order belong to whoever placed it, so once the order is
counted in another profile its points must go too. The ledger is append-only: nothing is
rewritten; each move is a pair of ``adjust`` entries with the event's id, minus on the
profile that holds the points and plus on the profile the event is counted in now (each
ledger change recomputes its profile's tier).

Why netted per event: the points an event brought may already have moved before (an
earlier unmerge), and those moves carry the event's id too. For each event, the points
each profile holds for it are summed; a profile that holds a non-zero sum for an event it
no longer counts hands that sum to the one that does. Moving again later is then correct,
and running the same move twice (same ``split_id``) writes nothing (idempotency keys).
Points that were already spent cannot be taken back below zero: what is missing is
reported as ``short``, and the receiving side gets only what was taken.

Entries without an event (an operator's adjustment, a redeemed reward) stay where they are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from identity.views import profiles_of_events
from personalization.loyalty import accounts
from personalization.loyalty.config import LoyaltyConfig
from personalization.loyalty.errors import InsufficientPoints
from personalization.loyalty.ledger import DEFAULT_CONFIG, adjust
from personalization.loyalty.models import LoyaltyEntry
from pipeline import utcnow
from pipeline.db import in_list

_CHUNK = 400


@dataclass
class Moves:
    """What following the events did."""

    #: (event id, from profile, to profile, points moved)
    moved: list[tuple[int, str, str, int]] = field(default_factory=list)
    #: points that had been spent already and could not be taken back, per event
    short: dict[int, int] = field(default_factory=dict)

    def view(self) -> dict[str, object]:
        return {
            "moved": [
                {"event_id": e, "from": a, "to": b, "points": p} for e, a, b, p in self.moved
            ],
            "short": [{"event_id": e, "points": p} for e, p in sorted(self.short.items())],
        }


def follow_events(
    session: Session,
    workspace_id: str,
    profile_ids: Iterable[str],
    *,
    split_id: int,
    now: datetime | None = None,
    config: LoyaltyConfig = DEFAULT_CONFIG,
) -> Moves:
    """Move the points of events the unmerge ``split_id`` re-counted among ``profile_ids``.

    ``profile_ids``: every profile the unmerge produced or redirected (its answer's parts and
    ``redirected``); the points they and the profiles merged into them hold are examined.
    """
    now = now or utcnow()
    holders: dict[str, str] = {}
    for profile_id in sorted(set(profile_ids)):
        survivor = accounts.survivor_id(session, workspace_id, profile_id)
        for member in accounts.family(session, workspace_id, survivor):
            holders[member] = survivor
    held: dict[tuple[str, int], int] = defaultdict(int)
    rows = session.execute(
        select(LoyaltyEntry.profile_id, LoyaltyEntry.event_id, LoyaltyEntry.points).where(
            LoyaltyEntry.workspace_id == workspace_id,
            in_list(session, LoyaltyEntry.profile_id, sorted(holders)),
            LoyaltyEntry.event_id.is_not(None),
        )
    )
    for profile_id, event_id, points in rows:
        if event_id is not None:  # (the query leaves none out; for the type checker)
            held[(holders[profile_id], event_id)] += points
    counted = profiles_of_events(session, workspace_id, [event_id for _, event_id in held])
    moves = Moves()
    for (holder, event_id), points in sorted(held.items()):
        owner = counted.get(event_id)
        if points <= 0 or owner is None or owner == holder:
            continue
        taken = _take(session, workspace_id, holder, event_id, points, split_id, now, config)
        if taken < points:
            moves.short[event_id] = moves.short.get(event_id, 0) + points - taken
        if taken:
            adjust(
                session,
                workspace_id,
                owner,
                taken,
                reason=f"unmerge {split_id}: points of event {event_id} from {holder}",
                source=f"unmerge:{split_id}",
                event_id=event_id,
                key=f"unmerge:{split_id}:{event_id}:to:{owner}",
                now=now,
                config=config,
            )
            moves.moved.append((event_id, holder, owner, taken))
    return moves


def _take(
    session: Session,
    workspace_id: str,
    holder: str,
    event_id: int,
    points: int,
    split_id: int,
    now: datetime,
    config: LoyaltyConfig,
) -> int:
    """Take up to ``points`` off ``holder`` (never below zero); how many were taken."""
    want = points
    while want > 0:
        try:
            adjust(
                session,
                workspace_id,
                holder,
                -want,
                reason=f"unmerge {split_id}: event {event_id} is another profile's now",
                source=f"unmerge:{split_id}",
                event_id=event_id,
                key=f"unmerge:{split_id}:{event_id}:from:{holder}",
                now=now,
                config=config,
            )
            return want
        except InsufficientPoints as short:
            if short.balance <= 0:
                return 0
            want = min(want - 1, short.balance)
    return 0


__all__ = ["Moves", "follow_events"]
