"""The per-write-key token bucket, on a clock the test moves."""

from __future__ import annotations

from workers.rate_limit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_requests_wait_for_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.retry_after("k") for _ in range(3)] == [None, None, None]
    assert limiter.retry_after("k") == 1  # half a second to the next token: 1 whole second
    clock.now += 0.5
    assert limiter.retry_after("k") is None
    assert limiter.retry_after("k") == 1
    clock.now += 10  # refills up to the burst, not beyond
    assert [limiter.retry_after("k") for _ in range(4)] == [None, None, None, 1]


def test_keys_have_buckets_of_their_own() -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=Clock())
    assert limiter.retry_after("a") is None
    assert limiter.retry_after("a") == 1
    assert limiter.retry_after("b") is None


def test_a_slow_rate_says_how_long_to_wait() -> None:
    limiter = RateLimiter(rate=0.1, burst=1, clock=Clock())
    assert limiter.retry_after("k") is None
    assert limiter.retry_after("k") == 10


def test_rate_zero_is_no_limit() -> None:
    limiter = RateLimiter(rate=0, burst=1, clock=Clock())
    assert all(limiter.retry_after("k") is None for _ in range(1000))
