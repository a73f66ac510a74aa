"""SIP transports over asyncio: UDP, TCP and TLS on IPv4 and IPv6 (RFC 3261 §18).

The transport layer moves bytes: it frames stream input by Content-Length,
keeps a table of open connections so responses go back over the connection
the request came in on (and new connections are reused), answers RFC 5626
CRLF keepalives, and limits each source's messages and bytes per second (token
buckets, before anything is parsed: excess datagrams are dropped, a stream over
its byte rate is paused). :class:`TransportLimits` bounds what a peer can hold:
connections per source and in total (refusals are logged, once per source per
interval), the time a message may take to arrive, and idle connections. Parsing and
response routing by Via live in :mod:`pbxcore.sip.server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import sys
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
    "TransportLimits",
    "TransportName",
    "raise_open_file_limit",
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


def _bracketed(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
    """Per-source token buckets: ``rate`` messages per second, bursts up to ``burst``, and
    ``byte_rate`` bytes per second, bursts up to ``byte_burst`` (``byte_rate=0``: bytes
    are not limited). A datagram larger than ``byte_burst`` never passes."""

    rate: float
    burst: float
    byte_rate: float = 2_000_000.0
    byte_burst: float = 4_000_000.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError(f"rate limit needs rate > 0 and burst >= 1, got {self}")
        if self.byte_rate < 0 or (self.byte_rate and self.byte_burst < 1):
            raise ValueError(f"byte rate limit needs byte_rate >= 0 and byte_burst >= 1: {self}")


class RateLimiter:
    """Token buckets per source IP, the least recently created forgotten first.

    A bucket is ``[message tokens, byte tokens, last refill]``; byte tokens go below zero
    when a stream takes bytes on credit (:meth:`charge`).
    """

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

    def _bucket(self, source_ip: str) -> list[float]:
        now = self._clock()
        limit = self.limit
        bucket = self._buckets.get(source_ip)
        if bucket is None:
            if len(self._buckets) >= self._max_sources:
                del self._buckets[next(iter(self._buckets))]
            bucket = self._buckets[source_ip] = [limit.burst, limit.byte_burst, now]
            return bucket
        elapsed = now - bucket[2]
        if elapsed > 0:
            bucket[0] = min(limit.burst, bucket[0] + elapsed * limit.rate)
            bucket[1] = min(limit.byte_burst, bucket[1] + elapsed * limit.byte_rate)
            bucket[2] = now
        return bucket

    def allow(self, source_ip: str, size: int = 0) -> bool:
        """Take one message token and ``size`` byte tokens for ``source_ip``; False (and
        count a drop) if either bucket holds too few (then nothing is taken)."""
        bucket = self._bucket(source_ip)
        counts_bytes = size > 0 and self.limit.byte_rate > 0
        if bucket[0] < 1.0 or (counts_bytes and bucket[1] < size):
            self.dropped += 1
            return False
        bucket[0] -= 1.0
        if counts_bytes:
            bucket[1] -= size
        return True

    def charge(self, source_ip: str, size: int) -> float:
        """Take ``size`` byte tokens, on credit if need be (stream input, already read);
        returns the seconds until the debt is paid, 0.0 if there is none."""
        if self.limit.byte_rate <= 0:
            return 0.0
        bucket = self._bucket(source_ip)
        bucket[1] -= size
        return -bucket[1] / self.limit.byte_rate if bucket[1] < 0 else 0.0

    def debt(self, source_ip: str) -> float:
        """Seconds until ``source_ip``'s byte debt is paid (0.0: none)."""
        if self.limit.byte_rate <= 0 or source_ip not in self._buckets:
            return 0.0
        tokens = self._bucket(source_ip)[1]
        return -tokens / self.limit.byte_rate if tokens < 0 else 0.0


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """What peers may hold of a :class:`TransportLayer`.

    ``max_connections``: open TCP/TLS connections in total (also lowered to what the
    open-file limit leaves, see :func:`raise_open_file_limit`); ``max_connections_per_source``:
    inbound connections from one IP address; ``message_timeout``: seconds from the first
    byte of a stream message to its last (later bytes do not restart it), else the
    connection is closed; ``idle_timeout``: seconds a connection may stay open without a
    complete message, keepalive or response; ``report_interval``: refusals and timeouts
    are logged once per source (and kind) per this many seconds.
    """

    max_connections: int = 10_000
    max_connections_per_source: int = 64
    message_timeout: float = 30.0
    idle_timeout: float = 900.0
    report_interval: float = 60.0

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_connections_per_source < 1:
            raise ValueError(f"connection limits must be >= 1: {self}")
        if self.message_timeout <= 0 or self.idle_timeout <= 0 or self.report_interval <= 0:
            raise ValueError(f"message_timeout, idle_timeout, report_interval must be > 0: {self}")


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit in force.

    Every connection costs a descriptor; at the usual soft default of 1,024 a few hundred
    idle TCP peers starve the process (accept fails, new clients see EOF).
    """
    if sys.platform == "win32":
        return 1 << 16  # no RLIMIT_NOFILE; the limit is per-process handles
    import resource  # noqa: PLC0415 - POSIX only

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open file limit from %d to %d: %s", soft, wanted, exc)
        return int(soft)
    return int(wanted)


def _connection_budget(open_files: int) -> int:
    # leave a quarter of the descriptors (at least 64) to listening sockets, logs, media
    return max(1, open_files - max(64, open_files // 4))


class _Reports:
    """Rate-limited log lines: one per key per ``interval``, counting what was held back,
    and at most ``max_lines`` per interval over all keys (many sources, e.g. an IPv6
    prefix, must not flood the log either)."""

    def __init__(
        self,
        interval: float,
        clock: Callable[[], float],
        *,
        max_keys: int = 4096,
        max_lines: int = 100,
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._max_keys = max_keys
        self._max_lines = max_lines
        self._last: dict[tuple[str, str], list[float]] = {}  # key -> [logged at, held back]
        self._window = float("-inf")  # start of the current interval over all keys
        self._lines = 0

    def due(self, kind: str, source: str) -> int | None:
        """None: say nothing now; else log, mentioning this many held back since."""
        now = self._clock()
        key = (kind, source)
        entry = self._last.get(key)
        if entry is not None and now - entry[0] < self._interval:
            entry[1] += 1
            return None
        if now - self._window >= self._interval:
            self._window, self._lines = now, 0
        self._lines += 1
        if self._lines > self._max_lines:
            if self._lines == self._max_lines + 1:
                log.warning(
                    "more than %d connection reports in %g s: holding the rest back",
                    self._max_lines,
                    self._interval,
                )
            return None
        held = 0 if entry is None else int(entry[1])
        if entry is None and len(self._last) >= self._max_keys:
            del self._last[next(iter(self._last))]
        self._last[key] = [now, 0.0]
        return held


def _more(held: int) -> str:
    return f" ({held} more since the last report)" if held else ""


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

    @property
    def pending(self) -> bool:
        """Whether part of a message is buffered (waiting for the rest)."""
        return bool(self._buffer)

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
        if layer.limiter is not None and not layer.limiter.allow(host, len(data)):
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
    def __init__(self, layer: TransportLayer, local: ListenAddress, *, inbound: bool) -> None:
        self.transport = local.transport
        self.local = local
        self.inbound = inbound
        self._layer = layer
        self._stream: asyncio.Transport | None = None
        self._framer = StreamFramer(layer.max_message_size)
        self.peer: tuple[str, int] = ("", 0)
        self.last_activity = layer._clock()
        self.message_started: float | None = None  # first byte of the message in progress
        self.counted = False  # in the layer's connection counts
        self._resume: asyncio.TimerHandle | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._stream = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1]))
        if not self._layer._register(self):
            self._stream.abort()

    def data_received(self, data: bytes) -> None:
        layer = self._layer
        host, port = self.peer
        limiter = layer.limiter
        if limiter is not None:
            wait = limiter.charge(host, len(data))
            if wait > 0.0:
                self._pause(wait)
        now = layer._clock()
        framer = self._framer
        try:
            messages = framer.feed(data)
        except FramingError as exc:
            log.info("closing %s connection from %s: %s", self.transport, self.peer, exc)
            self.abort()
            return
        if framer.pending:
            if messages or self.message_started is None:
                self.message_started = now  # a new message began in this chunk
        else:
            self.message_started = None
        if messages or framer.pings:
            self.last_activity = now  # stray bytes alone do not keep a connection open
        if framer.pings:
            framer.pings = 0
            self._write(b"\r\n")  # RFC 5626 pong
        for message in messages:
            if limiter is not None and not limiter.allow(host):
                continue
            layer.on_message(message, Source(self.transport, host, port, self))

    def _pause(self, wait: float) -> None:
        """Stop reading until the source's byte debt is paid (the sender is slowed down by
        TCP flow control instead of losing messages)."""
        if self._resume is not None or self._stream is None or self._stream.is_closing():
            return
        self._stream.pause_reading()
        self._resume = asyncio.get_running_loop().call_later(
            min(max(wait, 0.01), 1.0), self._try_resume
        )

    def _try_resume(self) -> None:
        self._resume = None
        limiter = self._layer.limiter
        wait = limiter.debt(self.peer[0]) if limiter is not None else 0.0
        if self._stream is None or self._stream.is_closing():
            return
        if wait > 0.0:
            self._resume = asyncio.get_running_loop().call_later(
                min(max(wait, 0.01), 1.0), self._try_resume
            )
            return
        self._stream.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        self._layer._unregister(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def _write(self, data: bytes) -> bool:
        if self._stream is None or self._stream.is_closing():
            return False
        self._stream.write(data)
        return True

    def send(self, data: bytes, host: str, port: int) -> bool:
        self.last_activity = self._layer._clock()
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
        limits: TransportLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (
            rate_limit is not None
            and rate_limit.byte_rate
            and rate_limit.byte_burst < max_message_size
        ):
            raise ValueError(
                f"byte_burst {rate_limit.byte_burst:g} is below the largest message "
                f"({max_message_size} bytes): such messages could never pass"
            )
        self.on_message = on_message
        self._clock = clock
        self.limiter = RateLimiter(rate_limit, clock=clock) if rate_limit is not None else None
        self.ssl_context = ssl_context
        self.max_message_size = max_message_size
        self.limits = limits if limits is not None else TransportLimits()
        self.connection_limit = self.limits.max_connections
        self.refused = 0  # connections refused by the limits
        self.listening: list[ListenAddress] = []
        self._udp: list[_UdpEndpoint] = []
        self._servers: list[asyncio.Server] = []
        self._connections: dict[tuple[TransportName, str, int], _StreamConnection] = {}
        self._streams: set[_StreamConnection] = set()  # every counted connection
        self._per_source: dict[str, int] = {}  # inbound connections per source IP
        self._reports = _Reports(self.limits.report_interval, clock)
        self._pending: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._open_files: int | None = None
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
        if self._open_files is None and any(a.transport != "udp" for a in addresses):
            self._open_files = raise_open_file_limit()
            budget = _connection_budget(self._open_files)
            if budget < self.limits.max_connections:
                log.info("open file limit %d: at most %d SIP connections", self._open_files, budget)
            self.connection_limit = min(self.limits.max_connections, budget)
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
        tls: dict[str, Any] = {}
        if address.transport == "tls":
            # a TLS connection is counted once its handshake is done: until then only this
            # timeout bounds it (asyncio's default is 60 s)
            tls = {
                "ssl": self.ssl_context,
                "ssl_handshake_timeout": min(60.0, self.limits.message_timeout),
            }
        server = await loop.create_server(
            lambda: _StreamConnection(self, local, inbound=True),
            host=address.host,
            port=address.port,
            family=address.family,
            reuse_address=True,
            **tls,
        )
        port = int(server.sockets[0].getsockname()[1])
        local = ListenAddress(address.transport, address.host, port)
        self._servers.append(server)
        return local

    # -- connections -------------------------------------------------------------------

    def _register(self, connection: _StreamConnection) -> bool:
        """Count a new connection; False if the limits refuse it (the caller aborts it)."""
        host = connection.peer[0]
        if connection.inbound:
            reason = None
            if len(self._streams) >= self.connection_limit:
                reason = f"{self.connection_limit} connections open"
            elif self._per_source.get(host, 0) >= self.limits.max_connections_per_source:
                reason = f"{self.limits.max_connections_per_source} connections from {host}"
            if reason is not None:
                self.refused += 1
                held = self._reports.due("refused", host)
                if held is not None:
                    log.warning(
                        "refusing %s connection from %s: %s%s",
                        connection.transport,
                        _bracketed(*connection.peer),
                        reason,
                        _more(held),
                    )
                return False
            self._per_source[host] = self._per_source.get(host, 0) + 1
        connection.counted = True
        self._streams.add(connection)
        self._connections[(connection.transport, *connection.peer)] = connection
        return True

    def _unregister(self, connection: _StreamConnection) -> None:
        key = (connection.transport, *connection.peer)
        if self._connections.get(key) is connection:
            del self._connections[key]
        if not connection.counted:
            return
        connection.counted = False
        self._streams.discard(connection)
        if connection.inbound:
            host = connection.peer[0]
            left = self._per_source.get(host, 1) - 1
            if left:
                self._per_source[host] = left
            else:
                self._per_source.pop(host, None)

    @property
    def connection_count(self) -> int:
        """Open TCP/TLS connections (inbound and outbound)."""
        return len(self._streams)

    def _schedule_sweep(self) -> None:
        limits = self.limits
        every = max(0.5, min(60.0, limits.idle_timeout, limits.message_timeout) / 4)
        self._sweeper = asyncio.get_running_loop().call_later(every, self._sweep)

    def _sweep(self) -> None:
        self.sweep()
        self._schedule_sweep()

    def sweep(self) -> None:
        """Close connections whose message in progress is overdue, or that are idle.

        Runs by itself every few seconds once listening; public for tests and embedders
        that drive the clock.
        """
        now = self._clock()
        message_horizon = now - self.limits.message_timeout
        idle_horizon = now - self.limits.idle_timeout
        for connection in list(self._streams):
            started = connection.message_started
            if started is not None and started < message_horizon:
                held = self._reports.due("timeout", connection.peer[0])
                if held is not None:
                    log.info(
                        "closing %s connection from %s: message incomplete after %g s%s",
                        connection.transport,
                        _bracketed(*connection.peer),
                        self.limits.message_timeout,
                        _more(held),
                    )
                connection.abort()
            elif connection.last_activity < idle_horizon:
                connection.close()

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
        if len(self._streams) >= self.connection_limit:
            log.warning(
                "cannot connect to tcp:%s: %d connections open",
                _bracketed(host, port),
                self.connection_limit,
            )
            return
        local = next((a for a in self.listening if a.transport == "tcp"), None)
        local = local or ListenAddress("tcp", "0.0.0.0", 0)
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _StreamConnection(self, local, inbound=False), host, port
                ),
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
        connections = list(self._streams)
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
