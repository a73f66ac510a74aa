"""Calls-per-second caps and the node's call capacity, checked before a call starts.

A caller that starts calls faster than its cap gets ``503 Service Unavailable`` with a
``Retry-After`` (RFC 3261 §21.5.4): the seconds until its bucket holds a call again. The
caps are token buckets keyed by extension (``tenant id``, ``number``) and by tenant: each
refills at ``per_extension`` / ``per_tenant`` calls a second and holds ``burst_seconds``
worth of calls (at least one), so a phone may place a few calls in a row but not a flood.
A call is counted against both buckets or neither. ``max_calls`` is the node's capacity:
beyond it every new call gets 503 until calls end.

The clock is injected (monotonic seconds) so the rules can be tested without waiting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["CallRateGuard", "CallRateLimits", "Overload", "TokenBuckets"]


@dataclass(frozen=True, slots=True)
class CallRateLimits:
    """The caps (None: no cap). Rates are new calls a second."""

    per_extension: float | None = 5.0
    per_tenant: float | None = 50.0
    burst_seconds: float = 2.0
    max_calls: int | None = None

    def __post_init__(self) -> None:
        for name in ("per_extension", "per_tenant"):
            rate = getattr(self, name)
            if rate is not None and not (math.isfinite(rate) and rate > 0):
                raise ValueError(f"{name} must be a positive number of calls a second, got {rate}")
        if not (math.isfinite(self.burst_seconds) and self.burst_seconds > 0):
            raise ValueError(f"burst_seconds must be positive, got {self.burst_seconds}")
        if self.max_calls is not None and self.max_calls < 1:
            raise ValueError(f"max_calls must be at least 1, got {self.max_calls}")


class TokenBuckets:
    """One token bucket per key, all with the same rate and size. Full buckets are
    forgotten when the table grows past ``max_keys`` (a full bucket equals a new one)."""

    def __init__(self, rate: float, size: float, *, max_keys: int = 50_000) -> None:
        self.rate = rate
        self.size = max(1.0, size)
        self.max_keys = max_keys
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def wait(self, key: Hashable, now: float) -> float:
        """Seconds until ``key`` may take a token (0.0: now)."""
        tokens = self._tokens(key, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, key: Hashable, now: float) -> None:
        """Take a token (the caller checked :meth:`wait` first)."""
        tokens = self._tokens(key, now)
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._prune(now)
        self._buckets[key] = (max(0.0, tokens - 1.0), now)

    def _tokens(self, key: Hashable, now: float) -> float:
        found = self._buckets.get(key)
        if found is None:
            return self.size
        tokens, at = found
        return min(self.size, tokens + max(0.0, now - at) * self.rate)

    def _prune(self, now: float) -> None:
        full = [
            k
            for k, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate >= self.size
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:  # all busy: forget the oldest half
            oldest = sorted(self._buckets, key=lambda k: self._buckets[k][1])
            for key in oldest[: len(oldest) // 2]:
                del self._buckets[key]


@dataclass(frozen=True, slots=True)
class Overload:
    """Why a call may not start now: ``retry_after`` whole seconds, a machine ``code``
    and a human ``reason`` (for the Reason header and the log)."""

    retry_after: int
    code: str
    reason: str

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [
            ("Retry-After", str(self.retry_after)),
            ("Reason", f'SIP;cause=503;text="{self.code}"'),
        ]


class CallRateGuard:
    """The caps of :class:`CallRateLimits` over live buckets."""

    def __init__(
        self, limits: CallRateLimits, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self._clock = clock
        burst = limits.burst_seconds
        self._ext = (
            None
            if limits.per_extension is None
            else TokenBuckets(limits.per_extension, limits.per_extension * burst)
        )
        self._tenant = (
            None
            if limits.per_tenant is None
            else TokenBuckets(limits.per_tenant, limits.per_tenant * burst)
        )

    def check(
        self, tenant_id: str, extension: str | None = None, *, active_calls: int = 0
    ) -> Overload | None:
        """None, and the call is counted, when ``extension`` of ``tenant_id`` (None: a call
        from a trunk) may start a call now, with ``active_calls`` on the node; else why not."""
        limits = self.limits
        if limits.max_calls is not None and active_calls >= limits.max_calls:
            return Overload(
                5, "node_capacity", f"the node carries {active_calls} calls, its maximum"
            )
        now = self._clock()
        ext_key = (tenant_id, extension)
        if self._ext is not None and extension is not None:
            wait = self._ext.wait(ext_key, now)
            if wait > 0:
                return Overload(
                    _seconds(wait),
                    "extension_call_rate",
                    f"extension {extension} starts more than {limits.per_extension:g} calls/s",
                )
        if self._tenant is not None:
            wait = self._tenant.wait(tenant_id, now)
            if wait > 0:
                return Overload(
                    _seconds(wait),
                    "tenant_call_rate",
                    f"tenant starts more than {limits.per_tenant:g} calls/s",
                )
            self._tenant.take(tenant_id, now)
        if self._ext is not None and extension is not None:
            self._ext.take(ext_key, now)
        return None


def _seconds(wait: float) -> int:
    return max(1, math.ceil(wait))
