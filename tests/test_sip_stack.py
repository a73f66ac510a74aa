"""SipStack: dispatch to handlers, dialogs, the UAS and UAC cores, over real sockets.

Two stacks talk to each other, or a stack talks to a raw UDP peer written here that
plays the other side byte by byte (forked answers, the CANCEL/200 race). SIPp drives
the same paths in tests/test_interop_stack.py.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import re
import socket
import weakref
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxcore.sip import Request, Response, parse_message
from pbxcore.sip.auth import DigestAuthenticator, parse_authorization
from pbxcore.sip.credentials import FileCredentialStore
from pbxcore.sip.dialog import DialogState
from pbxcore.sip.stack import (
    IncomingRequest,
    SipStack,
    StaticCredentials,
    Target,
    parse_challenge,
)
from pbxcore.sip.transaction import TimerSettings
from pbxcore.sip.transport import ListenAddress

FAST = TimerSettings(t1=0.02, t2=0.16)
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\n"
)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[SipStack, SipStack]]:
    listen = ListenAddress.parse("127.0.0.1:0")
    async with (
        SipStack(listen=listen, timers=FAST) as a,
        SipStack(listen=listen, timers=FAST) as b,
    ):
        yield a, b


def _target(stack: SipStack, transport: str = "udp") -> Target:
    address = stack.address(transport)  # type: ignore[arg-type]
    return Target(address.transport, address.host, address.port)


def _invite(a: SipStack, b: SipStack, transport: str = "udp", body: bytes = SDP) -> Request:
    target = _target(b, transport)
    suffix = ";transport=tcp" if transport == "tcp" else ""
    return a.new_request(
        "INVITE",
        f"sip:bob@{target.host}:{target.port}{suffix}",
        from_="<sip:alice@pbx.test>",
        target=target,
        body=body,
        headers=[("Content-Type", "application/sdp")] if body else [],
    )


async def _eventually(check: object, tries: int = 200) -> None:
    for _ in range(tries):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


# -- dispatch ---------------------------------------------------------------------------------


async def test_methods_without_a_handler(pair: tuple[SipStack, SipStack]) -> None:
    a, b = pair
    target = _target(b)
    uri = f"sip:bob@{target.host}:{target.port}"
    options = await a.request(a.new_request("OPTIONS", uri, from_="<sip:a@x>"))
    assert options.status == 200
    assert options.headers.get("allow") == "OPTIONS"
    message = await a.request(a.new_request("MESSAGE", uri, from_="<sip:a@x>"))
    assert message.status == 405 and message.headers.get("allow") == "OPTIONS"
    b.set_handler("INVITE", lambda incoming: incoming.respond(486))
    options = await a.request(a.new_request("OPTIONS", uri, from_="<sip:a@x>"))
    assert options.headers.get_all("allow") == ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"]
    # an in-dialog-only request with no dialog, and one naming a dialog that does not exist
    bye = await a.request(a.new_request("BYE", uri, from_="<sip:a@x>"))
    assert bye.status == 481
    info = a.new_request("INFO", uri, from_="<sip:a@x>", to=f"<{uri}>;tag=nosuch")
    assert (await a.request(info)).status == 481
    with pytest.raises(ValueError, match="unknown method"):
        b.set_handler("FOO", lambda incoming: None)


async def test_unknown_method_gets_501(pair: tuple[SipStack, SipStack]) -> None:
    a, b = pair
    target = _target(b)
    foo = Request(
        "FOO",
        f"sip:bob@{target.host}:{target.port}",
        [
            ("From", "<sip:a@x>;tag=1"),
            ("To", "<sip:b@x>"),
            ("Call-ID", "foo-1"),
            ("CSeq", "1 FOO"),
        ],
    )
    assert (await a.send_request(foo, "udp", target.host, target.port)).status == 501


async def test_a_failing_handler_gets_500_and_the_stack_goes_on(
    pair: tuple[SipStack, SipStack],
) -> None:
    a, b = pair

    def broken(incoming: IncomingRequest) -> None:
        raise RuntimeError("bug")

    async def broken_later(incoming: IncomingRequest) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("bug")

    target = _target(b)
    uri = f"sip:bob@{target.host}:{target.port}"
    b.set_handler("MESSAGE", broken)
    assert (await a.request(a.new_request("MESSAGE", uri, from_="<sip:a@x>"))).status == 500
    b.set_handler("MESSAGE", broken_later)
    assert (await a.request(a.new_request("MESSAGE", uri, from_="<sip:a@x>"))).status == 500
    b.set_handler("MESSAGE", lambda incoming: incoming.respond(202))
    assert (await a.request(a.new_request("MESSAGE", uri, from_="<sip:a@x>"))).status == 202


async def test_stateless_check_answers_without_a_transaction(
    pair: tuple[SipStack, SipStack],
) -> None:
    a, b = pair
    seen: list[str] = []

    def stateless(request: Request, source: object) -> bool:
        return request.headers.get("subject") == "spam"  # True: dropped, no answer at all

    b.set_handler("MESSAGE", lambda incoming: seen.append("handled") or incoming.respond(200))
    b.set_handler("MESSAGE", b.handler("MESSAGE"), stateless=stateless)  # type: ignore[arg-type]
    target = _target(b)
    uri = f"sip:bob@{target.host}:{target.port}"
    ok = await a.request(a.new_request("MESSAGE", uri, from_="<sip:a@x>"))
    assert ok.status == 200 and seen == ["handled"]
    a_timers = TimerSettings(t1=0.01, t2=0.02)
    async with SipStack(listen=ListenAddress.parse("127.0.0.1:0"), timers=a_timers) as quick:
        spam = quick.new_request("MESSAGE", uri, from_="<sip:a@x>", headers=[("Subject", "spam")])
        with pytest.raises(TimeoutError):
            await quick.request(spam)
    assert seen == ["handled"]


# -- calls between two stacks ---------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_call_with_ringing_answer_ack_and_bye_from_either_side(
    pair: tuple[SipStack, SipStack], transport: str
) -> None:
    a, b = pair
    acks: list[Request] = []

    async def on_invite(incoming: IncomingRequest) -> None:
        incoming.respond(180)
        await asyncio.sleep(0.01)
        incoming.respond(200, body=SDP, content_type="application/sdp")
        acks.append(await incoming.wait_ack())

    byes: list[str] = []

    def on_bye(incoming: IncomingRequest) -> None:
        byes.append(incoming.request.call_id)
        incoming.respond(200)

    b.set_handler("INVITE", on_invite)
    for stack in (a, b):
        stack.set_handler("BYE", on_bye)
    for round_, hangup in enumerate(("caller", "callee")):
        invite = await a.invite(_invite(a, b, transport))
        statuses = [response.status async for response in invite.responses()]
        assert statuses == [100, 180, 200]
        final = await invite.final
        assert final.body == SDP and final.contact and final.to.tag is not None
        dialog = invite.dialog
        assert dialog is not None and dialog.state is DialogState.CONFIRMED
        await _eventually(lambda n=round_ + 1: len(acks) == n)
        assert acks[-1].cseq == (invite.request.cseq[0], "ACK")
        assert a.dialog_count == 1 and b.dialog_count == 1
        if hangup == "caller":
            bye = await a.request(dialog.new_request("BYE"), dialog=dialog)
        else:
            far = b.find_dialog(
                type(dialog.id)(dialog.call_id, dialog.remote_tag, dialog.local_tag)
            )
            assert far is not None
            bye = await b.request(far.new_request("BYE"), dialog=far)
        assert bye.status == 200
        await _eventually(lambda: a.dialog_count == 0 and b.dialog_count == 0)
    assert len(byes) == 2


async def test_in_dialog_requests_refresh_the_target_and_check_cseq(
    pair: tuple[SipStack, SipStack],
) -> None:
    a, b = pair
    b.set_handler("INVITE", lambda incoming: incoming.respond(200, body=SDP))
    b.set_handler("UPDATE", lambda incoming: incoming.respond(200))
    b.set_handler("INFO", lambda incoming: incoming.respond(200))
    invite = await a.invite(_invite(a, b))
    assert (await invite.final).status == 200
    dialog = invite.dialog
    assert dialog is not None
    # a re-INVITE in the dialog (hold), answered, ACKed
    reinvite = await a.invite(dialog.new_request("INVITE", body=SDP), dialog=dialog)
    assert (await reinvite.final).status == 200
    # UPDATE with a new Contact: the far side's remote target follows
    far = b.find_dialog(type(dialog.id)(dialog.call_id, dialog.remote_tag, dialog.local_tag))
    assert far is not None
    moved = dialog.new_request("UPDATE", [("Contact", "<sip:alice@127.0.0.1:5999>")])
    assert (await a.request(moved, dialog=dialog)).status == 200
    assert str(far.remote_target) == "sip:alice@127.0.0.1:5999"
    # a request with a CSeq lower than one already seen: 500 (§12.2.2)
    stale = dialog.new_request("INFO", cseq=1)
    assert (await a.request(stale, dialog=None, target=_target(b))).status == 500


async def test_cancel_after_ringing(pair: tuple[SipStack, SipStack]) -> None:
    a, b = pair
    cancelled: list[bool] = []
    ringing = asyncio.Event()

    async def on_invite(incoming: IncomingRequest) -> None:
        incoming.on_cancel(lambda: cancelled.append(incoming.cancelled))
        incoming.respond(180)
        ringing.set()

    b.set_handler("INVITE", on_invite)
    invite = await a.invite(_invite(a, b))
    await ringing.wait()
    await _eventually(lambda: any(r.status == 180 for r in invite.provisionals))
    invite.cancel()
    final = await invite.final
    assert final.status == 487 and invite.cancelled and cancelled == [True]
    await _eventually(lambda: b.dialog_count == 0)


async def test_cancel_callbacks_are_released_with_the_final_response(
    pair: tuple[SipStack, SipStack],
) -> None:
    """The INVITE's transaction outlives the call (timer L): what a cancel callback holds
    (a B2BUA's whole call) must not live on with it once the final response is sent."""
    a, b = pair

    class Held:
        def run(self) -> None:
            raise AssertionError("a CANCEL after the final response has no effect")

    held: list[weakref.ref[Held]] = []

    async def on_invite(incoming: IncomingRequest) -> None:
        thing = Held()
        held.append(weakref.ref(thing))
        incoming.on_cancel(thing.run)
        incoming.respond(200, body=SDP, content_type="application/sdp")

    b.set_handler("INVITE", on_invite)
    invite = await a.invite(_invite(a, b))
    assert (await invite.final).status == 200
    await _eventually(lambda: bool(held) and held[0]() is None)
    assert invite.dialog is not None
    assert (await a.request(invite.dialog.new_request("BYE"), dialog=invite.dialog)).status == 200


async def test_an_answered_invite_is_not_kept_for_its_transaction(
    pair: tuple[SipStack, SipStack],
) -> None:
    """The stack keeps an INVITE for CANCEL matching while its transaction lives (timer L,
    64*T1 after a 2xx): once answered, only its To tag stays, not the request, its dialog
    and what the handler hung on them."""
    a, b = pair

    async def on_invite(incoming: IncomingRequest) -> None:
        incoming.respond(200, body=SDP, content_type="application/sdp")

    def incoming_requests() -> int:
        return sum(isinstance(o, IncomingRequest) for o in gc.get_objects())

    b.set_handler("INVITE", on_invite)
    before = incoming_requests()
    invite = await a.invite(_invite(a, b))
    assert (await invite.final).status == 200
    assert invite.dialog is not None
    assert (await a.request(invite.dialog.new_request("BYE"), dialog=invite.dialog)).status == 200
    await _eventually(lambda: incoming_requests() <= before)


async def test_cancel_before_any_provisional_waits_for_one(
    pair: tuple[SipStack, SipStack],
) -> None:
    a, b = pair
    gate = asyncio.Event()

    async def on_invite(incoming: IncomingRequest) -> None:
        await gate.wait()
        incoming.respond(180)

    b.set_handler("INVITE", on_invite)
    invite = await a.invite(_invite(a, b))
    invite.cancel()  # only 100 so far, or nothing: the CANCEL waits for a provisional
    gate.set()
    assert (await invite.final).status == 487


async def test_uac_answers_a_proxy_challenge_with_stored_credentials(
    pair: tuple[SipStack, SipStack],
) -> None:
    a, b = pair
    store = FileCredentialStore()
    store.add_user("carrier.test", "trunk1", "s3cret")
    checker = DigestAuthenticator(store)
    seen: list[str] = []

    def on_invite(incoming: IncomingRequest) -> None:
        value = incoming.request.headers.get("proxy-authorization")
        if value is None:
            challenges = checker.challenges("carrier.test")
            incoming.respond(407, headers=[("Proxy-Authenticate", c) for c in challenges])
            return
        credentials = parse_authorization(value)
        seen.append(credentials.algorithm)
        outcome = checker.verify(
            "INVITE", credentials, "carrier.test", request_uri=incoming.request.uri
        )
        # the verdict agrees with a digest recomputed here, without the code under test
        assert _digest_matches(value, "INVITE", "s3cret") == (outcome.value == "ok")
        incoming.respond(200 if outcome.value == "ok" else 403, body=SDP)

    b.set_handler("INVITE", on_invite)
    invite = await a.invite(_invite(a, b), credentials=StaticCredentials("trunk1", "s3cret"))
    final = await invite.final
    assert final.status == 200 and seen == ["SHA-256"]
    assert invite.request.cseq[0] == 2  # the retry is a new request with the next CSeq
    wrong = await a.invite(_invite(a, b), credentials=StaticCredentials("trunk1", "nope"))
    assert (await wrong.final).status == 403
    none = await a.invite(_invite(a, b))
    assert (await none.final).status == 407  # no credentials: the challenge is the answer


async def test_non_invite_auth_answers_once_per_realm(pair: tuple[SipStack, SipStack]) -> None:
    a, b = pair
    store = FileCredentialStore()
    store.add_user("carrier.test", "trunk1", "s3cret")
    checker = DigestAuthenticator(store)
    attempts: list[int] = []

    def on_message(incoming: IncomingRequest) -> None:
        attempts.append(incoming.request.cseq[0])
        value = incoming.request.headers.get("authorization")
        if value is not None:
            outcome = checker.verify(
                "MESSAGE",
                parse_authorization(value),
                "carrier.test",
                request_uri=incoming.request.uri,
            )
            if outcome.value == "ok":
                incoming.respond(200)
                return
        challenges = checker.challenges("carrier.test")
        incoming.respond(401, headers=[("WWW-Authenticate", c) for c in challenges])

    b.set_handler("MESSAGE", on_message)
    target = _target(b)
    uri = f"sip:bob@{target.host}:{target.port}"
    ok = await a.request(
        a.new_request("MESSAGE", uri, from_="<sip:a@x>"),
        credentials=StaticCredentials("trunk1", "s3cret"),
    )
    assert ok.status == 200 and attempts == [1, 2]
    bad = await a.request(
        a.new_request("MESSAGE", uri, from_="<sip:a@x>"),
        credentials=StaticCredentials("trunk1", "wrong"),
    )
    assert bad.status == 401 and attempts[2:] == [1, 2]  # one answer, then give up


def _digest_matches(value: str, method: str, password: str) -> bool:
    """Whether the digest the stack sent is right for ``password``, recomputed here with
    hashlib (RFC 7616 §3.4.1)."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', value.removeprefix("Digest ")))
    h = hashlib.sha256 if params["algorithm"] == "SHA-256" else hashlib.md5

    def hx(text: str) -> str:
        return h(text.encode()).hexdigest()

    ha1 = hx(f"{params['username']}:{params['realm']}:{password}")
    ha2 = hx(f"{method}:{params['uri']}")
    expected = hx(
        f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}"
    )
    return params["response"] == expected


# -- a raw peer: forked answers, the CANCEL/200 race, lost ACKs --------------------------------


class RawPeer:
    """A UDP socket that plays a UAS by hand."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.source: tuple[str, int] | None = None

    async def recv(self, timeout: float = 3.0) -> Request:
        loop = asyncio.get_running_loop()
        while True:
            data, source = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 65535), timeout)
            message = parse_message(data)
            if isinstance(message, Request):
                self.source = source
                return message

    async def expect(self, method: str) -> Request:
        while True:
            request = await self.recv()
            if request.method == method:
                return request

    def answer(self, request: Request, status: int, tag: str | None, body: bytes = b"") -> Response:
        headers = [(name, value) for name, value in request.headers if name.lower() in (
            "via", "from", "call-id", "cseq")]  # fmt: skip
        to = request.headers.get("to") or ""
        headers.append(("To", f"{to};tag={tag}" if tag and "tag=" not in to else to))
        if status < 300 and request.method == "INVITE":
            headers.append(("Contact", f"<sip:bob@127.0.0.1:{self.port}>"))
        response = Response(status, None, headers, body)
        assert self.source is not None
        self.sock.sendto(bytes(response), self.source)
        return response

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def uac() -> AsyncIterator[SipStack]:
    async with SipStack(listen=ListenAddress.parse("127.0.0.1:0"), timers=FAST) as stack:
        yield stack


