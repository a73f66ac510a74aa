"""SipServer end to end over real sockets: registrar, OPTIONS, errors, transactions."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxcore.sip import Request, Response, parse_message
from pbxcore.sip.credentials import FileCredentialStore
from pbxcore.sip.guard import BruteForceGuard, GuardAction, GuardPolicy
from pbxcore.sip.location import Binding, BindingChange, MemoryLocationService
from pbxcore.sip.registrar import Registrar
from pbxcore.sip.server import SipServer, server_key, stamp_via
from pbxcore.sip.transaction import TimerSettings, TransactionTimeoutError
from pbxcore.sip.transport import ListenAddress, Source, TransportLayer
from tests.helpers import require_binary
from tests.sip_helpers import RegisteringUA

FAMILIES = {"ipv4": "127.0.0.1", "ipv6": "::1"}


@pytest.fixture
async def registrar_server() -> AsyncIterator[SipServer]:
    store = FileCredentialStore()
    store.add_user("pbx.test", "alice", "secret")
    registrar = Registrar(store, MemoryLocationService())
    listen = ListenAddress.parse("127.0.0.1:0") + ListenAddress.parse("[::1]:0")
    async with SipServer(registrar, listen=listen) as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[SipServer]:
    listen = ListenAddress.parse("127.0.0.1:0") + ListenAddress.parse("[::1]:0")
    async with SipServer(None, listen=listen, timers=TimerSettings(t1=0.02, t2=0.16)) as node:
        yield node


def _request(method: str, uri: str = "sip:pbx.test", **extra: str) -> Request:
    headers = [
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@pbx.test>;tag=1928301774"),
        ("To", "<sip:alice@pbx.test>"),
        ("Call-ID", f"{method}-a84b4c76e66710"),
        ("CSeq", f"1 {method}"),
    ]
    headers += [(name.replace("_", "-"), value) for name, value in extra.items()]
    return Request(method, uri, headers)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
async def test_register_with_digest_over_every_transport(
    registrar_server: SipServer, client: SipServer, transport: str, family: str
) -> None:
    target = registrar_server.address(transport, family)  # type: ignore[arg-type]
    local = client.address(transport, family)  # type: ignore[arg-type]
    host = FAMILIES[family]
    contact = (
        f"sip:alice@[{host}]:{local.port}" if ":" in host else f"sip:alice@{host}:{local.port}"
    )
    ua = RegisteringUA("alice", "pbx.test", "secret", contact=contact)

    async def send(request: Request) -> Response:
        request.headers.remove("via")  # send_request adds its own
        return await client.send_request(request, target.transport, target.host, target.port)

    challenge = await send(ua.register())
    assert challenge.status == 401
    via = challenge.top_via
    assert via.received == host and via.rport is not None
    ok = await send(ua.register(authorization=ua.answer(challenge, algorithm="SHA-256")))
    assert ok.status == 200
    assert ok.headers.get("server") == "pbxcore"
    assert registrar_server.registrar is not None
    bindings = await registrar_server.registrar.location.lookup("sip:alice@pbx.test")
    assert [b.contact for b in bindings] == [contact]
    assert bindings[0].source.startswith(f"{transport}:")
    gone = await send(ua.register(expires=0, authorization=ua.answer(challenge)))
    assert gone.status == 200 and gone.headers.get_all("contact") == []


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_options_gets_200(
    registrar_server: SipServer, client: SipServer, transport: str
) -> None:
    target = registrar_server.address(transport)  # type: ignore[arg-type]
    response = await client.send_request(
        _request("OPTIONS"), target.transport, target.host, target.port
    )
    assert response.status == 200
    assert "REGISTER" in (response.headers.get("allow") or "")
    assert response.to.tag is not None


async def test_invite_gets_405_and_client_transaction_acks(
    registrar_server: SipServer, client: SipServer
) -> None:
    target = registrar_server.address("udp")
    invite = _request("INVITE", "sip:bob@pbx.test", Contact="<sip:alice@127.0.0.1>")
    response = await client.send_request(invite, "udp", target.host, target.port)
    assert response.status == 405
    # the ACK from the client transaction moves the server transaction to Confirmed
    await asyncio.sleep(0.2)
    tx = next(iter(registrar_server._server_tx.values()))
    assert tx.state.value == "confirmed"


async def test_unknown_method_gets_501(registrar_server: SipServer, client: SipServer) -> None:
    target = registrar_server.address("tcp")
    response = await client.send_request(_request("FOO"), "tcp", target.host, target.port)
    assert response.status == 501


async def test_cancel_without_transaction_gets_481(
    registrar_server: SipServer, client: SipServer
) -> None:
    target = registrar_server.address("udp")
    response = await client.send_request(_request("CANCEL"), "udp", target.host, target.port)
    assert response.status == 481


async def test_client_transaction_times_out(client: SipServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        with pytest.raises(TransactionTimeoutError):
            await client.send_request(_request("OPTIONS"), "udp", "127.0.0.1", port)
        silent.setblocking(False)
        count = 0
        while True:
            try:
                silent.recv(4096)
                count += 1
            except BlockingIOError:
                break
        assert count >= 5  # timer E retransmissions


class RawUdp:
    def __init__(self, server: SipServer, family: str = "ipv4") -> None:
        self.target = server.address("udp", family)
        af = socket.AF_INET6 if family == "ipv6" else socket.AF_INET
        self.sock = socket.socket(af, socket.SOCK_DGRAM)
        self.sock.bind((FAMILIES[family], 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, (self.target.host, self.target.port))

    async def recv(self, timeout: float = 3.0) -> Response:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 65535), timeout)
        message = parse_message(data)
        assert isinstance(message, Response)
        return message

    async def silent(self, timeout: float = 0.3) -> bool:
        try:
            await self.recv(timeout)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


def _raw(method: str, port: int, extra: str = "", *, via: str | None = None) -> bytes:
    via = via or f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKraw{method}{len(extra)}"
    return (
        f"{method} sip:pbx.test SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
        f"From: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:alice@pbx.test>\r\n"
        f"Call-ID: raw-{method}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (lambda p: _raw("OPTIONS", p).replace(b"Call-ID: raw-OPTIONS\r\n", b""), 400),
        (lambda p: _raw("OPTIONS", p).replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1), 505),
        (lambda p: _raw("OPTIONS", p, "Require: 100rel, foo\r\n"), 420),
        (lambda p: _raw("OPTIONS", p).replace(b"sip:pbx.test", b"mailto:x@pbx.test", 1), 416),
        (lambda p: _raw("OPTIONS", p).replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"), 400),
    ],
)
async def test_bad_requests_get_the_status_the_parser_names(
    registrar_server: SipServer, data: object, status: int
) -> None:
    peer = RawUdp(registrar_server)
    try:
        peer.send(data(peer.port))  # type: ignore[operator]
        response = await peer.recv()
        assert response.status == status
        if status == 420:
            assert response.headers.get_all("unsupported") == ["100rel", "foo"]
    finally:
        peer.close()


async def test_garbage_and_bad_responses_are_dropped(registrar_server: SipServer) -> None:
    peer = RawUdp(registrar_server)
    try:
        peer.send(b"\x00\x01garbage that is not SIP at all\r\n\r\n")
        peer.send(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKnope\r\n\r\n")
        peer.send(_raw("ACK", peer.port).replace(b"Call-ID: raw-ACK\r\n", b""))
        assert await peer.silent()
        assert registrar_server.stats["dropped"] >= 2
    finally:
        peer.close()


async def test_retransmitted_register_is_absorbed(registrar_server: SipServer) -> None:
    peer = RawUdp(registrar_server)
    ua = RegisteringUA("alice", "pbx.test", "secret", contact=f"sip:alice@127.0.0.1:{peer.port}")
    via = f"SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bK{{n}};rport"
    try:
        peer.send(bytes(ua.register(via=via)))
        challenge = await peer.recv()
        assert challenge.status == 401
        request = bytes(ua.register(via=via, authorization=ua.answer(challenge)))
        peer.send(request)
        first = await peer.recv()
        peer.send(request)  # a retransmission: same branch, same answer, no new nonce use
        second = await peer.recv()
        assert first.status == second.status == 200
        assert bytes(first) == bytes(second)
    finally:
        peer.close()


async def test_response_without_rport_goes_to_via_port(registrar_server: SipServer) -> None:
    peer = RawUdp(registrar_server)
    listener = RawUdp(registrar_server)
    try:
        # the request comes from one port but names another in its Via (no rport)
        via = f"SIP/2.0/UDP 127.0.0.1:{listener.port};branch=z9hG4bKvia"
        peer.send(_raw("OPTIONS", peer.port, via=via))
        response = await listener.recv()
        assert response.status == 200 and response.top_via.received is None
        assert await peer.silent()
    finally:
        peer.close()
        listener.close()


async def test_ipv6_raw_options_and_received(registrar_server: SipServer) -> None:
    peer = RawUdp(registrar_server, "ipv6")
    try:
        via = "SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bKv6;rport"
        peer.send(_raw("OPTIONS", peer.port, via=via))
        response = await peer.recv()
        assert response.status == 200
        assert response.top_via.received == "::1" and response.top_via.rport == peer.port
    finally:
        peer.close()


def test_server_key_branch_and_rfc2543_fallback() -> None:
    invite = _request("INVITE")
    invite.headers.add("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc", first=True)
    ack = _request("ACK")
    ack.headers.add("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc", first=True)
    assert server_key(invite) == server_key(ack)
    old_invite = _request("INVITE")
    old_invite.headers.add("Via", "SIP/2.0/UDP 10.0.0.1:5060", first=True)
    old_ack = _request("ACK")
    old_ack.headers.add("Via", "SIP/2.0/UDP 10.0.0.1:5060", first=True)
    old_ack.headers.set("To", "<sip:alice@pbx.test>;tag=ours")
    old_ack.headers.set("Call-ID", old_invite.call_id)
    old_ack.headers.set("CSeq", "1 ACK")
    assert server_key(old_invite) == server_key(old_ack)
    other = _request("INVITE")
    other.headers.add("Via", "SIP/2.0/UDP 10.0.0.1:5060", first=True)
    other.headers.set("CSeq", "2 INVITE")
    assert server_key(other) != server_key(old_invite)


def test_stamp_via_received_and_rport() -> None:
    class Dummy:
        pass

    request = _request("OPTIONS")
    request.headers.add("Via", "SIP/2.0/UDP host.example:5070;branch=z9hG4bKx;rport", first=True)
    request.headers.add("Via", "SIP/2.0/UDP second.example;branch=z9hG4bKy")
    stamp_via(request, Source("udp", "192.0.2.4", 40000, Dummy()))  # type: ignore[arg-type]
    assert request.top_via.received == "192.0.2.4" and request.top_via.rport == 40000
    assert len(request.via) == 2 and request.via[1].host == "second.example"
    same = _request("OPTIONS")
    same.headers.add("Via", "SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKz", first=True)
    stamp_via(same, Source("udp", "192.0.2.4", 5060, Dummy()))  # type: ignore[arg-type]
    assert same.top_via.received is None


class SlowLocation(MemoryLocationService):
    """A location service that suspends, like a database-backed one."""

    async def modify(self, aor, change):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.02)
        await asyncio.sleep(0)
        return await super().modify(aor, change)


async def test_register_with_a_suspending_location_service(client: SipServer) -> None:
    store = FileCredentialStore()
    store.add_user("pbx.test", "alice", "secret")
    registrar = Registrar(store, SlowLocation())
    async with SipServer(registrar, listen=ListenAddress.parse("127.0.0.1:0")) as server:
        target = server.address("udp")
        ua = RegisteringUA("alice", "pbx.test", "secret")

        async def send(request: Request) -> Response:
            request.headers.remove("via")
            return await client.send_request(request, "udp", target.host, target.port)

        challenge = await send(ua.register())
        ok = await send(ua.register(authorization=ua.answer(challenge)))
        assert ok.status == 200 and len(ok.headers.get_all("contact")) == 1
        assert not server._tasks  # the task that finished the REGISTER is gone


async def test_stop_cancels_a_suspended_register() -> None:
    class Stuck:
        """A location service that never answers (no immediate operations: no fast path)."""

        async def lookup(self, aor: str) -> list[Binding]:
            return []

        async def modify(self, aor: str, change: BindingChange) -> list[Binding]:
            await asyncio.Event().wait()
            return []

    store = FileCredentialStore()
    store.add_user("pbx.test", "alice", "secret")
    server = SipServer(Registrar(store, Stuck()), listen=ListenAddress.parse("udp:127.0.0.1:0"))
    await server.start()
    peer = RawUdp(server)
    ua = RegisteringUA("alice", "pbx.test", "secret")
    via = f"SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bK{{n}};rport"
    try:
        peer.send(bytes(ua.register(via=via)))
        challenge = await peer.recv()
        peer.send(bytes(ua.register(via=via, authorization=ua.answer(challenge))))
        for _ in range(100):
            if server._tasks:
                break
            await asyncio.sleep(0.01)
        assert len(server._tasks) == 1
    finally:
        await asyncio.wait_for(server.stop(), 5)
        peer.close()
    assert not server._tasks


async def test_options_over_tls(tmp_path: Path) -> None:
    openssl = require_binary("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listen = ListenAddress.parse("tls:127.0.0.1:0")
    async with SipServer(None, listen=listen, ssl_context=context) as server:
        target = server.address("tls")
        client_context = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", target.port, ssl=client_context, server_hostname="127.0.0.1"
        )
        request = _request("OPTIONS")
        request.headers.add("Via", "SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKtls;rport", first=True)
        writer.write(bytes(request))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        response = parse_message(head)
        assert isinstance(response, Response) and response.status == 200
        assert response.top_via.received == "127.0.0.1"
        writer.close()


class _NullChannel:
    transport = "udp"
    is_open = True

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes, host: str, port: int) -> bool:
        self.sent.append(data)
        return True


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


_SAMPLE = (
    b"REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKf;rport\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:alice@pbx.test>\r\n"
    b"Call-ID: fuzz\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@10.0.0.1>;expires=60\r\n"
    b'Authorization: Digest username="alice", realm="pbx.test", nonce="x", uri="sip:pbx.test",'
    b' response="00", qop=auth, nc=00000001, cnonce="c"\r\nContent-Length: 0\r\n\r\n'
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(_SAMPLE) - 1), st.binary(min_size=0, max_size=4)),
        max_size=6,
    )
)
async def test_mutated_requests_never_break_the_server(
    mutations: list[tuple[int, bytes]],
) -> None:
    data = bytearray(_SAMPLE)
    for position, replacement in mutations:
        data[position : position + len(replacement)] = replacement
    store = FileCredentialStore()
    store.add_user("pbx.test", "alice", "secret")
    server = SipServer(Registrar(store, MemoryLocationService()), listen=[])
    server._loop = asyncio.get_running_loop()
    channel = _NullChannel()
    errors = _ErrorRecords()
    server_log = logging.getLogger("pbxcore.sip.server")
    server_log.addHandler(errors)
    try:
        server.on_message(bytes(data), Source("udp", "10.0.0.1", 5060, channel))  # type: ignore[arg-type]
        await asyncio.sleep(0)
    finally:
        server_log.removeHandler(errors)
    assert errors.records == []  # on_message logs (instead of raising) what it failed on
    for sent in channel.sent:
        response = parse_message(sent)
        assert isinstance(response, Response) and response.status >= 200
    await server.stop()


async def test_guard_drops_banned_source_silently() -> None:
    store = FileCredentialStore()
    store.add_user("pbx.test", "alice", "secret")
    guard = BruteForceGuard(GuardPolicy(max_failures=2, action=GuardAction.DROP, ban_time=60))
    registrar = Registrar(store, MemoryLocationService(), guard=guard)
    async with SipServer(registrar, listen=ListenAddress.parse("udp:127.0.0.1:0")) as server:
        peer = RawUdp(server)
        ua = RegisteringUA("alice", "pbx.test", "wrong")
        via = f"SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bK{{n}};rport"
        try:
            for _ in range(2):
                peer.send(bytes(ua.register(via=via)))
                challenge = await peer.recv()
                assert challenge.status == 401
                peer.send(bytes(ua.register(via=via, authorization=ua.answer(challenge))))
                assert (await peer.recv()).status == 403
            # banned: no challenge, no answer at all, even with the right password
            good = RegisteringUA("alice", "pbx.test", "secret")
            peer.send(bytes(good.register(via=via)))
            assert await peer.silent()
            peer.send(_raw("OPTIONS", peer.port))  # other methods still work
            assert (await peer.recv()).status == 200
        finally:
            peer.close()


@pytest.mark.parametrize("claimed", ["192.0.2.99", "evil.example", "::1"])
@pytest.mark.parametrize("method", ["OPTIONS", "INVITE"])
async def test_responses_go_to_the_real_source_not_a_received_the_sender_wrote(
    registrar_server: SipServer, claimed: str, method: str
) -> None:
    # RFC 3261 §18.2.1: received is set from the packet's source, whatever the Via says
    peer = RawUdp(registrar_server)
    via = f"SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bKrecv{method};received={claimed}"
    try:
        for round_ in range(3):  # retransmissions too: the transaction still answers
            peer.send(_raw(method, peer.port, via=via))
            response = await peer.recv()
            if method == "INVITE" and round_ == 0:
                assert response.status == 100
                response = await peer.recv()
            assert response.status == (200 if method == "OPTIONS" else 405)
            assert response.top_via.received == "127.0.0.1"
            assert response.top_via.params.get("received") == "127.0.0.1"
        assert registrar_server.transport.send_errors == 0
    finally:
        peer.close()


async def test_an_unparseable_request_is_answered_toward_its_real_source(
    registrar_server: SipServer,
) -> None:
    peer = RawUdp(registrar_server)
    via = f"SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bKbad;received=192.0.2.1"
    try:
        bad = _raw("OPTIONS", peer.port, via=via).replace(b"CSeq: 1 OPTIONS", b"CSeq: x OPTIONS")
        peer.send(bad)
        response = await peer.recv()
        assert response.status == 400 and response.top_via.received == "127.0.0.1"
    finally:
        peer.close()


def test_a_failing_send_is_counted_and_never_raised() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def run() -> int:
        layer = TransportLayer(lambda data, source: None)
        await layer.listen(ListenAddress.parse("udp:127.0.0.1:0"))
        try:
            # a name, not an address: uvloop's sendto raises ValueError at once
            assert layer.send(b"OPTIONS", "udp", "no-such-host.invalid", 5060) is False
            assert layer.send(b"OPTIONS", "udp", "no-such-host.invalid", 5060) is False
            return layer.send_errors
        finally:
            await layer.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(run()) == 2
