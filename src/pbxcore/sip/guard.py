"""Brute-force guard: ban guessing source addresses, shield the users they guess at.

After ``max_failures`` failed authentications within ``window`` seconds from one source
IP, every attempt from that IP is answered 403 or silently dropped until ``ban_time``
has passed. After ``max_failures`` failures against one user (from anywhere) the user is
*protected* for ``ban_time``: attempts for that user from an address that has failed for
it (within ``ban_time``) are refused, so a guesser spread over many addresses gets one try
per address. An address that has not failed for the user is never refused for it: the
user's own phones keep registering while someone guesses (a per-user ban would let any
guesser lock a user out).
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BruteForceGuard", "GuardAction", "GuardPolicy", "GuardVerdict"]


class GuardAction(enum.Enum):
    """What happens to a banned attempt."""

    REJECT = "reject"  # answer 403 Forbidden
    DROP = "drop"  # send nothing


class GuardVerdict(enum.Enum):
    """The guard's decision for one attempt."""

    ALLOW = "allow"
    REJECT = "reject"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """Brute-force guard settings; ``max_failures=0`` disables the guard."""

    max_failures: int = 10
    window: float = 60.0
    ban_time: float = 600.0
    action: GuardAction = GuardAction.REJECT
    max_tracked: int = 100_000  # bound on remembered IPs/users/pairs (oldest forgotten first)

    def __post_init__(self) -> None:
        if self.max_failures < 0:
            raise ValueError(f"max_failures must be >= 0, got {self.max_failures}")
        if self.window <= 0 or self.ban_time <= 0:
            raise ValueError("window and ban_time must be positive")
        if self.max_tracked < 1:
            raise ValueError("max_tracked must be >= 1")


class _Tracker:
    """Failure times and ban expiry per key (an IP or a user)."""

    __slots__ = ("_banned", "_failures", "_policy")

    def __init__(self, policy: GuardPolicy) -> None:
        self._policy = policy
        self._failures: dict[str, deque[float]] = {}
        self._banned: dict[str, float] = {}

    def banned(self, key: str, now: float) -> bool:
        until = self._banned.get(key)
        if until is None:
            return False
        if now < until:
            return True
        del self._banned[key]
        return False

    def fail(self, key: str, now: float) -> bool:
        """Record a failure; True if the key is now banned."""
        policy = self._policy
        times = self._failures.get(key)
        if times is None:
            if len(self._failures) >= policy.max_tracked:
                del self._failures[next(iter(self._failures))]
            times = self._failures[key] = deque()
        horizon = now - policy.window
        while times and times[0] <= horizon:
            times.popleft()
        times.append(now)
        if len(times) < policy.max_failures:
            return False
        del self._failures[key]
        if len(self._banned) >= policy.max_tracked:
            del self._banned[next(iter(self._banned))]
        self._banned[key] = now + policy.ban_time
        return True

    @property
    def size(self) -> int:
        return len(self._failures) + len(self._banned)


class BruteForceGuard:
    """Bans source IPs that fail too often; protects users that fail too often from the
    addresses that failed for them (see the module documentation)."""

    def __init__(
        self, policy: GuardPolicy | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy if policy is not None else GuardPolicy()
        self._clock = clock
        self._ips = _Tracker(self.policy)
        self._users = _Tracker(self.policy)  # "banned" here means protected
        # (user, source IP) -> time of the last failure, oldest first
        self._pairs: dict[tuple[str, str], float] = {}

    @property
    def enabled(self) -> bool:
        return self.policy.max_failures > 0

    @property
    def tracked(self) -> int:
        """How many addresses, users and address-user pairs the guard remembers."""
        return self._ips.size + self._users.size + len(self._pairs)

    def check(self, source_ip: str, user: str | None = None) -> GuardVerdict:
        """Whether an attempt from ``source_ip`` (for ``user``, if known) may proceed."""
        if not self.enabled:
            return GuardVerdict.ALLOW
        now = self._clock()
        if self._ips.banned(source_ip, now) or (
            user is not None
            and self._users.banned(user, now)
            and self._failed(user, source_ip, now)
        ):
            return (
                GuardVerdict.DROP if self.policy.action is GuardAction.DROP else GuardVerdict.REJECT
            )
        return GuardVerdict.ALLOW

    def _failed(self, user: str, source_ip: str, now: float) -> bool:
        last = self._pairs.get((user, source_ip))
        if last is None:
            return False
        if now - last < self.policy.ban_time:
            return True
        del self._pairs[(user, source_ip)]
        return False

    def record_failure(self, source_ip: str, user: str | None = None) -> bool:
        """Count a failed attempt; True if it banned the IP or put the user under protection."""
        if not self.enabled:
            return False
        now = self._clock()
        banned = self._ips.fail(source_ip, now)
        if user is not None:
            banned = self._users.fail(user, now) or banned
            pairs = self._pairs
            key = (user, source_ip)
            if pairs.pop(key, None) is None and len(pairs) >= self.policy.max_tracked:
                del pairs[next(iter(pairs))]
            pairs[key] = now
        return banned

    def record_success(self, source_ip: str, user: str | None = None) -> None:
        """A correct login from ``source_ip`` clears its failures for ``user``: it knows the
        password. The user's own count stays (a guesser elsewhere may still be at work)."""
        if user is not None:
            self._pairs.pop((user, source_ip), None)
