"""Brute-force guard: bans per source IP and per user, windows, expiry."""

from __future__ import annotations

import pytest

from pbxcore.sip.guard import BruteForceGuard, GuardAction, GuardPolicy, GuardVerdict


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ip_ban_after_n_failures_within_window() -> None:
    clock = Clock()
    guard = BruteForceGuard(GuardPolicy(max_failures=3, window=10, ban_time=60), clock=clock)
    assert not guard.record_failure("10.0.0.1", "a@x")
    clock.now += 1
    assert not guard.record_failure("10.0.0.1", "b@x")
    assert guard.check("10.0.0.1") is GuardVerdict.ALLOW
    assert guard.record_failure("10.0.0.1", "c@x")
    assert guard.check("10.0.0.1") is GuardVerdict.REJECT
    assert guard.check("10.0.0.2", "a@x") is GuardVerdict.ALLOW
    clock.now += 59
    assert guard.check("10.0.0.1") is GuardVerdict.REJECT
    clock.now += 1.5
    assert guard.check("10.0.0.1") is GuardVerdict.ALLOW


def test_failures_outside_window_do_not_add_up() -> None:
    clock = Clock()
    guard = BruteForceGuard(GuardPolicy(max_failures=3, window=10), clock=clock)
    for _ in range(10):
        assert not guard.record_failure("10.0.0.1")
        clock.now += 6
    assert guard.check("10.0.0.1") is GuardVerdict.ALLOW


def test_user_under_attack_refuses_only_the_addresses_that_failed_for_it() -> None:
    clock = Clock()
    policy = GuardPolicy(max_failures=3, window=60, ban_time=30, action=GuardAction.DROP)
    guard = BruteForceGuard(policy, clock=clock)
    for i in range(3):
        guard.record_failure(f"10.0.0.{i}", "alice@x")
    # each guesser failed once: no address ban, but alice is protected from all three
    for i in range(3):
        assert guard.check(f"10.0.0.{i}") is GuardVerdict.ALLOW
        assert guard.check(f"10.0.0.{i}", "alice@x") is GuardVerdict.DROP
        assert guard.check(f"10.0.0.{i}", "bob@x") is GuardVerdict.ALLOW
    # an address that never failed for alice may still log in as alice
    assert guard.check("10.9.9.9", "alice@x") is GuardVerdict.ALLOW
    # while alice is protected, one failure is enough to be refused for her
    guard.record_failure("10.0.0.7", "alice@x")
    assert guard.check("10.0.0.7", "alice@x") is GuardVerdict.DROP
    clock.now += 31
    assert guard.check("10.0.0.1", "alice@x") is GuardVerdict.ALLOW


def test_one_address_guessing_cannot_lock_the_user_out() -> None:
    clock = Clock()
    guard = BruteForceGuard(GuardPolicy(max_failures=10, ban_time=600), clock=clock)
    for _ in range(10):
        guard.record_failure("203.0.113.5", "101@acme")
    assert guard.check("203.0.113.5") is GuardVerdict.REJECT
    for other in ("198.51.100.1", "198.51.100.2", "::1"):
        assert guard.check(other) is GuardVerdict.ALLOW
        assert guard.check(other, "101@acme") is GuardVerdict.ALLOW
    clock.now += 300
    assert guard.check("198.51.100.1", "101@acme") is GuardVerdict.ALLOW


def test_success_clears_the_address_failures_for_the_user() -> None:
    guard = BruteForceGuard(GuardPolicy(max_failures=2), clock=Clock())
    guard.record_failure("1.1.1.1", "alice@x")  # a typo, then the right password
    guard.record_success("1.1.1.1", "alice@x")
    guard.record_failure("3.3.3.3", "alice@x")  # alice is protected now ...
    assert guard.check("3.3.3.3", "alice@x") is GuardVerdict.REJECT
    assert guard.check("1.1.1.1", "alice@x") is GuardVerdict.ALLOW  # ... 1.1.1.1 is clean
    assert guard.check("4.4.4.4", "alice@x") is GuardVerdict.ALLOW


def test_pair_tracking_is_bounded() -> None:
    clock = Clock()
    guard = BruteForceGuard(GuardPolicy(max_failures=2, max_tracked=4), clock=clock)
    for i in range(100):
        guard.record_failure(f"10.1.{i // 250}.{i % 250}", "alice@x")
        assert guard.tracked <= 3 * 4


def test_disabled_guard_and_tracking_bound() -> None:
    off = BruteForceGuard(GuardPolicy(max_failures=0))
    for _ in range(100):
        assert not off.record_failure("1.1.1.1")
    assert off.check("1.1.1.1") is GuardVerdict.ALLOW
    clock = Clock()
    small = BruteForceGuard(GuardPolicy(max_failures=2, max_tracked=2), clock=clock)
    small.record_failure("1.1.1.1")
    small.record_failure("2.2.2.2")
    small.record_failure("3.3.3.3")  # forgets 1.1.1.1
    small.record_failure("1.1.1.1")
    assert small.check("1.1.1.1") is GuardVerdict.ALLOW


@pytest.mark.parametrize(
    "kwargs", [{"max_failures": -1}, {"window": 0}, {"ban_time": -1}, {"max_tracked": 0}]
)
def test_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        GuardPolicy(**kwargs)  # type: ignore[arg-type]
