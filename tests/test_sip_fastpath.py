"""The REGISTER fast path answers exactly as the general path does, or declines.

Every scenario runs twice, on a server with the fast path and on one without it (the
reference), with the same clock, users and nonce secret; the transcripts (every response,
nonces and To tags normalised) must be equal. Hypothesis mutates the requests (header case,
spacing, parameters, extra and missing headers, values) to probe the fast path's decisions.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pbxcore._sipscan as native
import pbxcore._sipscan_ref as reference_scanner
from pbxcore._sipscan_ref import Fields
from pbxcore.sip.auth import DigestAuthenticator, NonceStore
from pbxcore.sip.credentials import FileCredentialStore
from pbxcore.sip.fastpath import _PLAIN_CONTACT, RegisterFastPath
from pbxcore.sip.guard import BruteForceGuard, GuardPolicy
from pbxcore.sip.location import Binding, BindingChange, MemoryLocationService
from pbxcore.sip.registrar import Registrar
from pbxcore.sip.server import SipServer
from pbxcore.sip.stack import SipStack
from pbxcore.sip.transport import Source
from pbxcore.sip.uri import Uri

NOW = 1_700_000_000.0
PEER = ("127.0.0.1", 5070)
Scanner = Callable[[bytes], Fields | None]


class Channel:
    """Stands in for the UDP endpoint: keeps what the server sends."""

    transport = "udp"
    is_open = True

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str, int]] = []

    def send(self, data: bytes, host: str, port: int) -> bool:
        self.sent.append((data, host, port))
        return True


class Node:
    """A server (with or without the fast path) and what it answers."""

    def __init__(
        self,
        *,
        fast: bool,
        scan: Scanner = native.scan_register,
        guard: GuardPolicy | None = None,
        location: MemoryLocationService | None = None,
    ) -> None:
        store = FileCredentialStore()
        store.add_user("pbx.test", "alice", "secret")
        store.add_user("pbx.test", "bob", "hunter2")
        clock: Callable[[], float] = lambda: NOW  # noqa: E731
        nonces = NonceStore(secret=b"k" * 32, clock=clock)
        nonces._counter = itertools.count(7)  # the same nonces on both nodes
        self.registrar = Registrar(
            store,
            MemoryLocationService(clock=clock) if location is None else location,
            authenticator=DigestAuthenticator(store, nonces),
            guard=BruteForceGuard(guard or GuardPolicy(max_failures=3), clock=clock),
            clock=clock,
        )
        # no listening points: the test channel carries the answers
        self.server = SipStack(listen=[])
        self.registrar.attach(self.server)  # the general path; the fast one added below
        self.fast_hits = 0
        if fast:
            fast_path = RegisterFastPath(self.server, self.registrar, scan)
            handle = fast_path.handle

            def counting(data: bytes, source: Source) -> bool:
                taken = handle(data, source)
                self.fast_hits += taken
                return taken

            fast_path.handle = counting  # type: ignore[method-assign]
            self.server.add_fast_path(fast_path)
        self.channel = Channel()

    def send(self, data: bytes, source: tuple[str, int] = PEER) -> str | None:
        before = len(self.channel.sent)
        self.server.on_message(data, Source("udp", *source, self.channel))  # type: ignore[arg-type]
        if len(self.channel.sent) == before:
            return None
        data, host, port = self.channel.sent[-1]
        text = data.decode("utf-8", "replace")
        # what differs between two servers by design: nonces (counter) and tags (random)
        text = re.sub(r'nonce="[^"]*"', 'nonce="N"', text)
        for tag in (self.registrar.tag, self.server.tag):
            text = text.replace(f"tag={tag}", "tag=T")
        return f"-> {host}:{port}\n{text}"

    async def start(self) -> Node:
        await self.server.start()
        return self

    async def close(self) -> None:
        await self.server.stop()


def register(
    *,
    user: str = "alice",
    branch: str = "z9hG4bK-1",
    cseq: int = 1,
    authorization: str | None = None,
    via: str = "SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport",
    contact: str = "<sip:{user}@127.0.0.1:5070>",
    extra: tuple[str, ...] = (),
    call_id: str = "reg-1@127.0.0.1",
) -> list[str]:
    """The lines of a REGISTER as SIPp's bench scenario sends it."""
    lines = [
        "REGISTER sip:pbx.test SIP/2.0",
        "Via: " + via.format(branch=branch),
        f"From: <sip:{user}@pbx.test>;tag=12SIPpTag001",
        f"To: <sip:{user}@pbx.test>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "Contact: " + contact.format(user=user),
    ]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    lines += ["Max-Forwards: 70", "Expires: 3600", *extra, "Content-Length: 0"]
    return lines


