"""SIP transports: listen specs, stream framing, rate limits, UDP/TCP/TLS over IPv4/IPv6."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxcore.sip.transport import (
    FramingError,
    ListenAddress,
    RateLimit,
    RateLimiter,
    Source,
    StreamFramer,
    TransportLayer,
    TransportLimits,
    raise_open_file_limit,
)
from tests.helpers import require_binary

MSG = (
    b"OPTIONS sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"
    b"Content-Length: 5\r\n\r\nhello"
)
MSG2 = b"OPTIONS sip:x SIP/2.0\r\nl: 0\r\n\r\n"


# -- listen specifications -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5070", ["udp:127.0.0.1:5070", "tcp:127.0.0.1:5070"]),
        ("127.0.0.1", ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]),
        ("[::1]:5080", ["udp:[::1]:5080", "tcp:[::1]:5080"]),
        ("tcp:[::1]:0", ["tcp:[::1]:0"]),
        ("udp:127.0.0.1:7", ["udp:127.0.0.1:7"]),
        ("TLS:127.0.0.1", ["tls:127.0.0.1:5061"]),
    ],
)
def test_listen_address_parse(text: str, expected: list[str]) -> None:
    assert [str(a) for a in ListenAddress.parse(text)] == expected


def test_listen_address_parse_with_tls() -> None:
    assert [a.transport for a in ListenAddress.parse("127.0.0.1:5060", tls=True)] == [
        "udp",
        "tcp",
        "tls",
    ]


@pytest.mark.parametrize(
    "text",
    ["example.com:5060", "127.0.0.1:99999", "[::1", "[::1]x", "127.0.0.1:ab", "sctp:1.2.3.4"],
)
def test_listen_address_parse_errors(text: str) -> None:
    with pytest.raises(ValueError):
        ListenAddress.parse(text)


# -- stream framing ----------------------------------------------------------------------


def test_framer_splits_by_content_length_and_compact_form() -> None:
    framer = StreamFramer()
    assert framer.feed(MSG + MSG2[:10]) == [MSG]
    assert framer.feed(MSG2[10:] + b"\r\n\r\n") == [MSG2]
    assert framer.pings == 1


def test_framer_errors() -> None:
    with pytest.raises(FramingError, match="Content-Length is required"):
        StreamFramer().feed(b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\n")
    with pytest.raises(FramingError, match="exceeds"):
        StreamFramer(max_message_size=100).feed(b"OPTIONS sip:x SIP/2.0\r\nl: 500\r\n\r\n")
    with pytest.raises(FramingError, match="header block exceeds"):
        StreamFramer(max_message_size=100).feed(b"X" * 200)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([MSG, MSG2, b"\r\n\r\n"]), min_size=1, max_size=6),
    st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=20),
)
def test_framer_any_chunking_yields_the_same_messages(parts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(parts)
    framer = StreamFramer()
    out: list[bytes] = []
    pos = 0
    for cut in cuts * (len(stream) // max(1, sum(cuts)) + 1):
        out += framer.feed(stream[pos : pos + cut])
        pos += cut
        if pos >= len(stream):
            break
    out += framer.feed(stream[pos:])
    assert out == [p for p in parts if p != b"\r\n\r\n"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_framer_random_bytes_raise_only_framing_error(data: bytes) -> None:
    framer = StreamFramer(max_message_size=200)
    try:
        for message in framer.feed(data):
            assert message.endswith(b"\r\n\r\n") or b"\r\n\r\n" in message
    except FramingError:
        pass


# -- rate limiting -----------------------------------------------------------------------


def test_rate_limiter_token_bucket() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimit(rate=10, burst=3), clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")
    now[0] += 0.1  # one token back
    assert limiter.allow("a") and not limiter.allow("a")
    now[0] += 10
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.dropped == 3


def test_rate_limiter_forgets_oldest_sources() -> None:
    limiter = RateLimiter(RateLimit(rate=1, burst=1), max_sources=2, clock=lambda: 0.0)
    assert limiter.allow("a") and limiter.allow("b") and limiter.allow("c")
    assert limiter.allow("a")  # "a" was forgotten: a fresh bucket


def test_rate_limit_validation() -> None:
    with pytest.raises(ValueError):
        RateLimit(rate=0, burst=1)
    with pytest.raises(ValueError):
        RateLimit(rate=1, burst=1, byte_rate=-1)
    with pytest.raises(ValueError):
        RateLimit(rate=1, burst=1, byte_rate=100, byte_burst=0)


def test_rate_limiter_counts_bytes_too() -> None:
    now = [0.0]
    limit = RateLimit(rate=100, burst=100, byte_rate=1000, byte_burst=1500)
    limiter = RateLimiter(limit, clock=lambda: now[0])
    assert limiter.allow("a", 1000)
    assert not limiter.allow("a", 600)  # 500 bytes left: the datagram is dropped whole
    assert limiter.allow("a", 500)
    assert not limiter.allow("a", 1)
    assert limiter.allow("b", 1500)  # per source
    now[0] += 0.1  # 100 bytes back
    assert limiter.allow("a", 100) and not limiter.allow("a", 1)
    assert limiter.dropped == 3
    # a stream is never cut: its bytes are taken on credit, and it waits off the debt
    assert limiter.charge("c", 1000) == 0.0
    assert limiter.charge("c", 1000) == pytest.approx(0.5)  # 500 bytes owed at 1000/s
    assert limiter.debt("c") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.debt("c") == 0.0
    # without a byte rate, only messages count
    free = RateLimiter(RateLimit(rate=100, burst=2, byte_rate=0), clock=lambda: now[0])
    assert free.allow("a", 10**9) and free.charge("a", 10**9) == 0.0


def test_limits_validation() -> None:
    for bad in (
        {"max_connections": 0},
        {"max_connections_per_source": 0},
        {"message_timeout": 0},
        {"idle_timeout": -1},
        {"report_interval": 0},
    ):
        with pytest.raises(ValueError):
            TransportLimits(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="burst"):
        TransportLayer(
            lambda data, source: None,
            rate_limit=RateLimit(rate=1, burst=1, byte_rate=10, byte_burst=100),
            max_message_size=1000,
        )


# -- live sockets ----------------------------------------------------------------------


class Collector:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Source]] = asyncio.Queue()

    def __call__(self, data: bytes, source: Source) -> None:
        self.queue.put_nowait((data, source))

    async def get(self) -> tuple[bytes, Source]:
        return await asyncio.wait_for(self.queue.get(), timeout=5)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_udp_receive_and_reply(host: str) -> None:
    collector = Collector()
    layer = TransportLayer(collector)
    try:
        (bound,) = await layer.listen([ListenAddress("udp", host, 0)])
        assert bound.port != 0
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as peer:
            peer.bind((host, 0))
            peer.settimeout(5)
            peer.sendto(b"\r\n\r\n", (host, bound.port))  # keepalive: ignored
            peer.sendto(MSG, (host, bound.port))
            data, source = await collector.get()
            assert data == MSG and source.transport == "udp" and not source.reliable
            assert (source.host, source.port) == peer.getsockname()[:2]
            assert layer.send(b"reply", "udp", source.host, source.port, channel=source.channel)
            assert peer.recvfrom(100)[0] == b"reply"
            # without a channel, the endpoint of the same family is used
            assert layer.send(b"again", "udp", source.host, source.port)
            assert peer.recvfrom(100)[0] == b"again"
    finally:
        await layer.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_tcp_framing_connection_reuse_and_pong(host: str) -> None:
    collector = Collector()
    layer = TransportLayer(collector)
    try:
        (bound,) = await layer.listen([ListenAddress("tcp", host, 0)])
        reader, writer = await asyncio.open_connection(host, bound.port)
        writer.write(MSG[:20])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(MSG[20:] + MSG2 + b"\r\n\r\n")
        first, source = await collector.get()
        second, _ = await collector.get()
        assert (first, second) == (MSG, MSG2)
        assert source.reliable and layer.connection_count == 1
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"  # RFC 5626 pong
        # the response goes back over the same connection, also when found by address
        assert layer.send(b"resp1", "tcp", source.host, source.port, channel=source.channel)
        assert layer.send(b"resp2", "tcp", source.host, source.port)
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"resp1resp2"
        writer.close()
        await writer.wait_closed()
    finally:
        await layer.close()


async def test_tcp_framing_error_closes_connection() -> None:
    layer = TransportLayer(Collector())
    try:
        (bound,) = await layer.listen([ListenAddress("tcp", "127.0.0.1", 0)])
        reader, writer = await asyncio.open_connection("127.0.0.1", bound.port)
        writer.write(b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        await layer.close()


async def test_tcp_opens_new_connection_when_none_is_open() -> None:
    accepted: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.put_nowait(await reader.readexactly(5))
        writer.close()

    peer = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = peer.sockets[0].getsockname()[1]
    layer = TransportLayer(Collector())
    try:
        await layer.listen([ListenAddress("tcp", "127.0.0.1", 0)])
        assert layer.send(b"hello", "tcp", "127.0.0.1", port)
        assert await asyncio.wait_for(accepted.get(), 5) == b"hello"
    finally:
        await layer.close()
        peer.close()


async def test_rate_limit_drops_flood() -> None:
    collector = Collector()
    layer = TransportLayer(collector, rate_limit=RateLimit(rate=0.001, burst=5))
    try:
        (bound,) = await layer.listen([ListenAddress("udp", "127.0.0.1", 0)])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            for _ in range(20):
                peer.sendto(MSG, ("127.0.0.1", bound.port))
            for _ in range(5):
                await collector.get()
            await asyncio.sleep(0.2)
            assert collector.queue.empty()
        assert layer.limiter is not None and layer.limiter.dropped == 15
    finally:
        await layer.close()


async def test_port_zero_shares_one_port_for_udp_and_tcp() -> None:
    layer = TransportLayer(Collector())
    try:
        bound = await layer.listen(ListenAddress.parse("127.0.0.1:0"))
        assert [a.transport for a in bound] == ["udp", "tcp"]
        assert bound[0].port == bound[1].port != 0
    finally:
        await layer.close()


@pytest.fixture
def tls_context(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    openssl = require_binary("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,IP:::1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_tls_receive_and_reply(tls_context: tuple[ssl.SSLContext, Path], host: str) -> None:
    server_context, cert = tls_context
    collector = Collector()
    layer = TransportLayer(collector, ssl_context=server_context)
    try:
        (bound,) = await layer.listen([ListenAddress("tls", host, 0)])
        client_context = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection(
            host, bound.port, ssl=client_context, server_hostname=host
        )
        writer.write(MSG)
        data, source = await collector.get()
        assert data == MSG and source.transport == "tls"
        layer.send(b"secure", "tls", source.host, source.port, channel=source.channel)
        assert await asyncio.wait_for(reader.readexactly(6), 5) == b"secure"
        writer.close()
    finally:
        await layer.close()


async def test_tls_listen_needs_context() -> None:
    layer = TransportLayer(Collector())
    with pytest.raises(ValueError, match="certificate"):
        await layer.listen([ListenAddress("tls", "127.0.0.1", 0)])
    await layer.close()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_listen_address_parse_random_text_raises_only_value_error(text: str) -> None:
    try:
        addresses = ListenAddress.parse(text)
    except ValueError:
        return
    for address in addresses:
        assert address.transport in ("udp", "tcp", "tls") and 0 <= address.port <= 65535
        assert ListenAddress.parse(str(address)) == [address]


# -- resource limits ---------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _connect(
    port: int, local: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0))


async def _closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed the connection (EOF, or a reset after an abort)."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


async def _open(reader: asyncio.StreamReader) -> bool:
    """Whether the connection is still open: answers a keepalive ping with a pong."""
    return await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refus" in r.getMessage()]


async def test_tcp_connections_are_capped_per_source_and_in_total(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pbxcore.sip.transport")
    clock = FakeClock()
    collector = Collector()
    limits = TransportLimits(max_connections=3, max_connections_per_source=2, report_interval=60)
    layer = TransportLayer(collector, limits=limits, clock=clock)
    writers = []
    try:
        (bound,) = await layer.listen([ListenAddress("tcp", "127.0.0.1", 0)])
        for _ in range(2):
            reader, writer = await _connect(bound.port)
            writers.append(writer)
            writer.write(MSG)
            await collector.get()  # accepted and served
        for _ in range(3):  # a third, fourth, fifth from 127.0.0.1: refused
            reader, writer = await _connect(bound.port)
            writers.append(writer)
            assert await _closed(reader)
        assert len([m for m in _refusals(caplog) if "127.0.0.1" in m]) == 1  # once per interval
        _, other = await _connect(bound.port, "127.0.0.2")
        writers.append(other)
        other.write(MSG)
        assert (await collector.get())[1].host == "127.0.0.2"
        reader, writer = await _connect(bound.port, "127.0.0.3")  # 3 open: the total cap
        writers.append(writer)
        assert await _closed(reader)
        assert any("127.0.0.3" in m for m in _refusals(caplog))
        assert layer.connection_count == 3 and layer.refused == 4
        clock.now += 61  # the next refusal from 127.0.0.1 is reported again, with the count
        reader, writer = await _connect(bound.port)
        writers.append(writer)
        assert await _closed(reader)
        lines = [m for m in _refusals(caplog) if "127.0.0.1" in m]
        assert len(lines) == 2 and "2 more" in lines[1]
        # closing one frees its place
        writers[0].close()
        await writers[0].wait_closed()
        for _ in range(100):
            if layer.connection_count == 2:
                break
            await asyncio.sleep(0.01)
        reader, writer = await _connect(bound.port)
        writers.append(writer)
        writer.write(b"\r\n\r\n")
        assert await _open(reader)
    finally:
        for writer in writers:
            writer.close()
        await layer.close()


async def test_refusal_reports_are_bounded_across_sources(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pbxcore.sip.transport")
    layer = TransportLayer(
        Collector(), limits=TransportLimits(max_connections=1), clock=FakeClock()
    )
    writers = []
    try:
        (bound,) = await layer.listen([ListenAddress("tcp", "127.0.0.1", 0)])
        _, first = await _connect(bound.port)
        writers.append(first)
        for n in range(150):  # one refusal from each of 150 addresses
            reader, writer = await _connect(bound.port, f"127.0.1.{n + 1}")
            writers.append(writer)
            assert await _closed(reader)
        assert layer.refused == 150
        lines = _refusals(caplog)
        assert 1 <= len(lines) <= 101  # one per source, at most 100 per interval, and a summary
    finally:
        for writer in writers:
            writer.close()
        await layer.close()


async def test_incomplete_message_times_out_from_its_first_byte(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pbxcore.sip.transport")
    clock = FakeClock()
    collector = Collector()
    limits = TransportLimits(message_timeout=30, idle_timeout=1000)
    layer = TransportLayer(collector, limits=limits, clock=clock)
    try:
        (bound,) = await layer.listen([ListenAddress("tcp", "127.0.0.1", 0)])
        slow_reader, slow = await _connect(bound.port)
        steady_reader, steady = await _connect(bound.port)
        slow.write(MSG + MSG2[:10])  # one message and the start of another
        steady.write(MSG)
        await collector.get()
        await collector.get()
        clock.now += 20
        slow.write(MSG2[10:12])  # a trickle: does not restart the message's timer
        steady.write(MSG)
        await collector.get()
        clock.now += 11  # 31 s after the second message's first byte
        layer.sweep()
        assert await _closed(slow_reader)
        steady.write(b"\r\n\r\n")
        assert await _open(steady_reader)
        assert any("incomplete" in r.getMessage() for r in caplog.records)
    finally:
        slow.close()
        steady.close()
        await layer.close()


async def test_idle_timeout_is_refreshed_by_messages_not_by_stray_bytes() -> None:
    clock = FakeClock()
    collector = Collector()
    layer = TransportLayer(
        collector, limits=TransportLimits(message_timeout=1000, idle_timeout=100), clock=clock
    )
    try:
        (bound,) = await layer.listen([ListenAddress("tcp", "127.0.0.1", 0)])
        trickle_reader, trickle = await _connect(bound.port)
        busy_reader, busy = await _connect(bound.port)
        for writer in (trickle, busy):
            writer.write(MSG)
            await collector.get()
        clock.now += 60
        trickle.write(MSG[:5])  # bytes, but no message
        busy.write(MSG)
        await collector.get()
        clock.now += 41  # 101 s since trickle's last message, 41 s since busy's
        layer.sweep()
        assert await _closed(trickle_reader)
        busy.write(b"\r\n\r\n")
        assert await _open(busy_reader)
    finally:
        trickle.close()
        busy.close()
        await layer.close()


async def test_tcp_byte_rate_pauses_reading_until_the_debt_is_paid() -> None:
    clock = FakeClock()
    collector = Collector()
    limit = RateLimit(rate=1000, burst=1000, byte_rate=100, byte_burst=200)
    layer = TransportLayer(collector, rate_limit=limit, max_message_size=200, clock=clock)
    try:
        (bound,) = await layer.listen([ListenAddress("tcp", "127.0.0.1", 0)])
        _, writer = await _connect(bound.port)
        writer.write(MSG * 3)  # 3 x 92 bytes at once: 76 bytes owed
        for _ in range(3):
            assert (await collector.get())[0] == MSG  # what was read is served
        writer.write(MSG2)
        await asyncio.sleep(0.3)  # the clock stands still: the debt is not paid
        assert collector.queue.empty()
        clock.now += 1.2  # paid
        assert (await collector.get())[0] == MSG2
        writer.close()
    finally:
        await layer.close()


async def test_udp_byte_rate_drops_datagrams_over_the_budget() -> None:
    clock = FakeClock()
    collector = Collector()
    limit = RateLimit(rate=1000, burst=1000, byte_rate=100, byte_burst=200)
    layer = TransportLayer(collector, rate_limit=limit, max_message_size=200, clock=clock)
    try:
        (bound,) = await layer.listen([ListenAddress("udp", "127.0.0.1", 0)])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            for _ in range(5):  # 5 x 92 bytes: the burst covers 2
                peer.sendto(MSG, ("127.0.0.1", bound.port))
            for _ in range(2):
                await collector.get()
            clock.now += 1.1  # 110 bytes back
            peer.sendto(MSG, ("127.0.0.1", bound.port))
            await collector.get()
            await asyncio.sleep(0.1)
            assert collector.queue.empty()
        assert layer.limiter is not None and layer.limiter.dropped == 3
    finally:
        await layer.close()


async def test_listen_raises_the_open_file_limit_and_caps_connections_below_it() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 256:
        pytest.skip(f"hard RLIMIT_NOFILE {hard}: nothing to test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
    layer = TransportLayer(Collector(), limits=TransportLimits(max_connections=10**9))
    try:
        await layer.listen([ListenAddress("tcp", "127.0.0.1", 0)])
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
        assert 0 < layer.connection_limit < hard  # descriptors left for everything else
        assert raise_open_file_limit() == hard
    finally:
        await layer.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