def _invite_to(stack: SipStack, peer: RawPeer) -> Request:
    return stack.new_request(
        "INVITE", f"sip:bob@127.0.0.1:{peer.port}", from_="<sip:alice@pbx.test>", body=SDP
    )


async def test_forked_2xx_are_each_acked_and_the_extra_fork_released(uac: SipStack) -> None:
    peer = RawPeer()
    try:
        invite = await uac.invite(_invite_to(uac, peer))
        request = await peer.expect("INVITE")
        peer.answer(request, 180, "fork1")
        peer.answer(request, 183, "fork2", SDP)
        peer.answer(request, 200, "fork1", SDP)
        ack1 = await peer.expect("ACK")
        assert ack1.to.tag == "fork1" and ack1.cseq == (request.cseq[0], "ACK")
        assert ack1.top_via.branch != request.top_via.branch  # a new transaction (§13.2.2.4)
        peer.answer(request, 200, "fork2", SDP)  # the second fork answers too
        ack2 = await peer.expect("ACK")
        assert ack2.to.tag == "fork2"
        bye = await peer.expect("BYE")
        assert bye.to.tag == "fork2"
        peer.answer(bye, 200, None)
        peer.answer(request, 200, "fork1", SDP)  # a retransmission of the first 2xx
        again = await peer.expect("ACK")
        assert again.to.tag == "fork1" and bytes(again) == bytes(ack1)
        final = await invite.final
        assert final.to.tag == "fork1"
        assert invite.dialog is not None and invite.dialog.remote_tag == "fork1"
        assert [r.status for r in invite.provisionals] == [180, 183]
        assert set(invite.early) == {"fork2"} or not invite.early
        await _eventually(lambda: uac.dialog_count == 1)
    finally:
        peer.close()


