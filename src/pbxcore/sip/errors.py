"""The one exception type of the SIP message layer."""

from __future__ import annotations

from collections.abc import Iterable


class SipParseError(ValueError):
    """A SIP message (or one of its parts) is malformed or unacceptable.

    ``status`` is the response a server should send for a bad request (400, 416, 420, 505,
    513...); ``None`` means "drop it silently" (a bad response, or no meaningful answer).
    ``reason`` is a human-readable explanation; ``unsupported`` lists the option tags a 420
    answer must name in its Unsupported header.
    """

    def __init__(
        self,
        reason: str,
        status: int | None = 400,
        *,
        unsupported: Iterable[str] = (),
    ) -> None:
        super().__init__(reason if status is None else f"{status}: {reason}")
        self.reason = reason
        self.status = status
        self.unsupported: tuple[str, ...] = tuple(unsupported)
