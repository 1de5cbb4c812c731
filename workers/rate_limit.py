"""Per-write-key request rate limits: a token bucket per key, in this API process.

Why per process and in memory: the limit protects this process (and the database behind
it) from one source flooding it; it needs no shared state, so a check costs a dict lookup.
With several ``ecrm serve`` processes behind a balancer each enforces the limit on its own,
so a key may send up to that many times the rate in total (documented with the setting).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """``rate`` requests a second per key, ``burst`` at once; ``rate`` 0 turns it off."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self._clock = rate, max(burst, 1), clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> int | None:
        """Take one request from ``key``'s bucket: ``None`` if allowed, else the whole
        seconds to wait before one is (for ``Retry-After``)."""
        if self.rate <= 0:
            return None
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return None
            return max(1, math.ceil((1 - bucket.tokens) / self.rate))


__all__ = ["RateLimiter"]
