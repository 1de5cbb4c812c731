"""Errors of the loyalty ledger (all ``HubError``: the CLI prints one line, exit 2)."""

from __future__ import annotations

from pipeline.errors import HubError, ValidationError


class LoyaltyError(HubError):
    """Base of the ledger's errors; ``field`` names the input at fault."""

    field = "profile_id"


class ProfileNotFound(LoyaltyError):
    def __init__(self, profile_id: str) -> None:
        super().__init__(f"no profile {profile_id!r}")
        self.profile_id = profile_id


class InsufficientPoints(LoyaltyError):
    """A debit larger than the balance: nothing was written."""

    def __init__(self, balance: int, needed: int, field: str = "points") -> None:
        super().__init__(f"insufficient points: the balance is {balance}, {needed} needed")
        self.balance, self.needed, self.field = balance, needed, field


class IdempotencyConflict(LoyaltyError):
    """The idempotency key already names a different ledger entry."""

    field = "idempotency_key"

    def __init__(self, key: str, entry_id: int) -> None:
        super().__init__(f"idempotency_key {key!r} already names a different entry ({entry_id})")
        self.key, self.entry_id = key, entry_id


class UnknownReward(ValidationError):
    def __init__(self, reward_id: str) -> None:
        super().__init__("reward", f"no reward {reward_id!r} in the catalogue")


__all__ = [
    "IdempotencyConflict",
    "InsufficientPoints",
    "LoyaltyError",
    "ProfileNotFound",
    "UnknownReward",
]
