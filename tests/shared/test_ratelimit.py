"""Rate limits: the GCRA arithmetic on a clock the test moves, and the Redis limiter against the
session's real Redis (shared by two processes' limiters, and let through when Redis stalls)."""
import asyncio
import uuid

import pytest

from shared import metrics
from shared.ratelimit import LocalLimiter, Rate, RedisLimiter
from shared.settings import Settings, SettingsError


@pytest.mark.parametrize("text, count, period", [
    ("100/second", 100, 1), ("1200/minute", 1200, 60), ("50/10seconds", 50, 10), ("5 / 2 minutes", 5, 120),
    ("1/hour", 1, 3600), ("7/day", 7, 86400),
])
def test_rates_are_read_as_written(text, count, period):
    assert Rate.parse(text) == Rate(count, period)


@pytest.mark.parametrize("text", ["off", "0", "none"])
def test_a_rate_can_be_switched_off(text):
    rate = Rate.parse(text)
    assert rate.unlimited and LocalLimiter(rate).hit("k").allowed


@pytest.mark.parametrize("text", ["", "100", "ten/second", "100/fortnight", "100/0seconds", "-1/second"])
def test_a_bad_rate_is_refused_with_its_name(text):
    with pytest.raises(ValueError):
        Rate.parse(text)
    if text:
        with pytest.raises(SettingsError, match="NOTIHUB_PRODUCER_RATE_LIMIT"):
            Settings.from_env({"NOTIHUB_PRODUCER_RATE_LIMIT": text})


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_whole_allowance_at_once_then_one_per_interval():
    clock = Clock()
    limiter = LocalLimiter(Rate(5, 10), clock=clock)  # 5 at once, then one every 2 s
    verdicts = [limiter.hit("a") for _ in range(5)]
    assert all(v.allowed for v in verdicts)
    assert [v.remaining for v in verdicts] == [4, 3, 2, 1, 0]
    refused = limiter.hit("a")
    assert not refused.allowed and refused.retry_after == pytest.approx(2.0)
    assert refused.headers()["Retry-After"] == "2" and refused.headers()["RateLimit-Remaining"] == "0"
    assert refused.headers()["RateLimit-Reset"] == "10"
    # Another key has its own allowance.
    assert limiter.hit("b").allowed
    clock.now += 1.9
    assert not limiter.hit("a").allowed  # a refusal costs nothing, and it is not yet time
    clock.now += 0.1
    assert limiter.hit("a").allowed and not limiter.hit("a").allowed
    # After a whole period of quiet the whole allowance is back, and the key can be forgotten.
    clock.now += 10
    limiter.prune()
    assert "a" not in limiter._tat
    assert [limiter.hit("a").allowed for _ in range(6)] == [True] * 5 + [False]


def test_a_limiter_can_count_by_the_events_own_time():
    limiter = LocalLimiter(Rate(2, 60), clock=lambda: 0.0)
    assert [limiter.hit("k", at=t).allowed for t in (100.0, 100.1, 100.2, 130.2, 130.3)] == [
        True, True, False, True, False]


@pytest.fixture
def limiter_of(runtime):
    prefix = f"rl-test-{uuid.uuid4().hex[:8]}"

    def make(rate, timeout=2.0):
        return RedisLimiter(redis=runtime.redis, prefix=prefix, name="test", rate=rate, timeout=timeout)

    return make


async def test_the_redis_limiter_is_shared_by_every_process(limiter_of):
    one, other = limiter_of(Rate(10, 60)), limiter_of(Rate(10, 60))  # as in two API processes
    verdicts = await asyncio.gather(*(limiter.hit("producer-a") for limiter in [one, other] * 6))
    assert sorted(v.allowed for v in verdicts) == [False] * 2 + [True] * 10
    refused = next(v for v in verdicts if not v.allowed)
    assert refused.remaining == 0 and 0 < refused.retry_after <= 6.0
    assert refused.headers()["Retry-After"] in {"1", "2", "3", "4", "5", "6"}
    # Another party has its own allowance.
    fresh = await one.hit("producer-b")
    assert fresh.allowed and fresh.remaining == 9 and fresh.headers()["RateLimit-Limit"] == "10"


async def test_the_redis_limiter_forgets_a_party_once_its_allowance_is_back(limiter_of, runtime):
    limiter = limiter_of(Rate(10, 1))
    await limiter.hit("k")
    ttl = await runtime.redis.pttl(limiter._prefix + "k")
    assert 0 < ttl <= 100  # one interval (100 ms): the key does not outlive its use


async def test_a_stalled_redis_lets_requests_through_within_the_deadline(limiter_of, runtime):
    # CLIENT PAUSE WRITE holds every script that may write, as a Redis that stopped answering.
    limiter = limiter_of(Rate(1, 60), timeout=0.3)
    assert (await limiter.hit("k")).allowed
    assert not (await limiter.hit("k")).allowed
    before = metrics.RATE_LIMIT_FAILURES.labels("test")._value.get()
    await runtime.redis.execute_command("CLIENT", "PAUSE", 3000, "WRITE")
    try:
        started = asyncio.get_running_loop().time()
        verdict = await limiter.hit("k")
        assert verdict.allowed and verdict.limit == 0  # unchecked: no RateLimit-* headers then
        assert asyncio.get_running_loop().time() - started < 1.5
        assert metrics.RATE_LIMIT_FAILURES.labels("test")._value.get() == before + 1
    finally:
        await runtime.redis.execute_command("CLIENT", "UNPAUSE")
    assert not (await limiter.hit("k")).allowed  # counting again once Redis answers
