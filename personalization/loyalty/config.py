"""The loyalty programme's rules: when points expire, the tiers, the reward catalogue.

The file is YAML (``ECRM_LOYALTY_CONFIG``); every key is optional::

    expiry_months: 12          # points expire N calendar months after earning; null: never
    tier_measure: points       # points earned, or spend (order totals), over the window
    tier_window_days: 365      # the rolling window the measure is taken over
    tiers:                     # ascending thresholds; below the first: no tier (null)
      - {name: silver, threshold: 500}
      - {name: gold, threshold: 2000}
    rewards:
      - {id: coffee, name: Free coffee, points: 150}
      - {id: voucher-10, name: 10 EUR voucher, points: 1000}

A mistake stops the process with one line naming the key (``tiers.1.threshold: …``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import HubError


class Tier(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")
    #: points earned (or spend) in the window needed to hold the tier
    threshold: float = Field(gt=0)


class Reward(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    name: str = Field(min_length=1, max_length=200)
    points: int = Field(gt=0)


class _File(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    expiry_months: int | None = Field(default=12, ge=1, le=600)
    tier_measure: Literal["points", "spend"] = "points"
    tier_window_days: int = Field(default=365, ge=1, le=3660)
    tiers: tuple[Tier, ...] = (
        Tier(name="silver", threshold=500),
        Tier(name="gold", threshold=2000),
    )
    rewards: tuple[Reward, ...] = ()

    @field_validator("tiers")
    @classmethod
    def _ascending(cls, tiers: tuple[Tier, ...]) -> tuple[Tier, ...]:
        names = [tier.name for tier in tiers]
        if len(set(names)) != len(names):
            raise ValueError("tier names must be unique")
        thresholds = [tier.threshold for tier in tiers]
        if thresholds != sorted(set(thresholds)):
            raise ValueError("thresholds must increase strictly from one tier to the next")
        return tiers

    @field_validator("rewards")
    @classmethod
    def _unique_rewards(cls, rewards: tuple[Reward, ...]) -> tuple[Reward, ...]:
        ids = [reward.id for reward in rewards]
        if len(set(ids)) != len(ids):
            raise ValueError("reward ids must be unique")
        return rewards


class LoyaltyConfigError(HubError):
    """The loyalty file is unreadable or wrong (one line, naming the key)."""


@dataclass(frozen=True)
class LoyaltyConfig:
    """The programme (see the module docstring); the default has two tiers, no rewards."""

    expiry_months: int | None = 12
    tier_measure: str = "points"
    tier_window_days: int = 365
    tiers: tuple[Tier, ...] = _File().tiers
    rewards: tuple[Reward, ...] = ()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "loyalty config") -> LoyaltyConfig:
        try:
            parsed = _File.model_validate(dict(data))
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(part) for part in first["loc"]) or "file"
            raise LoyaltyConfigError(f"{where}: {key}: {first['msg']}") from None
        return cls(
            expiry_months=parsed.expiry_months,
            tier_measure=parsed.tier_measure,
            tier_window_days=parsed.tier_window_days,
            tiers=parsed.tiers,
            rewards=parsed.rewards,
        )

    @classmethod
    def load(cls, path: Path | None) -> LoyaltyConfig:
        """The programme in ``path`` (YAML), or the default when ``None``."""
        return _load(str(path)) if path is not None else cls()

    def reward(self, reward_id: str) -> Reward | None:
        return next((reward for reward in self.rewards if reward.id == reward_id), None)

    def tier_rank(self, name: str | None) -> int:
        """0 for no tier, 1 for the first tier …; -1 for a name not in the programme."""
        if name is None:
            return 0
        names = [tier.name for tier in self.tiers]
        return names.index(name) + 1 if name in names else -1


@lru_cache(maxsize=8)
def _load(path: str) -> LoyaltyConfig:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0]
        raise LoyaltyConfigError(f"loyalty config {path}: {reason}") from None
    if not isinstance(data, dict):
        raise LoyaltyConfigError(f"loyalty config {path}: the file must hold a mapping")
    return LoyaltyConfig.from_mapping(data, where=f"loyalty config {path}")


__all__ = ["LoyaltyConfig", "LoyaltyConfigError", "Reward", "Tier"]
