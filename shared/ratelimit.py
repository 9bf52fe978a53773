"""Rate limits: how much one producer key, user, client address or socket may do.

Every limit is a rate written like ``2000/second`` or ``1200/minute``: that many at once, and
then that many per period, as a token bucket of that size refilling evenly would allow. It is
computed with the generic cell rate algorithm (GCRA): one number per counted party, the
*theoretical arrival time* (``tat``) of its next request; a request is allowed when ``tat`` is
less than one period ahead of now, and moves ``tat`` one interval (``period / count``) on.

- ``RedisLimiter`` keeps ``tat`` in Redis, shared by every process, updated by one atomic script
  (one round trip, one key, so it runs on a Redis Cluster as well): producer keys, users of the
  HTTP API, handshakes per client address and per user.
- ``LocalLimiter`` keeps it in this process, for what lives in one process only: a socket's
  events, a worker's pushes to one recipient.

When Redis does not answer in time, ``RedisLimiter`` lets the request through (and counts it in
``notihub_rate_limit_failures_total``): limits protect the hub from abuse, and refusing every
honest user while Redis restarts would be a worse outage than the abuse.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
import time

from redis.exceptions import RedisError

from . import metrics, redisconn
from .errors import RateLimited

logger = logging.getLogger(__name__)

_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day)s?\s*$")


@dataclasses.dataclass(frozen=True, slots=True)
class Rate:
    """``count`` per ``period`` seconds, ``count`` at once. ``count == 0`` means unlimited."""

    count: int
    period: float

    @classmethod
    def parse(cls, text: str) -> "Rate":
        """``"100/second"``, ``"1200/minute"``, ``"50/10seconds"``; ``"0"`` or ``"off"`` for none."""
        if text.strip().lower() in ("0", "off", "none"):
            return cls(0, 1)
        match = _RATE.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a rate such as 100/second or 1200/minute")
        count, multiple, unit = match.groups()
        period = int(multiple or 1) * _PERIODS[unit]
        if period == 0:
            raise ValueError(f"{text!r} has a period of zero")
        return cls(int(count), period)

    @property
    def unlimited(self) -> bool:
        return self.count == 0

    @property
    def interval(self) -> float:
        """Seconds one request adds to the bucket's debt."""
        return self.period / self.count

    def __str__(self) -> str:
        return "off" if self.unlimited else f"{self.count}/{self.period:g}s"


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """The answer for one request, with what the ``RateLimit-*`` headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset: float  # seconds until the whole allowance is back
    retry_after: float  # seconds until the next request would be allowed (0 when allowed)

    @property
    def retry_after_seconds(self) -> int:
        """``Retry-After`` in whole seconds, never 0 for a refusal."""
        return max(1, math.ceil(self.retry_after)) if not self.allowed else 0

    def refusal(self, what: str) -> RateLimited:
        """The error that tells a refused caller when to come back."""
        return RateLimited(f"too many {what}; try again in {self.retry_after_seconds} s",
                           retry_after=self.retry_after_seconds)

    def headers(self) -> dict[str, str]:
        """``RateLimit-Limit`` / ``-Remaining`` / ``-Reset``, and ``Retry-After`` when refused."""
        headers = {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                   "RateLimit-Reset": str(math.ceil(self.reset))}
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_seconds)
        return headers


UNLIMITED = Verdict(allowed=True, limit=0, remaining=0, reset=0.0, retry_after=0.0)


def _decide(rate: Rate, tat: float, now: float) -> tuple[Verdict, float]:
    """The GCRA step: the verdict and the new ``tat`` (unchanged when refused)."""
    tat = max(tat, now)
    new_tat = tat + rate.interval
    allow_at = new_tat - rate.period
    if now < allow_at:
        return Verdict(False, rate.count, 0, tat - now, allow_at - now), tat
    remaining = int((rate.period - (new_tat - now)) / rate.interval + 1e-9)
    return Verdict(True, rate.count, remaining, new_tat - now, 0.0), new_tat


class LocalLimiter:
    """GCRA in this process's memory, one ``tat`` per key; keys are forgotten with ``forget``."""

    def __init__(self, rate: Rate, *, clock=time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tat: dict[object, float] = {}

    def hit(self, key: object, *, at: float | None = None) -> Verdict:
        """Count one request of ``key`` (at time ``at``, by default now)."""
        if self.rate.unlimited:
            return UNLIMITED
        now = self._clock() if at is None else at
        verdict, self._tat[key] = _decide(self.rate, self._tat.get(key, now), now)
        return verdict

    def forget(self, key: object) -> None:
        self._tat.pop(key, None)

    def prune(self) -> None:
        """Forget every key whose allowance is whole again (the same as never seen)."""
        now = self._clock()
        self._tat = {key: tat for key, tat in self._tat.items() if tat > now}


# KEYS[1]: the party's key. ARGV: interval and period, in microseconds. The clock is Redis's own,
# the same for every process. Returns allowed (0/1), remaining, reset and retry-after (µs).
_SCRIPT = """
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((period - (new_tat - now)) / interval), new_tat - now, 0}
"""


class RedisLimiter:
    """GCRA with ``tat`` in Redis, shared by every process: ``hit(key)`` costs one round trip."""

    def __init__(self, *, redis: redisconn.Client, prefix: str, name: str, rate: Rate, timeout: float) -> None:
        self.rate = rate
        self.name = name
        self._redis = redis
        self._prefix = f"{prefix}:rl:{name}:"
        self._timeout = timeout
        self._script = redis.register_script(_SCRIPT)

    async def hit(self, key: str) -> Verdict:
        """Count one request of ``key``; allowed without counting when Redis does not answer."""
        if self.rate.unlimited:
            return UNLIMITED
        try:
            async with asyncio.timeout(self._timeout):
                allowed, remaining, reset, retry = await self._script(
                    keys=[self._prefix + key],
                    args=[round(self.rate.interval * 1e6), round(self.rate.period * 1e6)])
        except (RedisError, OSError, TimeoutError) as exc:
            metrics.RATE_LIMIT_FAILURES.labels(self.name).inc()
            logger.warning("rate limit %s not checked, Redis did not answer: %s", self.name, exc)
            return UNLIMITED
        verdict = Verdict(bool(allowed), self.rate.count, int(remaining), reset / 1e6, retry / 1e6)
        if not verdict.allowed:
            metrics.RATE_LIMITED.labels(self.name).inc()
        return verdict
