"""A tiny stateless SIP proxy for interop tests that puts a MediaEngine in the media path.

Requests from the caller go to one fixed callee address (their Request-URI is retargeted
there) with our Via on top; responses go back along the Via chain. The SDP of an INVITE
(the offer) and of its 2xx (the answer) is rewritten by :class:`MediaEngine`, so both UAs
send their RTP to relay legs. It is only as much SIP as SIPp and baresip need on loopback:
UDP, no Record-Route (in-dialog requests may bypass it, which is fine for media), no auth.
"""

from __future__ import annotations

import asyncio
import hashlib
import re

from pbxcore.media.engine import MediaCall, MediaEngine

_COMPACT = {"v": "via", "i": "call-id", "l": "content-length", "c": "content-type"}


class SipMessage:
    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        self.start = lines[0]
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and self.headers:  # folded header line
                name, value = self.headers[-1]
                self.headers[-1] = (name, value + " " + line.strip())
                continue
            name, _, value = line.partition(":")
            name, value = name.strip(), value.strip()
            if _COMPACT.get(name.lower(), name.lower()) == "via":
                # one Via per header line, so that the top one can be popped
                for part in re.split(r",\s*(?=SIP/)", value):
                    self.headers.append((name, part.strip()))
                continue
            self.headers.append((name, value))

    @property
    def is_request(self) -> bool:
        return not self.start.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        return self.start.split(" ", 1)[0] if self.is_request else self.cseq_method

    @property
    def status(self) -> int:
        return 0 if self.is_request else int(self.start.split(" ", 2)[1])

    def get(self, name: str) -> str | None:
        for n, v in self.headers:
            if _COMPACT.get(n.lower(), n.lower()) == name:
                return v
        return None

    @property
    def cseq_method(self) -> str:
        return (self.get("cseq") or "0 ?").split()[1]

    def vias(self) -> list[int]:
        return [
            i
            for i, (n, _) in enumerate(self.headers)
            if _COMPACT.get(n.lower(), n.lower()) == "via"
        ]

    def set_body(self, body: bytes) -> None:
        self.body = body
        self.headers = [
            (n, v)
            for n, v in self.headers
            if _COMPACT.get(n.lower(), n.lower()) != "content-length"
        ]
        self.headers.append(("Content-Length", str(len(body))))

    def __bytes__(self) -> bytes:
        head = "\r\n".join([self.start, *(f"{n}: {v}" for n, v in self.headers)])
        return head.encode() + b"\r\n\r\n" + self.body


def _via_dest(via: str) -> tuple[str, int]:
    # "SIP/2.0/UDP host:port;branch=...;rport=1234;received=1.2.3.4"
    sent_by = via.split(None, 1)[1].split(";", 1)[0].strip()
    host, _, port = sent_by.rpartition(":") if not sent_by.endswith("]") else (sent_by, "", "")
    params = dict(p.partition("=")[::2] for p in via.split(";")[1:])
    host = params.get("received", host).strip("[]")
    rport = params.get("rport")
    return host, int(rport) if rport else int(port or 5060)


class SipMediaProxy(asyncio.DatagramProtocol):
    def __init__(self, engine: MediaEngine, callee: tuple[str, int], *, transcode: bool = False):
        self.engine = engine
        self.callee = callee
        self.transcode = transcode
        self.calls: dict[str, MediaCall] = {}  # by Call-ID; kept until close()
        self._answers: dict[str, bytes] = {}
        self._offers: dict[str, bytes] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.addr: tuple[str, int] = ("127.0.0.1", 0)
        self.errors: list[str] = []

    async def start(self, host: str = "127.0.0.1") -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, 0))
        self.addr = self.transport.get_extra_info("sockname")[:2]
        return self.addr

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        for call in self.calls.values():
            await self.engine.delete(call)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip():
            return  # keep-alive
        asyncio.get_running_loop().create_task(self._handle(SipMessage(data), addr))

    async def _handle(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        try:
            if msg.is_request:
                await self._request(msg, addr)
            else:
                await self._response(msg)
        except Exception as exc:  # pragma: no cover - surfaced by the tests through .errors
            self.errors.append(f"{msg.start}: {exc!r}")

    async def _request(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        call_id = msg.get("call-id") or ""
        method, uri, version = msg.start.split(" ", 2)
        # retarget to the callee, keeping the user part
        user = re.match(r"sips?:([^@;>]+)@", uri)
        host, port = self.callee
        msg.start = f"{method} sip:{user.group(1) + '@' if user else ''}{host}:{port} {version}"
        if method == "INVITE" and msg.body.strip():
            if call_id not in self._offers:  # not a retransmission
                call = await self.engine.offer(msg.body, transcode=self.transcode)
                self.calls[call_id] = call
                self._offers[call_id] = bytes(call.offer_for_b)
            msg.set_body(self._offers[call_id])
        top = msg.get("via") or ""
        branch = hashlib.sha1(top.encode()).hexdigest()[:16]
        msg.headers.insert(
            0, ("Via", f"SIP/2.0/UDP {self.addr[0]}:{self.addr[1]};branch=z9hG4bK{branch}")
        )
        self.transport.sendto(bytes(msg), self.callee)

    async def _response(self, msg: SipMessage) -> None:
        assert self.transport is not None
        vias = msg.vias()
        if len(vias) < 2:
            return
        del msg.headers[vias[0]]  # ours
        dest = _via_dest(msg.headers[vias[1] - 1][1])
        call_id = msg.get("call-id") or ""
        if msg.cseq_method == "INVITE" and 200 <= msg.status < 300 and msg.body.strip():
            call = self.calls.get(call_id)
            if call is not None:
                if call_id not in self._answers:
                    self._answers[call_id] = bytes(await self.engine.answer(call, msg.body))
                msg.set_body(self._answers[call_id])
        self.transport.sendto(bytes(msg), dest)