async def test_cancel_crossing_a_200_acks_then_byes(uac: SipStack) -> None:
    peer = RawPeer()
    try:
        invite = await uac.invite(_invite_to(uac, peer))
        request = await peer.expect("INVITE")
        peer.answer(request, 180, "t1")
        await _eventually(lambda: bool(invite.provisionals))
        invite.cancel()
        cancel = await peer.expect("CANCEL")
        assert cancel.top_via.branch == request.top_via.branch
        assert cancel.cseq == (request.cseq[0], "CANCEL")
        peer.answer(request, 200, "t1", SDP)  # the callee answered before the CANCEL arrived
        peer.answer(cancel, 200, "t1")
        ack = await peer.expect("ACK")
        bye = await peer.expect("BYE")
        assert ack.to.tag == "t1" and bye.to.tag == "t1"
        peer.answer(bye, 200, None)
        final = await invite.final
        assert final.status == 200 and invite.cancelled
        assert invite.dialog is not None and invite.dialog.state is DialogState.TERMINATED
        await _eventually(lambda: uac.dialog_count == 0)
    finally:
        peer.close()


async def test_a_2xx_after_the_transaction_ended_gets_the_dialogs_ack(uac: SipStack) -> None:
    peer = RawPeer()
    try:
        invite = await uac.invite(_invite_to(uac, peer))
        request = await peer.expect("INVITE")
        peer.answer(request, 200, "late", SDP)
        first = await peer.expect("ACK")
        await invite.final
        await asyncio.sleep(64 * FAST.t1 + 0.2)  # timer M: the transaction is gone
        assert uac.stats["stray"] == 0
        peer.answer(request, 200, "late", SDP)
        again = await peer.expect("ACK")
        assert bytes(again) == bytes(first)
    finally:
        peer.close()