def wire(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(
    response: str | None,
    *,
    user: str = "alice",
    password: str = "secret",
    nc: str = "00000001",
    realm: str = "pbx.test",
    uri: str = "sip:pbx.test",
) -> str:
    """An Authorization value answering the MD5 challenge of ``response`` (raw text)."""
    nonce = "none"  # no challenge: answer anyway, with a nonce the server never issued
    for line in (response or "").split("\r\n"):
        if line.startswith("WWW-Authenticate:") and "algorithm=MD5" in line:
            found = re.search(r'nonce="([^"]*)"', line)
            assert found is not None
            nonce = found[1]
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()
    digest = hashlib.md5(f"{ha1}:{nonce}:{nc}:c0ffee:auth:{ha2}".encode()).hexdigest()
    return (
        f'Digest username="{user}",realm="{realm}",nonce="{nonce}",uri="{uri}",'
        f'response="{digest}",algorithm=MD5,cnonce="c0ffee",qop=auth,nc={nc}'
    )


class Raw:
    """Sends to a node and keeps the raw (unnormalised) last answer for the digest."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.last: str | None = None

    def send(self, data: bytes, source: tuple[str, int] = PEER) -> str | None:
        shown = self.node.send(data, source)
        self.last = self.node.channel.sent[-1][0].decode() if shown is not None else None
        return shown


Scenario = Callable[[Raw], list[str | None]]


SCANNERS = [native.scan_register, reference_scanner.scan_register]


@pytest.fixture(params=SCANNERS, ids=["native", "ref"])
def scan(request: pytest.FixtureRequest) -> Scanner:
    return request.param  # type: ignore[no-any-return]


async def both(
    scenario: Scenario, scan: Scanner = native.scan_register
) -> tuple[list[str | None], int]:
    """The transcripts of ``scenario`` with and without the fast path (must be equal)."""
    fast = await Node(fast=True, scan=scan).start()
    reference = await Node(fast=False).start()
    try:
        got, want = scenario(Raw(fast)), scenario(Raw(reference))
    finally:
        await fast.close()
        await reference.close()
    assert got == want
    assert reference.fast_hits == 0
    return got, fast.fast_hits


def full_registration(
    first: Callable[..., list[str]] = register, second: Callable[..., list[str]] = register
) -> Scenario:
    def run(peer: Raw) -> list[str | None]:
        out = [peer.send(wire(first()))]
        out.append(
            peer.send(wire(second(branch="z9hG4bK-2", cseq=2, authorization=answer(peer.last))))
        )
        return out

    return run


async def test_plain_registration_takes_the_fast_path_and_matches(scan: Scanner) -> None:
    transcript, hits = await both(full_registration(), scan)
    assert hits == 2
    challenge, ok = transcript
    assert challenge is not None and ok is not None
    assert challenge.startswith("-> 127.0.0.1:5070\nSIP/2.0 401 Unauthorized\r\n")
    assert "received=127.0.0.1;rport=5070" in challenge
    assert ok.startswith("-> 127.0.0.1:5070\nSIP/2.0 200 OK\r\n")
    assert "Contact: <sip:alice@127.0.0.1:5070>;expires=3600\r\n" in ok


async def test_replay_retransmission_and_refresh(scan: Scanner) -> None:
    def run(peer: Raw) -> list[str | None]:
        out = [peer.send(wire(register()))]
        auth = answer(peer.last)
        second = wire(register(branch="z9hG4bK-2", cseq=2, authorization=auth))
        out.append(peer.send(second))
        out.append(peer.send(second))  # retransmission: the transaction answers again
        # the same nc on a new request: a replay, challenged again
        out.append(peer.send(wire(register(branch="z9hG4bK-3", cseq=3, authorization=auth))))
        nc2 = auth.replace("nc=00000001", "nc=00000002")  # response no longer matches
        out.append(peer.send(wire(register(branch="z9hG4bK-4", cseq=4, authorization=nc2))))
        return out

    transcript, hits = await both(run, scan)
    assert [t.split("\r\n")[0].split("\n")[1] for t in transcript if t] == [
        "SIP/2.0 401 Unauthorized",
        "SIP/2.0 200 OK",
        "SIP/2.0 200 OK",
        "SIP/2.0 401 Unauthorized",
        "SIP/2.0 403 Forbidden",
    ]
    # the challenge, the 200 and its retransmission (from the completed table); the
    # replay and the wrong answer took the general path
    assert hits == 3


async def test_bindings_of_one_aor_across_registrations(scan: Scanner) -> None:
    def run(peer: Raw) -> list[str | None]:
        out: list[str | None] = []

        def register_once(n: int, cseq: int, call_id: str, contact: str) -> None:
            out.append(peer.send(wire(register(branch=f"z9hG4bK-a{n}", call_id=call_id))))
            auth = answer(peer.last)
            again = register(
                branch=f"z9hG4bK-b{n}",
                cseq=cseq,
                authorization=auth,
                call_id=call_id,
                contact=contact,
            )
            out.append(peer.send(wire(again)))

        register_once(1, 5, "one@h", "<sip:{user}@10.0.0.1:5060>")
        register_once(2, 1, "two@h", "<sip:{user}@10.0.0.2:5060>;expires=600")  # a second
        register_once(3, 9, "one@h", "<sip:{user}@10.0.0.1:5060>;expires=900")  # refresh
        register_once(4, 3, "one@h", "<sip:{user}@10.0.0.1:5060>")  # older CSeq: 400
        register_once(5, 10, "one@h", "<sip:{user}@10.0.0.1:5060>;expires=0")  # remove
        register_once(6, 11, "one@h", "<sip:{user}@10.0.0.2:5060>")  # other Call-ID's
        return out

    transcript, hits = await both(run, scan)
    statuses = [t.split("\n")[1].split("\r")[0] for t in transcript if t]
    assert statuses[1::2] == [
        "SIP/2.0 200 OK",
        "SIP/2.0 200 OK",
        "SIP/2.0 200 OK",
        "SIP/2.0 400 Invalid CSeq number",
        "SIP/2.0 200 OK",
        "SIP/2.0 200 OK",
    ]
    assert hits == 12


async def test_contacts_that_differ_as_text_but_not_as_uris(scan: Scanner) -> None:
    def run(peer: Raw) -> list[str | None]:
        out: list[str | None] = []
        contacts = [
            "<sip:{user}@Host.Example:5070>",
            "<sip:{user}@10.0.0.3:5071>",
            "<sip:{user}@host.example:5070>",  # the first one again (host case)
            "<sip:{user}@host.example:5070;transport=udp>",  # a third (general path)
            "<sip:{user}@10.0.0.3:5071>",  # refresh the second
            "<sip:{user}@10.0.0.4>",  # a fourth, with a URI-parameter binding stored
            "<sip:{user}@host.example>",  # no port: not the first
        ]
        for n, contact in enumerate(contacts):
            out.append(peer.send(wire(register(branch=f"z9hG4bK-a{n}", call_id=f"c{n}"))))
            again = register(
                branch=f"z9hG4bK-b{n}",
                cseq=2,
                authorization=answer(peer.last),
                call_id=f"c{n}",
                contact=contact,
            )
            out.append(peer.send(wire(again)))
        return out

    transcript, _ = await both(run, scan)
    assert transcript[-1] is not None and transcript[-1].count("Contact: ") == 5


@settings(max_examples=300, deadline=None)
@given(
    first=st.tuples(
        st.sampled_from(["a", "A", "a.b"]),
        st.sampled_from(["h", "H", "h.x"]),
        st.sampled_from([None, 5060, 5070]),
    ),
    second=st.tuples(
        st.sampled_from(["a", "A", "a.b"]),
        st.sampled_from(["h", "H", "h.x"]),
        st.sampled_from([None, 5060, 5070]),
    ),
)
def test_plain_contact_key_is_uri_equality(
    first: tuple[str, str, int | None], second: tuple[str, str, int | None]
) -> None:
    def text(parts: tuple[str, str, int | None]) -> str:
        user, host, port = parts
        return f"sip:{user}@{host}" + ("" if port is None else f":{port}")

    def key(value: str) -> tuple[str, str, str | None]:
        match = _PLAIN_CONTACT.fullmatch(value)
        assert match is not None
        return match[1], match[2].lower(), match[3]

    a, b = text(first), text(second)
    assert (Uri.parse(a) == Uri.parse(b)) == (key(a) == key(b))


async def test_wrong_password_and_guard_ban_go_the_general_way(scan: Scanner) -> None:
    def run(peer: Raw) -> list[str | None]:
        out = []
        for n in range(5):
            out.append(peer.send(wire(register(branch=f"z9hG4bK-a{n}"))))
            auth = answer(peer.last, password="wrong")
            out.append(peer.send(wire(register(branch=f"z9hG4bK-b{n}", authorization=auth))))
        return out

    transcript, _ = await both(run, scan)
    assert "403 Forbidden" in (transcript[1] or "")
    assert transcript[-1] is None or "403" in transcript[-1]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param({}, {"contact": "<sip:{user}@127.0.0.1:5070>;expires=0"}, id="unregister"),
        pytest.param({}, {"contact": "<sip:{user}@127.0.0.1:5070>;expires=30"}, id="too-brief"),
        pytest.param({}, {"contact": "<sip:{user}@10.0.0.9>;expires=120"}, id="contact-expires"),
        pytest.param({}, {"contact": "*"}, id="wildcard"),
        pytest.param({}, {"extra": ("Max-Forwards: 0",)}, id="max-forwards-0"),
        pytest.param({"cseq": 0}, {"cseq": 0}, id="cseq-0"),
        pytest.param(
            {}, {"via": "SIP/2.0/UDP H.Example:5070;branch={branch};rport"}, id="via-case"
        ),
        pytest.param({}, {"contact": "<sip:{user}@127.0.0.1:65536>"}, id="contact-port"),
        pytest.param({"via": "SIP/2.0/UDP 127.0.0.1:65536;branch={branch}"}, {}, id="via-port"),
        pytest.param({}, {"user": "bob"}, id="other-user"),
        pytest.param({"via": "SIP/2.0/UDP 127.0.0.1:5070;branch={branch}"}, {}, id="no-rport"),
        pytest.param(
            {"via": "SIP/2.0/UDP 10.1.1.1:5070;branch={branch}"},
            {"via": "SIP/2.0/UDP 10.1.1.1;branch={branch}"},
            id="received",
        ),
        pytest.param({"via": "SIP/2.0/UDP h.example;rport;branch={branch}"}, {}, id="param-order"),
        pytest.param({"extra": ("Require: gruu",)}, {}, id="require"),
        pytest.param({"extra": ("Timestamp: 54",)}, {}, id="timestamp"),
        pytest.param({"extra": ("User-Agent: SIPp/3.6",)}, {}, id="user-agent"),
        pytest.param({"call_id": "a b"}, {}, id="bad-call-id"),
        pytest.param({}, {"contact": '"Alice" <sip:{user}@127.0.0.1:5070>;q=0.5'}, id="q"),
    ],
)
async def test_variants_answer_as_the_general_path(
    first: dict[str, object], second: dict[str, object], scan: Scanner
) -> None:
    def make(options: dict[str, object]) -> Callable[..., list[str]]:
        def build(**more: object) -> list[str]:
            return register(**{**options, **more})  # type: ignore[arg-type]

        return build

    await both(full_registration(make(first), make(second)), scan)


@pytest.mark.parametrize("uri", ["sip:other.test", "sip:pbx.test:5070", "sip:alice@pbx.test"])
async def test_digest_uri_other_than_the_request_uri_is_400(uri: str, scan: Scanner) -> None:
    def run(peer: Raw) -> list[str | None]:
        out = [peer.send(wire(register()))]
        auth = answer(peer.last, uri=uri)  # right password, response for another URI
        out.append(peer.send(wire(register(branch="z9hG4bK-2", cseq=2, authorization=auth))))
        return out

    transcript, _ = await both(run, scan)
    assert "SIP/2.0 400 Digest URI Is Not The Request-URI" in (transcript[1] or "")


@pytest.mark.parametrize("field", ["cnonce", "username", "response", "uri"])
async def test_undecodable_byte_in_credentials_is_400(field: str, scan: Scanner) -> None:
    def run(peer: Raw) -> list[str | None]:
        out = [peer.send(wire(register()))]
        data = wire(register(branch="z9hG4bK-2", cseq=2, authorization=answer(peer.last)))
        at = data.index(f'{field}="'.encode()) + len(field) + 3
        out.append(peer.send(data[:at] + b"\xff" + data[at:]))
        return out

    transcript, _ = await both(run, scan)
    assert (transcript[1] or "").split("\n")[1].startswith("SIP/2.0 400 ")


async def test_ipv6_source_is_left_to_the_general_path(scan: Scanner) -> None:
    def run(peer: Raw) -> list[str | None]:
        return [peer.send(wire(register()), ("::1", 5070))]

    transcript, hits = await both(run, scan)
    assert hits == 0 and transcript[0] is not None


def test_needs_a_location_service_with_immediate_operations() -> None:
    class Remote:
        """Only the two coroutines of LocationService (a database, say)."""

        async def lookup(self, aor: str) -> list[Binding]:
            return []

        async def modify(self, aor: str, change: BindingChange) -> list[Binding]:
            return change([])

    registrar = Registrar(FileCredentialStore(), Remote())
    server = SipServer(registrar, listen=[])
    assert server.handler("REGISTER") is not None and server.fast_paths == ()
    with pytest.raises(ValueError, match="immediate operations"):
        RegisterFastPath(server, registrar)
    memory = SipServer(Registrar(FileCredentialStore(), MemoryLocationService()), listen=[])
    assert [type(f) for f in memory.fast_paths] == [RegisterFastPath]
    assert SipServer(memory.registrar, listen=[], fast_path=False).fast_paths == ()


async def test_any_immediate_location_service_gets_the_fast_path() -> None:
    class Counting(MemoryLocationService):
        """A subclass (not the plain class): the fast path still works through it."""

        reads = 0

        def bindings_now(self, aor: str) -> tuple[list[Binding], float]:
            Counting.reads += 1  # only the fast path reads this way
            return super().bindings_now(aor)

    location = Counting(clock=lambda: NOW)
    node = await Node(fast=True, location=location).start()
    try:
        raw = Raw(node)
        raw.send(wire(register()))
        ok = raw.send(wire(register(branch="z9hG4bK-2", cseq=2, authorization=answer(raw.last))))
        assert ok is not None and "200 OK" in ok
        assert node.fast_hits == 2 and Counting.reads == 1
        assert [b.contact for b in location.bindings_now("sip:alice@pbx.test")[0]] == [
            "sip:alice@127.0.0.1:5070"
        ]
    finally:
        await node.close()


_MUTATIONS = st.sampled_from(
    [
        lambda s: s.upper(),
        lambda s: s.lower(),
        lambda s: s.replace(": ", ":"),
        lambda s: s.replace(": ", " : "),
        lambda s: s.replace(";", " ;", 1),
        lambda s: s + " ",
        lambda s: s.replace("<", "", 1),
        lambda s: s.replace("sip:", "sips:", 1),
        lambda s: s.replace("1", "99999999999", 1),
        lambda s: s.replace(":5070", ":99999"),
        lambda s: s.replace(":5070", ":0"),
        lambda s: s.replace("sip:", "sip:%41", 1),
        lambda s: s.replace("pbx.test", "PBX.Test"),
        lambda s: s.replace("=", "=%41", 1),
        lambda s: s.replace("@", "", 1),
        lambda s: s.replace('"', "", 1),
        lambda s: s.replace(",", ", ", 1),
        lambda s: s + ";x=1",
        lambda s: "",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    scan=st.sampled_from(SCANNERS),
    which=st.integers(0, 1),
    line=st.integers(0, 11),
    mutate=_MUTATIONS,
    duplicate=st.booleans(),
)
def test_mutated_registers_answer_as_the_general_path(
    scan: Scanner, which: int, line: int, mutate: Callable[[str], str], duplicate: bool
) -> None:
    def change(lines: list[str]) -> list[str]:
        index = min(line, len(lines) - 1)
        lines = list(lines)
        if duplicate and index:
            lines.insert(index, lines[index])
        else:
            lines[index] = mutate(lines[index])
        return [x for x in lines if x]

    def first(**more: object) -> list[str]:
        built = register(**more)  # type: ignore[arg-type]
        return change(built) if which == 0 else built

    def second(**more: object) -> list[str]:
        built = register(**more)  # type: ignore[arg-type]
        return change(built) if which == 1 else built

    asyncio.run(both(full_registration(first, second), scan))
