"""The Call-ID of the SIP message being handled, for log records (a context variable).

The stack sets it while it dispatches a message (:meth:`SipStack.on_message`); a handler's
task, created then, keeps it (asyncio copies the context into a new task), so everything
logged while a call is handled can be correlated by Call-ID. The server's logging filter
reads :func:`current_call_id`; a call's owner (the B2BUA) may name its call with
:func:`set_call_id` in its own tasks, so that the legs of one call log one Call-ID.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

__all__ = ["CALL_ID", "current_call_id", "set_call_id"]

CALL_ID: ContextVar[str | None] = ContextVar("pbxcore_call_id", default=None)


def current_call_id() -> str | None:
    """The Call-ID of the message (or call) being handled in this context, if any."""
    return CALL_ID.get()


def set_call_id(call_id: str | None) -> Token[str | None]:
    """Name the call handled from here on in this context (and the tasks it creates)."""
    return CALL_ID.set(call_id)
