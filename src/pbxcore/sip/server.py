"""A SIP registrar node: a :class:`~pbxcore.sip.stack.SipStack` with the registrar as its
REGISTER handler (and the REGISTER fast path when bindings are held in memory).

:class:`SipServer` is what ``pbxcore serve`` ran before the stack had handlers of its
own; the B2BUA and the other call handlers are registered on the same stack with
:meth:`~pbxcore.sip.stack.SipStack.set_handler`.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from pbxcore.sip.fastpath import RegisterFastPath
from pbxcore.sip.location import ImmediateLocationService
from pbxcore.sip.registrar import Registrar
from pbxcore.sip.stack import SipStack, client_key, server_key, stamp_via
from pbxcore.sip.transaction import TimerSettings
from pbxcore.sip.transport import ListenAddress, RateLimit, TransportLimits

__all__ = ["SipServer", "client_key", "server_key", "stamp_via"]


class SipServer(SipStack):
    """A :class:`SipStack` serving REGISTER through ``registrar`` (None: no registrar),
    with the REGISTER fast path when ``fast_path`` and the registrar's location service
    has immediate operations.

    Use as ``async with SipServer(registrar, listen=[...]) as server:``.
    """

    def __init__(
        self,
        registrar: Registrar | None,
        *,
        listen: Sequence[ListenAddress],
        timers: TimerSettings | None = None,
        rate_limit: RateLimit | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_header: str | None = "pbxcore",
        limits: TransportLimits | None = None,
        fast_path: bool = True,
    ) -> None:
        super().__init__(
            listen=listen,
            timers=timers,
            rate_limit=rate_limit,
            ssl_context=ssl_context,
            server_header=server_header,
            limits=limits,
        )
        self.registrar = registrar
        if registrar is not None:
            registrar.attach(self)
            if fast_path and isinstance(registrar.location, ImmediateLocationService):
                self.add_fast_path(RegisterFastPath(self, registrar))
