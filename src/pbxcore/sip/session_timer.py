"""Session timers (RFC 4028): the header rules, for a user agent on either side of a dialog.

A session with a timer is refreshed by one party, the *refresher*, with a re-INVITE or an
UPDATE before half the interval has passed; the other party ends the session (BYE) when no
refresh came within the interval less ``min(32, interval / 3)`` seconds (§10). Here:

- :func:`answer_invite`: what a UAS does with an INVITE's ``Session-Expires`` / ``Min-SE``
  / ``Supported: timer`` (§9): a :class:`TooSmall` (422 with our Min-SE), or the
  :class:`SessionTimer` to run and the headers for the 2xx, or None (no timer at all);
- :meth:`SessionTimerPolicy.request_headers`: what a UAC puts in an INVITE (§7.1);
- :func:`from_answer`: the timer a UAC runs after the 2xx to its INVITE (§7.2);
- :meth:`SessionTimer.refresh_headers`: the headers of a refresh request and its 2xx.

Header parsing errors raise :class:`ValueError` with a precise message; the caller answers
400 to a request whose headers are malformed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pbxcore.sip.message import Request, Response

__all__ = [
    "SessionTimer",
    "SessionTimerPolicy",
    "TooSmall",
    "answer_invite",
    "expiry_after",
    "from_answer",
    "parse_min_se",
    "parse_session_expires",
]

Refresher = Literal["uac", "uas"]  # a role in the transaction that names it
ABSOLUTE_MIN_SE = 90  # §4: the Min-SE no one may go below
_MAX_INTERVAL = 2**31 - 1


def _delta_seconds(text: str, header: str) -> int:
    value = text.strip()
    if not value.isdigit() or len(value) > 10:
        raise ValueError(f"{header}: expected delta-seconds, got {text.strip()[:40]!r}")
    number = int(value)
    if number > _MAX_INTERVAL:
        raise ValueError(f"{header}: {number} is above 2**31-1")
    return number


def parse_session_expires(value: str) -> tuple[int, Refresher | None]:
    """``Session-Expires: 1800;refresher=uac`` -> (1800, "uac"). Other parameters are
    ignored (§4); a refresher other than uac/uas, or a missing number, is a ValueError."""
    number, *params = value.split(";")
    seconds = _delta_seconds(number, "Session-Expires")
    refresher: Refresher | None = None
    for param in params:
        name, _, arg = param.partition("=")
        if name.strip().lower() == "refresher":
            role = arg.strip().lower()
            if role not in ("uac", "uas"):
                raise ValueError(f"Session-Expires: refresher must be uac or uas, got {arg!r}")
            refresher = role  # type: ignore[assignment]
    return seconds, refresher


def parse_min_se(value: str) -> int:
    """``Min-SE: 90`` -> 90 (parameters ignored)."""
    return _delta_seconds(value.split(";", 1)[0], "Min-SE")


def expiry_after(interval: int) -> float:
    """Seconds after the last refresh at which the non-refresher gives up (§10)."""
    return interval - min(32.0, interval / 3)


@dataclass(frozen=True, slots=True)
class SessionTimerPolicy:
    """Our side's settings: the interval we ask for and the smallest we accept."""

    interval: int = 1800
    min_se: int = ABSOLUTE_MIN_SE

    def __post_init__(self) -> None:
        if self.min_se < ABSOLUTE_MIN_SE:
            raise ValueError(f"min_se must be at least {ABSOLUTE_MIN_SE} s, got {self.min_se}")
        if not self.min_se <= self.interval <= _MAX_INTERVAL:
            raise ValueError(
                f"interval must be between min_se ({self.min_se}) and 2**31-1, got {self.interval}"
            )

    def request_headers(self) -> list[tuple[str, str]]:
        """For an initial INVITE we send (§7.1): we support timers, our interval, our
        minimum; the refresher is left to the UAS."""
        return [
            ("Supported", "timer"),
            ("Session-Expires", str(self.interval)),
            ("Min-SE", str(self.min_se)),
        ]


@dataclass(frozen=True, slots=True)
class TooSmall:
    """Answer 422 Session Interval Too Small with this Min-SE."""

    min_se: int

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [("Min-SE", str(self.min_se))]


