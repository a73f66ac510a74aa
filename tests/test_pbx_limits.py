"""Calls-per-second caps (token buckets) and the node's capacity, on an injected clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxcore.pbx.limits import CallRateGuard, CallRateLimits, TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_extension_over_its_rate_gets_retry_after_and_comes_back() -> None:
    clock = Clock()
    guard = CallRateGuard(
        CallRateLimits(per_extension=1, per_tenant=None, burst_seconds=2), clock=clock
    )
    assert guard.check("A", "201") is None
    assert guard.check("A", "201") is None  # a burst of two
    refused = guard.check("A", "201")
    assert refused is not None and refused.code == "extension_call_rate"
    assert refused.retry_after == 1
    assert ("Retry-After", "1") in refused.headers
    assert guard.check("A", "202") is None  # another phone is not held back
    assert guard.check("B", "201") is None  # nor tenant B's 201
    clock.now += 1.0
    assert guard.check("A", "201") is None
    assert guard.check("A", "201") is not None


def test_a_tenant_cap_holds_across_its_extensions_and_refused_calls_cost_nothing() -> None:
    clock = Clock()
    guard = CallRateGuard(
        CallRateLimits(per_extension=1, per_tenant=2, burst_seconds=1), clock=clock
    )
    assert guard.check("A", "201") is None
    assert guard.check("A", "202") is None
    refused = guard.check("A", "203")
    assert refused is not None and refused.code == "tenant_call_rate"
    # 203 was refused by the tenant's bucket: its own bucket was not charged
    clock.now += 0.5
    assert guard.check("A", "203") is None
    assert guard.check("A", None) is not None  # a trunk's call to the tenant counts too
    assert guard.check("B", None) is None


def test_slow_retry_after_rounds_up() -> None:
    clock = Clock()
    guard = CallRateGuard(
        CallRateLimits(per_extension=0.1, per_tenant=None, burst_seconds=10), clock=clock
    )
    assert guard.check("A", "201") is None
    refused = guard.check("A", "201")
    assert refused is not None and refused.retry_after == 10


def test_node_capacity() -> None:
    guard = CallRateGuard(CallRateLimits(per_extension=None, per_tenant=None, max_calls=3))
    assert guard.check("A", "201", active_calls=2) is None
    refused = guard.check("A", "201", active_calls=3)
    assert refused is not None and refused.code == "node_capacity" and refused.retry_after >= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"per_extension": 0}, "per_extension must be a positive"),
        ({"per_tenant": -1}, "per_tenant must be a positive"),
        ({"per_tenant": math.nan}, "per_tenant must be a positive"),
        ({"burst_seconds": 0}, "burst_seconds must be positive"),
        ({"max_calls": 0}, "max_calls must be at least 1"),
    ],
)
def test_bad_limits_are_refused_with_a_precise_message(
    kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        CallRateLimits(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.5, 50),
    burst=st.floats(0.1, 5),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=300),
)
def test_no_window_lets_through_more_than_rate_times_length_plus_burst(
    rate: float, burst: float, gaps: list[float]
) -> None:
    buckets = TokenBuckets(rate, rate * burst)
    now, taken = 0.0, []
    for gap in gaps:
        now += gap
        if buckets.wait("k", now) == 0.0:
            buckets.take("k", now)
            taken.append(now)
        else:  # refused: the wait it announces is real
            later = now + buckets.wait("k", now)
            assert buckets.wait("k", later + 1e-9) == 0.0
    size = max(1.0, rate * burst)
    for i, start in enumerate(taken):
        for j in range(i, len(taken)):
            assert j - i + 1 <= rate * (taken[j] - start) + size + 1e-6


def test_the_bucket_table_stays_bounded() -> None:
    buckets = TokenBuckets(1.0, 1.0, max_keys=100)
    for i in range(1000):
        buckets.take(i, float(i) * 0.001)  # all still busy: the oldest are forgotten
    assert len(buckets) <= 100
    for i in range(1000, 1100):
        buckets.take(i, 10_000.0)  # the others are full again by now: pruned
    assert len(buckets) <= 100
