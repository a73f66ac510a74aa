"""SIP transports over asyncio: UDP, TCP and TLS on IPv4 and IPv6 (RFC 3261 §18).

The transport layer moves bytes: it frames stream input by Content-Length,
keeps a table of open connections so responses go back over the connection
the request came in on (and new connections are reused), answers RFC 5626
CRLF keepalives, and drops input from sources that exceed a per-source rate
(token bucket) before anything is parsed. Parsing and response routing by Via
live in :mod:`pbxcore.sip.server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from pbxcore.sip.errors import SipParseError
from pbxcore.sip.message import ParseLimits, message_length

__all__ = [
    "FramingError",
    "ListenAddress",
    "RateLimit",
    "RateLimiter",
    "Source",
    "StreamFramer",
    "TransportLayer",
    "TransportName",
]

log = logging.getLogger("pbxcore.sip.transport")

TransportName = Literal["udp", "tcp", "tls"]
_TRANSPORTS: tuple[TransportName, ...] = ("udp", "tcp", "tls")
_DEFAULT_PORT = {"udp": 5060, "tcp": 5060, "tls": 5061}

MAX_MESSAGE_SIZE = 65_535
SOCKET_BUFFER = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One listening point: transport, host (IPv6 without brackets) and port."""

    transport: TransportName
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, *, tls: bool = False) -> list[ListenAddress]:
        """``[udp:|tcp:|tls:]HOST[:PORT]``; no prefix means UDP and TCP (and TLS if ``tls``).

        IPv6 hosts are written in brackets: ``[::1]:5060``.
        """
        spec = text.strip()
        transports: tuple[TransportName, ...] = ("udp", "tcp", "tls") if tls else ("udp", "tcp")
        prefix, sep, rest = spec.partition(":")
        if sep and prefix.lower() in _TRANSPORTS and not rest.startswith(":"):
            transports = (_TRANSPORTS[_TRANSPORTS.index(prefix.lower())],)
            spec = rest
        if spec.startswith("["):
            host, bracket, tail = spec[1:].partition("]")
            if not bracket or (tail and not tail.startswith(":")):
                raise ValueError(f"bad listen address {text!r}")
            port_text = tail[1:]
        else:
            host, _, port_text = spec.partition(":")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"listen address {text!r} needs an IP address") from None
        if port_text and (not port_text.isdigit() or int(port_text) > 65535):
            raise ValueError(f"bad port in listen address {text!r}")
        return [
            cls(t, str(address), int(port_text) if port_text else _DEFAULT_PORT[t])
            for t in transports
        ]

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


class _Channel:
    """Something a message arrived on and responses can be sent back through."""

    transport: TransportName
    local: ListenAddress

    def send(self, data: bytes, host: str, port: int) -> bool:
        raise NotImplementedError

    @property
    def is_open(self) -> bool:
        raise NotImplementedError


class Source:
    """Where a message came from: transport, remote address and the channel it used."""

    __slots__ = ("channel", "host", "port", "transport")

    def __init__(self, transport: TransportName, host: str, port: int, channel: _Channel) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.channel = channel

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __repr__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


MessageHandler = Callable[[bytes, Source], None]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Per-source token bucket: ``rate`` messages per second, bursts up to ``burst``."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError(f"rate limit needs rate > 0 and burst >= 1, got {self}")


