"""The loyalty programme: an append-only points ledger per profile, expiry, tiers, rewards.

Domain functions take a session (the caller's transaction) and plain data::

    award(session, ws, profile_id, 100, reason="order", source="rule:r1@3", key="rule:r1:42")
    deduct(...) / adjust(...) / redeem_reward(session, ws, profile_id, "coffee", source="api")
    balance(session, ws, profile_id) -> int          tier(...) -> str | None
    expire_due(session, ws, now)                     (the scheduler, ``ecrm.loyalty.expire``)

Errors (``HubError``; each names a ``field``)::

    LoyaltyError
    ├── ProfileNotFound        no such profile (merged-away ids resolve to the survivor)
    ├── InsufficientPoints     a debit over the balance (``balance``, ``needed``)
    └── IdempotencyConflict    the key names another entry
    UnknownReward (ValidationError)   not in the catalogue

The programme (expiry, tiers, rewards) is :class:`LoyaltyConfig`, from YAML
(``ECRM_LOYALTY_CONFIG``). Tier changes are fed as ``loyalty.tier_changed`` on the profile
change feed (:mod:`identity.changes`).
"""

from personalization.loyalty.config import LoyaltyConfig, LoyaltyConfigError, Reward, Tier
from personalization.loyalty.errors import (
    IdempotencyConflict,
    InsufficientPoints,
    LoyaltyError,
    ProfileNotFound,
    UnknownReward,
)
from personalization.loyalty.ledger import (
    DEFAULT_CONFIG,
    ExpiryRun,
    Posted,
    adjust,
    award,
    deduct,
    expire_due,
    recompute_tier,
    redeem_reward,
    set_tier,
)
from personalization.loyalty.models import LoyaltyAccount, LoyaltyEntry
from personalization.loyalty.tiers import TIER_CHANGED, TierChange
from personalization.loyalty.views import balance, brief, history, summary, tier

__all__ = [
    "DEFAULT_CONFIG",
    "TIER_CHANGED",
    "ExpiryRun",
    "IdempotencyConflict",
    "InsufficientPoints",
    "LoyaltyAccount",
    "LoyaltyConfig",
    "LoyaltyConfigError",
    "LoyaltyEntry",
    "LoyaltyError",
    "Posted",
    "ProfileNotFound",
    "Reward",
    "Tier",
    "TierChange",
    "UnknownReward",
    "adjust",
    "award",
    "balance",
    "brief",
    "deduct",
    "expire_due",
    "history",
    "recompute_tier",
    "redeem_reward",
    "set_tier",
    "summary",
    "tier",
]
