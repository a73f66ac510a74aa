"""An SMTP server (aiosmtpd) on loopback that keeps what it receives."""

from __future__ import annotations

import threading
from email import message_from_bytes, policy
from typing import Any


class Inbox:
    """aiosmtpd handler: ``messages`` is a list of (recipients, parsed message)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (
                envelope.rcpt_tos,
                message_from_bytes(envelope.original_content, policy=policy.default),
            )
        )
        self.arrived.set()
        return "250 OK"
