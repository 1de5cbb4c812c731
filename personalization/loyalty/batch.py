"""Points earned by the rules of one batch: locked and read once, written in a few statements.

Why not :func:`personalization.loyalty.award` per firing: each award locks the account,
walks the merge family, replays every entry of the ledger into lots and measures the tier:
about ten statements, which made "a point per order" the largest cost of firing rules.
Within a batch the same facts hold for every award, so :class:`LoyaltyBatch`:

1. expires the due lots of the batch's profiles first (the single path, rare: the
   scheduler expires lots as they fall due), so an earn never needs the lots replayed;
2. creates and locks the accounts (``FOR UPDATE`` on PostgreSQL, in id order) and reads
   balances and tier measures for all of them in one query each;
3. keeps each profile's standing in memory as earns are planned: balance, measure, the
   tier it reaches (a crossing is fed as ``loyalty.tier_changed``, as the ledger does);
4. :meth:`flush` appends every entry in one statement and announces each on the change
   feed (``loyalty.points_changed``, with the balance it leaves).

What the ledger guarantees still holds: entries are append-only with their idempotency
keys, a new lot's expiry is later than any existing one (so ``next_expiry_at`` is the
minimum of the two), and tiers are never below their floor. Anything but an earn (a debit,
a tier set by hand) goes through the ledger's own functions after :meth:`flush`, and the
profile is read again with :meth:`reload`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import and_, bindparam, case, func, select, update
from sqlalchemy.orm import Session

from identity.changes import record_changes
from personalization.loyalty import accounts
from personalization.loyalty.config import LoyaltyConfig
from personalization.loyalty.ledger import MAX_POINTS, expire_account
from personalization.loyalty.models import ACCOUNTS, ENTRIES, LoyaltyEntry
from personalization.loyalty.points_feed import points_changed
from personalization.loyalty.policy import ADJUST, EARN, expiry_for, window_start
from personalization.loyalty.tiers import TierChange, feed_tier_change, measures, tier_change
from personalization.loyalty.views import balances_and_tiers
from pipeline.db import dialect_insert, in_list

log = structlog.get_logger(__name__)
_CHUNK = 400


@dataclass(frozen=True)
class _Account:
    """The row of a profile that has no account yet (a dry run creates none)."""

    tier: str | None = None
    tier_floor: str | None = None
    next_expiry_at: datetime | None = None


_NO_ACCOUNT = _Account()


@dataclass
class Standing:
    """A profile's loyalty as the batch's rules see it (after the earns planned so far)."""

    balance: int
    measure: float
    tier: str | None
    floor: str | None
    next_expiry_at: datetime | None
    #: the account row needs writing (a first open lot, or a new tier)
    changed: bool = False
    tier_since: datetime | None = None

    def view(self) -> dict[str, Any]:
        return {"balance": self.balance, "tier": self.tier}


class LoyaltyBatch:
    """Earns of one batch for live (surviving) profiles; see the module doc."""

    def __init__(
        self, session: Session, workspace_id: str, now: datetime, config: LoyaltyConfig
    ) -> None:
        self.session, self.workspace_id, self.now, self.config = session, workspace_id, now, config
        self.standing: dict[str, Standing] = {}
        #: planned entries, each with the balance it leaves
        self._rows: list[tuple[dict[str, Any], int]] = []
        self.locking = True
        self._tier_changes: list[tuple[str, TierChange]] = []
        #: tier crossings to announce after the points that made them (profile, change, source)
        self._tier_feed: list[tuple[str, TierChange, str]] = []
        self._read_only: dict[str, dict[str, Any]] = {}

    @classmethod
    def open(
        cls,
        session: Session,
        workspace_id: str,
        survivors: Collection[str],
        *,
        now: datetime,
        config: LoyaltyConfig,
        lock: bool = True,
        also_read: Collection[str] = (),
    ) -> LoyaltyBatch:
        """Lock and read the accounts of ``survivors`` (steps 1 and 2 of the module doc).

        ``lock=False`` (a dry run): read only; no account is created, locked or expired.
        ``also_read``: profiles whose points are only read (no rule of theirs earns any).
        """
        batch = cls(session, workspace_id, now, config)
        batch.locking = lock
        batch._read(sorted(survivors))
        if also_read:
            batch._read_only = balances_and_tiers(session, workspace_id, also_read)
        return batch

    def _read(self, survivors: list[str]) -> None:
        if not survivors:
            return
        session, ws, now = self.session, self.workspace_id, self.now
        found = self._lock(survivors)
        missing = [p for p in survivors if p not in found]
        if missing and not self.locking:
            found.update(dict.fromkeys(missing, _NO_ACCOUNT))
        elif missing:  # first points of these profiles: their accounts, then lock them too
            session.execute(
                dialect_insert(session)(ACCOUNTS).on_conflict_do_nothing(
                    index_elements=["workspace_id", "profile_id"]
                ),
                [{"workspace_id": ws, "profile_id": p, "updated_at": now} for p in missing],
            )
            found.update(self._lock(missing))
        due = [p for p, row in found.items() if row.next_expiry_at and row.next_expiry_at <= now]
        if not self.locking:
            due = []
        for profile_id in due:
            expire_account(session, ws, profile_id, now, self.config)
        if due:
            session.flush()
            found.update(self._lock(due))
        owner = accounts.families(session, ws, survivors)
        balances, measured = self._sums(owner, survivors)
        for profile_id in survivors:
            row = found[profile_id]
            self.standing[profile_id] = Standing(
                balances[profile_id],
                measured.get(profile_id, 0.0),
                row.tier,
                row.tier_floor,
                row.next_expiry_at,
            )

    def _sums(
        self, owner: dict[str, str], survivors: list[str]
    ) -> tuple[dict[str, int], dict[str, float]]:
        """Balances and tier measures of the families, summed in one grouped query.

        Points-based tiers: the same rows give both (the measure is the ``earn`` and
        ``adjust`` points of the window). Spend-based: the measure reads events.
        """
        session, ws, now, config = self.session, self.workspace_id, self.now, self.config
        balances = dict.fromkeys(survivors, 0)
        measured = dict.fromkeys(survivors, 0.0)
        e = LoyaltyEntry
        in_window = and_(
            e.kind.in_([EARN, ADJUST]),
            e.created_at > window_start(now, config),
            e.created_at <= now,
        )
        members = sorted(owner)
        for start in range(0, len(members), _CHUNK):
            part = members[start : start + _CHUNK]
            for member, points, recent in session.execute(
                select(
                    e.profile_id,
                    func.sum(e.points),
                    func.sum(case((in_window, e.points), else_=0)),
                )
                .where(e.workspace_id == ws, in_list(session, e.profile_id, part))
                .group_by(e.profile_id)
            ):
                balances[owner[member]] += int(points or 0)
                measured[owner[member]] += float(recent or 0)
        if config.tier_measure != "points":
            measured.update(measures(session, ws, owner, now, config))
        return balances, measured

    def _lock(self, survivors: list[str]) -> dict[str, Any]:
        """The accounts' rows, locked (PostgreSQL: ``FOR UPDATE``, in id order)."""
        a = ACCOUNTS.c
        found: dict[str, Any] = {}
        for start in range(0, len(survivors), _CHUNK):
            part = survivors[start : start + _CHUNK]
            query = (
                select(a.profile_id, a.tier, a.tier_floor, a.next_expiry_at)
                .where(
                    a.workspace_id == self.workspace_id, in_list(self.session, a.profile_id, part)
                )
                .order_by(a.profile_id)
            )
            if self.locking and self.session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update()
            for row in self.session.execute(query):
                found[row.profile_id] = row
        return found

    def view(self, profile_id: str) -> dict[str, Any]:
        """``{"balance", "tier"}`` for conditions and templates."""
        standing = self.standing.get(profile_id)
        if standing is not None:
            return standing.view()
        return self._read_only.get(profile_id, {"balance": 0, "tier": None})

    def earn(
        self,
        profile_id: str,
        points: int,
        *,
        reason: str,
        source: str,
        event_id: int | None,
        key: str,
    ) -> dict[str, Any]:
        """Plan an earn (written by :meth:`flush`); the outcome a firing records."""
        if not 0 < points <= MAX_POINTS:
            return {"status": "failed", "error": f"points must be 1 to {MAX_POINTS}"}
        standing = self.standing[profile_id]
        expires_at = expiry_for(self.now, self.config)
        row = {
            "workspace_id": self.workspace_id,
            "profile_id": profile_id,
            "kind": EARN,
            "points": points,
            "reason": reason.strip()[:500] or "rule",
            "source": source[:120],
            "event_id": event_id,
            "idempotency_key": key[:255],
            "reward_id": None,
            "lot_id": None,
            "expires_at": expires_at,
            "created_at": self.now,
        }
        standing.balance += points
        self._rows.append((row, standing.balance))
        if expires_at is not None and (
            standing.next_expiry_at is None or expires_at < standing.next_expiry_at
        ):  # only when no lot was open: a new lot expires after every older one
            standing.next_expiry_at, standing.changed = expires_at, True
        if self.config.tier_measure == "points":
            standing.measure += points
        outcome: dict[str, Any] = {"status": "awarded", "points": points}
        outcome["balance"] = standing.balance
        change = tier_change(standing.tier, standing.floor, standing.measure, self.config)
        if change is not None:
            standing.tier, standing.tier_since, standing.changed = change.current, self.now, True
            self._tier_feed.append((profile_id, change, source))
            outcome["tier"] = change.current
            self._tier_changes.append((profile_id, change))
        return outcome

    def take_tier_changes(self) -> list[tuple[str, TierChange]]:
        """The tier changes earned since the last call (rules react to them)."""
        changes, self._tier_changes = self._tier_changes, []
        return changes

    def flush(self) -> int:
        """Append the planned entries (keys already written are left out); how many.

        Each entry is announced as ``loyalty.points_changed`` with the balance it leaves,
        then the tier crossings they made as ``loyalty.tier_changed``.
        """
        planned, self._rows = self._rows, []
        self._write_accounts()
        written = self._write_entries(planned)
        tiers, self._tier_feed = self._tier_feed, []
        for profile_id, change, source in tiers:
            feed_tier_change(
                self.session,
                self.workspace_id,
                profile_id,
                change,
                now=self.now,
                config=self.config,
                source=source,
            )
        return written

    def _write_entries(self, planned: list[tuple[dict[str, Any], int]]) -> int:
        if not planned:
            return 0
        keys = [row["idempotency_key"] for row, _ in planned]
        seen: set[str] = set()
        for start in range(0, len(keys), _CHUNK):
            seen.update(
                self.session.scalars(
                    select(LoyaltyEntry.idempotency_key).where(
                        LoyaltyEntry.workspace_id == self.workspace_id,
                        in_list(
                            self.session,
                            LoyaltyEntry.idempotency_key,
                            keys[start : start + _CHUNK],
                        ),
                    )
                )
            )
        if seen:  # only if firings were lost while their entries stayed: keep the ledger's
            log.warning("loyalty_keys_already_written", keys=len(seen))
            planned = [(row, left) for row, left in planned if row["idempotency_key"] not in seen]
        if not planned:
            return 0
        # Ids matched back by key, not by order: ``sort_by_parameter_order`` made SQLite
        # insert one row per statement (a thousand statements for a thousand entries).
        insert = ENTRIES.insert().returning(ENTRIES.c.idempotency_key, ENTRIES.c.id)
        written = self.session.execute(insert, [row for row, _ in planned])
        by_key = {str(key): int(entry_id) for key, entry_id in written}
        ids = [by_key[row["idempotency_key"]] for row, _ in planned]
        announced = [
            points_changed(
                row["profile_id"],
                kind=row["kind"],
                points=row["points"],
                balance=left,
                at=self.now,
                entry_id=int(entry_id),
                reason=row["reason"],
                source=row["source"],
                event_id=row["event_id"],
            )
            for (row, left), entry_id in zip(planned, ids, strict=True)
        ]
        record_changes(self.session, self.workspace_id, announced, now=self.now)
        return len(planned)

    def _write_accounts(self) -> None:
        a = ACCOUNTS.c
        changed = [(p, s) for p, s in self.standing.items() if s.changed]
        if not changed:
            return
        with_tier = [(p, s) for p, s in changed if s.tier_since is not None]
        self.session.execute(
            update(ACCOUNTS)
            .where(a.workspace_id == bindparam("ws"), a.profile_id == bindparam("pid"))
            .values(next_expiry_at=bindparam("expiry"), updated_at=bindparam("at")),
            [
                {"ws": self.workspace_id, "pid": p, "expiry": s.next_expiry_at, "at": self.now}
                for p, s in changed
            ],
        )
        if with_tier:
            self.session.execute(
                update(ACCOUNTS)
                .where(a.workspace_id == bindparam("ws"), a.profile_id == bindparam("pid"))
                .values(tier=bindparam("tier_"), tier_since=bindparam("since")),
                [
                    {"ws": self.workspace_id, "pid": p, "tier_": s.tier, "since": s.tier_since}
                    for p, s in with_tier
                ],
            )
        for _, standing in changed:
            standing.changed, standing.tier_since = False, None

    def reload(self, profile_id: str) -> None:
        """Read one profile again after a change made through the ledger's functions."""
        self.standing.pop(profile_id, None)
        self.session.flush()
        self._read([profile_id])


__all__ = ["LoyaltyBatch", "Standing"]