@dataclass(frozen=True, slots=True)
class SessionTimer:
    """A running session timer of one dialog, from our side: ``we_refresh`` or the peer
    does; ``peer_supports``: the peer said ``Supported: timer`` (our 2xx then carries
    ``Require: timer``). The refresher parameter names a role in the transaction that
    carries it (§4), so the headers are built per direction."""

    interval: int
    we_refresh: bool
    peer_supports: bool = True
    min_se: int = ABSOLUTE_MIN_SE

    @property
    def next_action(self) -> float:
        """Seconds after a refresh: when we refresh, or when we give up waiting for one."""
        return self.interval / 2 if self.we_refresh else expiry_after(self.interval)

    def response_headers(self) -> list[tuple[str, str]]:
        """For our 2xx to an INVITE, re-INVITE or UPDATE the peer sent (we are its UAS)."""
        refresher = "uas" if self.we_refresh else "uac"
        items = [("Session-Expires", f"{self.interval};refresher={refresher}")]
        if self.peer_supports:
            items.append(("Require", "timer"))
        return items

    def refresh_headers(self) -> list[tuple[str, str]]:
        """For a re-INVITE or UPDATE we send in the dialog (a refresh or a media change;
        we are its UAC): the same interval and refresher, so the timer stays on (§7.4)."""
        refresher = "uac" if self.we_refresh else "uas"
        return [
            ("Supported", "timer"),
            ("Session-Expires", f"{self.interval};refresher={refresher}"),
            ("Min-SE", str(self.min_se)),
        ]


def answer_invite(request: Request, policy: SessionTimerPolicy) -> SessionTimer | TooSmall | None:
    """The UAS rules of §9 for an INVITE (initial or re-INVITE) or UPDATE we answer.

    - The request says ``Supported: timer`` and asks for less than our Min-SE: 422.
    - It asks for an interval: we take it, lowered to ours but never below its Min-SE,
      raised to our Min-SE when the peer cannot be told (no ``Supported: timer``).
    - It asks for nothing: a peer that supports timers gets ours (it refreshes); one that
      does not gets ours with us as refresher (§9: the UAS may start a timer itself).
    - The refresher is the one it asked for, else the peer when it supports timers.
    Raises ValueError for a malformed Session-Expires or Min-SE.
    """
    headers = request.headers
    supports = "timer" in request.supported
    asked = headers.get("session-expires")
    min_text = headers.get("min-se")
    their_min = parse_min_se(min_text) if min_text is not None else ABSOLUTE_MIN_SE
    floor = max(their_min, policy.min_se)
    if asked is None:
        interval = max(policy.interval, floor)
        return SessionTimer(interval, we_refresh=not supports, peer_supports=supports, min_se=floor)
    seconds, refresher = parse_session_expires(asked)
    if seconds < policy.min_se:
        if supports:
            return TooSmall(policy.min_se)
        seconds = policy.min_se  # RFC 4028 errata 1687: raise it, a 422 would end the call
    interval = max(min(seconds, policy.interval), their_min)
    if not supports:
        refresher = "uas"  # the peer cannot refresh a timer it does not know
    elif refresher is None:
        refresher = "uac"
    return SessionTimer(
        interval, we_refresh=refresher == "uas", peer_supports=supports, min_se=floor
    )


def from_answer(response: Response, policy: SessionTimerPolicy) -> SessionTimer | None:
    """The timer we run after the 2xx to an INVITE, re-INVITE or UPDATE we sent (§7.2):
    the interval and refresher it names (no refresher named: we refresh). None when the
    2xx has no Session-Expires: the peer does not do timers (or turned them off).
    Raises ValueError for a malformed Session-Expires."""
    value = response.headers.get("session-expires")
    if value is None:
        return None
    seconds, refresher = parse_session_expires(value)
    interval = max(seconds, ABSOLUTE_MIN_SE)
    return SessionTimer(
        interval,
        we_refresh=(refresher or "uac") == "uac",
        peer_supports="timer" in response.require or "timer" in response.supported,
        min_se=policy.min_se,
    )