class RateLimiter:
    """Token buckets per source IP, the least recently created forgotten first."""

    def __init__(
        self,
        limit: RateLimit,
        *,
        max_sources: int = 65_536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self._clock = clock
        self._max_sources = max_sources
        self._buckets: dict[str, list[float]] = {}
        self.dropped = 0

    def allow(self, source_ip: str) -> bool:
        """Take one token for ``source_ip``; False (and count a drop) if its bucket is empty."""
        now = self._clock()
        bucket = self._buckets.get(source_ip)
        if bucket is None:
            if len(self._buckets) >= self._max_sources:
                del self._buckets[next(iter(self._buckets))]
            self._buckets[source_ip] = [self.limit.burst - 1.0, now]
            return True
        tokens = min(self.limit.burst, bucket[0] + (now - bucket[1]) * self.limit.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            self.dropped += 1
            return False
        bucket[0] = tokens - 1.0
        return True


class FramingError(ValueError):
    """A stream carried something that cannot be framed as SIP messages."""


class StreamFramer:
    """Splits a byte stream into SIP messages by Content-Length (RFC 3261 §18.3).

    The length comes from :func:`pbxcore.sip.message_length`. Leading CRLFs between
    messages are skipped; a double CRLF on its own is an RFC 5626 keepalive ping, counted
    in ``pings`` so the caller can answer it.
    """

    def __init__(self, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._limits = ParseLimits(max_message_size=max_message_size)
        self.pings = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete messages now available."""
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        while True:
            start = 0
            while buffer[start : start + 2] == b"\r\n":
                start += 2
                if buffer[start : start + 2] == b"\r\n":
                    self.pings += 1
                    start += 2
            if start:
                del buffer[:start]
            if not buffer:
                return messages
            try:
                total = message_length(bytes(buffer), limits=self._limits)
            except SipParseError as exc:
                raise FramingError(exc.reason) from None
            if total is None:
                return messages
            messages.append(bytes(buffer[:total]))
            del buffer[:total]


class _UdpEndpoint(asyncio.DatagramProtocol, _Channel):
    def __init__(self, layer: TransportLayer, local: ListenAddress) -> None:
        self.transport = "udp"
        self.local = local
        self._layer = layer
        self._udp: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython's selector transport is not a DatagramTransport subclass: no isinstance
        self._udp = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        host, port = str(addr[0]), int(addr[1])
        layer = self._layer
        if layer.limiter is not None and not layer.limiter.allow(host):
            return
        if len(data) < 4 or not data.strip():  # CRLF keepalives and stray bytes
            return
        layer.on_message(data, Source("udp", host, port, self))

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error on %s: %s", self.local, exc)

    def send(self, data: bytes, host: str, port: int) -> bool:
        if self._udp is None or self._udp.is_closing():
            return False
        try:
            self._udp.sendto(data, (host, port))
        except (OSError, ValueError) as exc:
            # uvloop raises at once (a name, a family mismatch): count it, never let it
            # reach the transaction that is sending
            self._layer.send_failed(host, port, exc)
            return False
        return True

    @property
    def is_open(self) -> bool:
        return self._udp is not None and not self._udp.is_closing()

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()


class _StreamConnection(asyncio.Protocol, _Channel):
    def __init__(self, layer: TransportLayer, local: ListenAddress) -> None:
        self.transport = local.transport
        self.local = local
        self._layer = layer
        self._stream: asyncio.Transport | None = None
        self._framer = StreamFramer(layer.max_message_size)
        self.peer: tuple[str, int] = ("", 0)
        self.last_activity = time.monotonic()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._stream = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1]))
        self._layer._register(self)

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        layer = self._layer
        try:
            messages = self._framer.feed(data)
        except FramingError as exc:
            log.info("closing %s connection from %s: %s", self.transport, self.peer, exc)
            self.abort()
            return
        if self._framer.pings:
            self._framer.pings = 0
            self._write(b"\r\n")  # RFC 5626 pong
        host, port = self.peer
        for message in messages:
            if layer.limiter is not None and not layer.limiter.allow(host):
                continue
            layer.on_message(message, Source(self.transport, host, port, self))

    def connection_lost(self, exc: Exception | None) -> None:
        self._layer._unregister(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def _write(self, data: bytes) -> bool:
        if self._stream is None or self._stream.is_closing():
            return False
        self._stream.write(data)
        return True

    def send(self, data: bytes, host: str, port: int) -> bool:
        self.last_activity = time.monotonic()
        return self._write(data)

    @property
    def is_open(self) -> bool:
        return self._stream is not None and not self._stream.is_closing()

    def abort(self) -> None:
        if self._stream is not None:
            self._stream.abort()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


class TransportLayer:
    """Listening points, the connection table and sending, for one SIP node."""

    def __init__(
        self,
        on_message: MessageHandler,
        *,
        rate_limit: RateLimit | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_message_size: int = MAX_MESSAGE_SIZE,
        idle_timeout: float = 900.0,
    ) -> None:
        self.on_message = on_message
        self.limiter = RateLimiter(rate_limit) if rate_limit is not None else None
        self.ssl_context = ssl_context
        self.max_message_size = max_message_size
        self.idle_timeout = idle_timeout
        self.listening: list[ListenAddress] = []
        self._udp: list[_UdpEndpoint] = []
        self._servers: list[asyncio.Server] = []
        self._connections: dict[tuple[TransportName, str, int], _StreamConnection] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self.send_errors = 0
        self._send_error_peers: set[tuple[str, int]] = set()

    def send_failed(self, host: str, port: int, exc: BaseException) -> None:
        """A send that failed at once: counted, and logged once per peer."""
        self.send_errors += 1
        peers = self._send_error_peers
        if (host, port) not in peers:
            if len(peers) >= 4096:  # bounded: a flood of peers must not pin memory
                peers.clear()
            peers.add((host, port))
            log.warning("cannot send to %s:%s: %s", host, port, exc)

    # -- listening ---------------------------------------------------------------------

    async def listen(self, addresses: list[ListenAddress]) -> list[ListenAddress]:
        """Bind all ``addresses``; port 0 picks one free port shared by UDP and TCP of a host."""
        bound: list[ListenAddress] = []
        chosen: dict[str, int] = {}
        for address in addresses:
            port = address.port or chosen.get(address.host, 0)
            for attempt in range(20):
                try:
                    wanted = ListenAddress(address.transport, address.host, port)
                    actual = await self._listen_one(wanted)
                    break
                except OSError:
                    if address.port or attempt == 19 or not port:
                        raise
                    # the UDP port picked for this host is taken for TCP: start over there
                    port = 0
            if not address.port:
                chosen.setdefault(address.host, actual.port)
            bound.append(actual)
        self.listening.extend(bound)
        if self._sweeper is None:
            self._schedule_sweep()
        return bound

    async def _listen_one(self, address: ListenAddress) -> ListenAddress:
        loop = asyncio.get_running_loop()
        if address.transport == "udp":
            endpoint = _UdpEndpoint(self, address)
            transport, _ = await loop.create_datagram_endpoint(
                lambda: endpoint, local_addr=(address.host, address.port), family=address.family
            )
            port = int(transport.get_extra_info("sockname")[1])
            endpoint.local = ListenAddress("udp", address.host, port)
            self._udp.append(endpoint)
            return endpoint.local
        if address.transport == "tls" and self.ssl_context is None:
            raise ValueError("a TLS listening point needs a certificate and key")
        local = address
        server = await loop.create_server(
            lambda: _StreamConnection(self, local),
            host=address.host,
            port=address.port,
            family=address.family,
            ssl=self.ssl_context if address.transport == "tls" else None,
            reuse_address=True,
        )
        port = int(server.sockets[0].getsockname()[1])
        local = ListenAddress(address.transport, address.host, port)
        self._servers.append(server)
        return local

    # -- connections -------------------------------------------------------------------

    def _register(self, connection: _StreamConnection) -> None:
        self._connections[(connection.transport, *connection.peer)] = connection

    def _unregister(self, connection: _StreamConnection) -> None:
        key = (connection.transport, *connection.peer)
        if self._connections.get(key) is connection:
            del self._connections[key]

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(min(60.0, self.idle_timeout), self._sweep)

    def _sweep(self) -> None:
        horizon = time.monotonic() - self.idle_timeout
        for connection in list(self._connections.values()):
            if connection.last_activity < horizon:
                connection.close()
        self._schedule_sweep()

    # -- sending -------------------------------------------------------------------------

    def udp_channel(self, host: str) -> _Channel | None:
        """A UDP endpoint that can reach ``host`` (same address family)."""
        v6 = ":" in host
        for endpoint in self._udp:
            if (":" in endpoint.local.host) == v6 and endpoint.is_open:
                return endpoint
        return None

    def send(
        self,
        data: bytes,
        transport: TransportName,
        host: str,
        port: int,
        *,
        channel: _Channel | None = None,
    ) -> bool:
        """Send ``data``: over ``channel`` if it is still open, else over UDP, an open
        connection to the destination, or a new TCP connection (opened in the background).

        Returns False if it is known at once that nothing can be sent.
        """
        if channel is not None and channel.is_open:
            return channel.send(data, host, port)
        if transport == "udp":
            endpoint = self.udp_channel(host)
            return endpoint.send(data, host, port) if endpoint is not None else False
        connection = self._connections.get((transport, host, port))
        if connection is not None and connection.is_open:
            return connection.send(data, host, port)
        if transport == "tls":
            log.info("no TLS connection to %s:%s any more; dropping message", host, port)
            return False
        task = asyncio.get_running_loop().create_task(self._connect_and_send(data, host, port))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return True

    async def _connect_and_send(self, data: bytes, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        local = next((a for a in self.listening if a.transport == "tcp"), None)
        local = local or ListenAddress("tcp", "0.0.0.0", 0)
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _StreamConnection(self, local), host, port),
                timeout=10.0,
            )
        except (OSError, TimeoutError) as exc:
            log.info("cannot connect to tcp:%s:%s: %s", host, port, exc)
            return
        protocol.send(data, host, port)

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for endpoint in self._udp:
            endpoint.close()
        for server in self._servers:
            server.close()
        connections = list(self._connections.values())
        for connection in connections:
            connection.close()
        for task in self._pending:
            task.cancel()
        if connections:
            await asyncio.wait([c.closed for c in connections], timeout=2.0)
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), timeout=2.0)
        self._udp.clear()
        self._servers.clear()
        self.listening.clear()