async def test_uas_retransmits_2xx_until_ack_then_byes_without_one(
    pair: tuple[SipStack, SipStack],
) -> None:
    _, b = pair
    outcomes: list[str] = []

    async def on_invite(incoming: IncomingRequest) -> None:
        incoming.respond(200, body=SDP)
        try:
            await incoming.wait_ack()
            outcomes.append("acked")
        except TimeoutError:
            outcomes.append("timeout")

    b.set_handler("INVITE", on_invite)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    port = peer.getsockname()[1]
    target = _target(b)
    loop = asyncio.get_running_loop()
    invite = (
        f"INVITE sip:bob@127.0.0.1:{target.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKlost;rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@pbx.test>;tag=caller\r\n"
        "To: <sip:bob@pbx.test>\r\nCall-ID: lost-ack\r\nCSeq: 7 INVITE\r\n"
        f"Contact: <sip:alice@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    try:
        peer.sendto(invite, (target.host, target.port))
        oks = 0
        bye: Request | None = None
        while bye is None:
            data = await asyncio.wait_for(loop.sock_recv(peer, 65535), 5)
            message = parse_message(data)
            if isinstance(message, Response) and message.status == 200:
                oks += 1
            elif isinstance(message, Request) and message.method == "BYE":
                bye = message
        # T1 doubling to T2 for 64*T1: about 11 sends with these timers; at least several
        assert oks >= 5
        assert bye.call_id == "lost-ack" and bye.to.tag == "caller"
        assert outcomes == ["timeout"]
    finally:
        peer.close()


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=200))
def test_challenge_parser_never_crashes(text: str) -> None:
    try:
        params = parse_challenge(text)
    except ValueError:
        return
    assert "realm" in params and "nonce" in params


def test_challenge_parser_reads_a_carrier_challenge() -> None:
    value = (
        'Digest realm="carrier.test", nonce="abc,def", algorithm=MD5, '
        'qop="auth,auth-int", opaque="x\\"y", stale=FALSE'
    )
    assert parse_challenge(value) == {
        "realm": "carrier.test",
        "nonce": "abc,def",
        "algorithm": "MD5",
        "qop": "auth,auth-int",
        "opaque": 'x"y',
        "stale": "FALSE",
    }
    with pytest.raises(ValueError, match="not Digest"):
        parse_challenge('Basic realm="x"')
    with pytest.raises(ValueError, match="realm and nonce"):
        parse_challenge('Digest realm="x"')
