"""The B2BUA end to end over UDP on 127.0.0.1: two phones (each a real SIP stack) register
with the registrar, one calls the other through pbxcore; the call is challenged with 407,
rings, is answered with media anchored in the relay, and either side hangs up.

(SIPp and baresip through the B2BUA: tests/test_interop_media.py and tests/test_server.py.)
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from pbxcore.media.engine import MediaEngine
from pbxcore.pbx.b2bua import B2bua, CallFailure
from pbxcore.pbx.limits import CallRateGuard, CallRateLimits
from pbxcore.routing import CallerIdRule, RouteEntry, RouteTable
from pbxcore.sip.auth import DigestAuthenticator, NonceStore
from pbxcore.sip.errors import SipParseError
from pbxcore.sip.guard import BruteForceGuard, GuardPolicy
from pbxcore.sip.location import MemoryLocationService
from pbxcore.sip.registrar import Registrar
from pbxcore.sip.stack import IncomingRequest, SipStack, StaticCredentials, Target
from pbxcore.sip.transaction import TimerSettings
from pbxcore.sip.transport import ListenAddress
from pbxcore.tenancy.secrets import sip_ha1
from pbxcore.tenancy.snapshot import DidConfig, IvrConfig, Snapshot, SnapshotCredentialStore
from tests.helpers import PEERS, require_binary
from tests.peers.pbxserve import free_port
from tests.test_pbx_decision import ext, operator, snapshot, tenant, trunk

FAST = TimerSettings(t1=0.05, t2=0.4, t4=0.5)
DOMAIN = "a.voip.example"  # the decision tests' tenant "A" of operator op1, its realm
PASSWORDS = {"201": "pw-201-x", "202": "pw-202-x", "203": "pw-203-x"}


def _sdp(port: int) -> bytes:
    return (
        f"v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=rtpmap:101 telephone-event/8000\r\n"
    ).encode()


def _port(sdp: bytes) -> int:
    found = re.search(rb"m=audio (\d+)", sdp)
    assert found is not None, sdp
    return int(found.group(1))


def _world() -> Snapshot:
    domain = DOMAIN
    exts = []
    for number, password in PASSWORDS.items():
        e = ext(f"e{number}", number)
        exts.append(replace(e, ha1=sip_ha1(number, domain, password)))
    a = replace(tenant("A", "op1", exts), domain=domain)
    return snapshot([operator("op1", [], {})], [a], [])


@dataclass
class Phone:
    number: str
    stack: SipStack
    server: Target
    answer: str = "200"  # what the phone does with an INVITE: 200, busy, ring
    invites: list[IncomingRequest] = field(default_factory=list)
    byes: list[IncomingRequest] = field(default_factory=list)
    reinvites: list[IncomingRequest] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def credentials(self) -> StaticCredentials:
        return StaticCredentials(self.number, PASSWORDS.get(self.number, "wrong-password"))

    async def register(self) -> int:
        request = self.stack.new_request(
            "REGISTER",
            f"sip:{DOMAIN}",
            from_=f"<sip:{self.number}@{DOMAIN}>",
            to=f"<sip:{self.number}@{DOMAIN}>",
            target=self.server,
            headers=[("Expires", "300")],
        )
        response = await self.stack.request(
            request, target=self.server, credentials=self.credentials
        )
        return response.status

    async def on_invite(self, incoming: IncomingRequest) -> None:
        if incoming.dialog is not None:  # a re-INVITE (hold): accept it, held in turn
            self.reinvites.append(incoming)
            body = _sdp(40000 + int(self.number))
            if b"a=sendonly" in incoming.request.body:
                body += b"a=recvonly\r\n"
            incoming.respond(200, body=body, content_type="application/sdp")
            return
        self.invites.append(incoming)
        incoming.on_cancel(self.cancelled.set)
        if self.answer == "busy":
            incoming.respond(486, "Busy Here")
            return
        incoming.respond(180)
        if self.answer == "ring":
            return
        incoming.respond(200, body=_sdp(40000 + int(self.number)), content_type="application/sdp")
        await incoming.wait_ack()

    async def on_bye(self, incoming: IncomingRequest) -> None:
        self.byes.append(incoming)
        incoming.respond(200)

    async def call(self, number: str):  # type: ignore[no-untyped-def]
        request = self.stack.new_request(
            "INVITE",
            f"sip:{number}@{DOMAIN}",
            from_=f"<sip:{self.number}@{DOMAIN}>",
            target=self.server,
            body=_sdp(30000 + int(self.number)),
            headers=[("Content-Type", "application/sdp")],
        )
        return await self.stack.invite(request, target=self.server, credentials=self.credentials)


@dataclass
class Pbx:
    b2bua: B2bua
    media: MediaEngine
    phones: dict[str, Phone]


@pytest.fixture
async def pbx(request: pytest.FixtureRequest) -> AsyncIterator[Pbx]:
    """The PBX on UDP and TCP; its phones on UDP, or TCP with ``indirect`` param "tcp"."""
    transport = getattr(request, "param", "udp")
    world = _world()
    credentials = SnapshotCredentialStore(lambda: world)
    location = MemoryLocationService()
    authenticator = DigestAuthenticator(credentials, NonceStore())
    guard = BruteForceGuard(GuardPolicy(max_failures=1000))
    listen = ListenAddress.parse(f"{transport}:127.0.0.1:0")
    both = [*ListenAddress.parse("udp:127.0.0.1:0"), *ListenAddress.parse("tcp:127.0.0.1:0")]
    async with (
        SipStack(listen=both, timers=FAST) as server,
        MediaEngine(ports=(42000, 42999)) as media,
    ):
        Registrar(credentials, location, authenticator=authenticator, guard=guard).attach(server)
        b2bua = B2bua(
            server,
            snapshot=lambda: world,
            location=location,
            authenticator=authenticator,
            guard=guard,
            media=media,
        )
        b2bua.attach()
        address = next(a for a in server.addresses if a.transport == transport)
        target = Target(transport, address.host, address.port)
        phones: dict[str, Phone] = {}
        stacks = []
        try:
            for number in ("201", "202", "203"):
                stack = SipStack(listen=listen, timers=FAST)
                await stack.start()
                stacks.append(stack)
                phone = Phone(number, stack, target)
                stack.set_handler("INVITE", phone.on_invite)
                stack.set_handler("BYE", phone.on_bye)
                phones[number] = phone
            assert await phones["201"].register() == 200
            assert await phones["202"].register() == 200
            yield Pbx(b2bua, media, phones)
        finally:
            for stack in stacks:
                await stack.stop()


async def _responses(invite) -> list[int]:  # type: ignore[no-untyped-def]
    return [r.status async for r in invite.responses()]


@pytest.mark.parametrize("pbx", ["udp", "tcp"], indirect=True)
async def test_an_extension_calls_another_with_media_anchored(pbx: Pbx) -> None:
    caller, callee = pbx.phones["201"], pbx.phones["202"]
    invite = await caller.call("202")
    statuses = await asyncio.wait_for(_responses(invite), 10)
    assert statuses[-1] == 200 and 180 in statuses
    assert invite.request.headers.get("proxy-authorization")  # it was challenged with 407
    final = invite.final.result()
    # the phones' transport both ways: the caller's INVITE and the B2BUA's to the callee
    transport = caller.server.transport.upper()
    assert f"SIP/2.0/{transport}" in (invite.request.headers.get("via") or "")
    assert f"SIP/2.0/{transport}" in (callee.invites[0].request.headers.get("via") or "")
    # the callee got an offer from the relay, the caller an answer from the relay: neither
    # sees the other's media port
    [incoming] = callee.invites
    assert _port(incoming.request.body) not in (30201, 40202)
    assert _port(final.body) not in (30201, 40202)
    assert len(pbx.b2bua.calls) == 1 and len(pbx.media.calls) == 1
    # the caller hangs up: the callee gets the BYE, the call and its media are gone
    assert invite.dialog is not None
    caller.stack.bye(invite.dialog)
    for _ in range(200):
        if callee.byes and not pbx.b2bua.calls:
            break
        await asyncio.sleep(0.01)
    assert callee.byes and not pbx.b2bua.calls and not pbx.media.calls
    assert pbx.b2bua.usage.active_calls("A") == 0


@pytest.mark.parametrize("pbx", ["udp", "tcp"], indirect=True)
async def test_the_callee_hangs_up(pbx: Pbx) -> None:
    caller, callee = pbx.phones["201"], pbx.phones["202"]
    invite = await caller.call("202")
    assert (await asyncio.wait_for(_responses(invite), 10))[-1] == 200
    [incoming] = callee.invites
    await asyncio.sleep(0.05)  # the ACK reached the callee
    assert incoming.dialog is not None
    callee.stack.bye(incoming.dialog)
    for _ in range(200):
        if caller.byes and not pbx.b2bua.calls:
            break
        await asyncio.sleep(0.01)
    assert caller.byes and not pbx.b2bua.calls and not pbx.media.calls


async def test_a_pcma_only_caller_and_a_pcmu_only_callee_are_transcoded(pbx: Pbx) -> None:
    """The callee is offered both laws whatever the caller offered; each party keeps the
    law it can do and the relay converts between them, on hold too."""
    caller, callee = pbx.phones["201"], pbx.phones["202"]  # the callee answers PCMU only
    pcma_only = _sdp(30201).replace(b"AVP 0 101", b"AVP 8 101").replace(b":0 PCMU", b":8 PCMA")
    request = caller.stack.new_request(
        "INVITE",
        f"sip:202@{DOMAIN}",
        from_=f"<sip:201@{DOMAIN}>",
        target=caller.server,
        body=pcma_only,
        headers=[("Content-Type", "application/sdp")],
    )
    invite = await caller.stack.invite(
        request, target=caller.server, credentials=caller.credentials
    )
    assert (await asyncio.wait_for(_responses(invite), 10))[-1] == 200
    [incoming] = callee.invites
    assert b"PCMU/8000" in incoming.request.body  # what the callee can answer
    answer = invite.final.result().body
    assert b"PCMA/8000" in answer and b"PCMU" not in answer  # the caller keeps its law
    assert b"telephone-event/8000" in answer
    [media] = pbx.media.calls.values()
    assert media.b is not None and (media.a.law, media.b.law) == ("alaw", "ulaw")
    # the caller holds with its PCMA-only SDP: the callee is offered PCMU too, and the
    # caller's answer stays PCMA
    await asyncio.wait_for(incoming.wait_ack(), 5)
    dialog = invite.dialog
    assert dialog is not None
    hold = pcma_only + b"a=sendonly\r\n"
    request = dialog.new_request("INVITE", [("Content-Type", "application/sdp")], body=hold)
    reinvite = await caller.stack.invite(request, dialog=dialog)
    final = await asyncio.wait_for(reinvite.final, 10)
    assert final.status == 200, final
    relayed = callee.reinvites[-1].request.body
    assert b"PCMU/8000" in relayed and b"a=sendonly" in relayed
    assert b"PCMA/8000" in final.body and b"PCMU" not in final.body
    assert b"a=recvonly" in final.body
    assert (media.a.law, media.b.law) == ("alaw", "ulaw")
    caller.stack.bye(dialog)
    for _ in range(500):  # the B2BUA's BYE to the callee follows the call's end
        if callee.byes and not pbx.b2bua.calls:
            break
        await asyncio.sleep(0.01)
    assert callee.byes and not pbx.b2bua.calls and not pbx.media.calls


async def test_busy_unregistered_unknown_and_wrong_password(pbx: Pbx) -> None:
    caller, callee = pbx.phones["201"], pbx.phones["202"]
    callee.answer = "busy"
    invite = await caller.call("202")
    assert (await asyncio.wait_for(_responses(invite), 10))[-1] == 486
    invite = await caller.call("203")  # exists, not registered
    assert (await asyncio.wait_for(_responses(invite), 10))[-1] == 480
    invite = await caller.call("299")  # no such extension
    assert (await asyncio.wait_for(_responses(invite), 10))[-1] == 404
    impostor = Phone("201", pbx.phones["203"].stack, caller.server)
    PASSWORDS["201-wrong"] = "x"
    impostor_creds = StaticCredentials("201", "not-the-password")
    request = impostor.stack.new_request(
        "INVITE",
        f"sip:202@{DOMAIN}",
        from_=f"<sip:201@{DOMAIN}>",
        target=caller.server,
        body=_sdp(30999),
        headers=[("Content-Type", "application/sdp")],
    )
    invite = await impostor.stack.invite(request, target=caller.server, credentials=impostor_creds)
    assert (await asyncio.wait_for(_responses(invite), 10))[-1] == 403
    assert not pbx.b2bua.calls and not pbx.media.calls


async def test_the_caller_cancels_while_it_rings(pbx: Pbx) -> None:
    caller, callee = pbx.phones["201"], pbx.phones["202"]
    callee.answer = "ring"
    invite = await caller.call("202")
    seen: list[int] = []

    async def follow() -> None:
        async for response in invite.responses():
            seen.append(response.status)
            if response.status == 180:
                invite.cancel()

    await asyncio.wait_for(follow(), 10)
    assert seen[-1] == 487
    await asyncio.wait_for(callee.cancelled.wait(), 5)  # the fork was cancelled too
    for _ in range(200):
        if not pbx.b2bua.calls:
            break
        await asyncio.sleep(0.01)
    assert not pbx.b2bua.calls and not pbx.media.calls


@pytest.mark.parametrize(
    ("number", "body", "status"),
    [
        ("202", b"v=0\r\nthis is not sdp\r\n", 488),
        (
            "202",
            _sdp(30201).replace(b"RTP/AVP 0 101", b"RTP/AVP 18").replace(b"0 PCMU", b"18 G729"),
            488,
        ),
        ("2" * 200, _sdp(30201), 484),
    ],
)
async def test_hostile_invites_get_an_error_and_leave_nothing_behind(
    pbx: Pbx, number: str, body: bytes, status: int
) -> None:
    caller = pbx.phones["201"]
    request = caller.stack.new_request(
        "INVITE",
        f"sip:{number}@{DOMAIN}",
        from_=f"<sip:201@{DOMAIN}>",
        target=caller.server,
        body=body,
        headers=[("Content-Type", "application/sdp")],
    )
    invite = await caller.stack.invite(
        request, target=caller.server, credentials=caller.credentials
    )
    final = (await asyncio.wait_for(_responses(invite), 10))[-1]
    assert 400 <= final < 500 and final == status, final
    assert not pbx.b2bua.calls and not pbx.media.calls
    assert pbx.b2bua.usage.active_calls("A") == 0


# -- out through trunks: SIPp plays the carriers ------------------------------------------


async def _sipp_carrier(
    tmp_path: Path, name: str, *args: str
) -> tuple[asyncio.subprocess.Process, int, Path]:
    sipp = require_binary("sipp")
    folder = tmp_path / name
    folder.mkdir()
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sipp, "-i", "127.0.0.1", "-p", str(port), "-m", "1", "-nostdin", "-timeout", "20s",
        "-trace_msg", *args,
        cwd=folder, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    await asyncio.sleep(0.3)  # SIPp binds its port
    return process, port, folder


def _carrier_world(ports: dict[str, int]) -> Snapshot:
    caller_id = CallerIdRule(mode="fixed", fixed_number="+74950000001")
    trunks = [
        trunk(name, host="127.0.0.1", port=port, number_format="e164", caller_id=caller_id)
        for name, port in ports.items()
    ]
    table = RouteTable(
        [RouteEntry("7495", name, priority=i + 1) for i, name in enumerate(ports)], fallthrough=True
    )
    base = _world()
    a = base.tenants["A"]
    return snapshot([operator("op1", trunks, {"rt": table})], [a], [])


@pytest.mark.peers
@pytest.mark.parametrize(("first", "reaches_second"), [("503", True), ("486", False)])
async def test_outbound_fails_over_on_503_not_on_486(
    pbx: Pbx, tmp_path: Path, first: str, reaches_second: bool
) -> None:
    scenario = tmp_path / f"uas_{first}.xml"
    scenario.write_text((PEERS / "sipp_uas_reject.xml").read_text().replace("[status]", first))
    one, port1, _ = await _sipp_carrier(tmp_path, "one", "-sf", str(scenario))
    two, port2, folder2 = await _sipp_carrier(tmp_path, "two", "-sn", "uas")
    world = _carrier_world({"carrier-one": port1, "carrier-two": port2})
    pbx.b2bua._snapshot = lambda: world
    failures: list[CallFailure] = []
    pbx.b2bua.on_failure = failures.append
    caller = pbx.phones["201"]
    try:
        invite = await caller.call("84951234567")
        statuses = await asyncio.wait_for(_responses(invite), 15)
        counters = pbx.b2bua.counters()
        assert counters.calls_started == 1
        if reaches_second:  # the first trunk failed over: a failure of its own
            assert counters.trunk_attempts == {"carrier-one": 1, "carrier-two": 1}
            assert counters.trunk_failures == {"carrier-one": 1}
        else:  # the called party said busy: the trunk worked
            assert counters.trunk_attempts == {"carrier-one": 1}
            assert counters.trunk_failures == {}
        if reaches_second:
            assert statuses[-1] == 200, statuses
            assert pbx.b2bua.usage.active_channels("carrier-two") == 1
            assert invite.dialog is not None
            caller.stack.bye(invite.dialog)
            assert await asyncio.wait_for(two.wait(), 20) == 0  # SIPp got its BYE
            received = "".join(p.read_text() for p in folder2.glob("*_messages.log"))
            assert "INVITE sip:+74951234567@127.0.0.1" in received  # the trunk's format
        else:
            assert statuses[-1] == 486, statuses
            two.kill()
        assert await asyncio.wait_for(one.wait(), 20) == 0
        for _ in range(200):
            if not pbx.b2bua.calls:
                break
            await asyncio.sleep(0.01)
        assert not pbx.b2bua.calls and not pbx.media.calls
        assert pbx.b2bua.usage.active_channels("carrier-two") == 0
        if reaches_second:
            assert failures == []
        else:  # reported with the status the caller got
            [failure] = failures
            assert failure.status == 486 and failure.reason == "busy"
            assert failure.trunk_id == "carrier-one" and failure.to_number == "84951234567"
    finally:
        for process in (one, two):
            if process.returncode is None:
                process.kill()
                await process.wait()


@pytest.mark.peers
async def test_a_carrier_call_to_a_did_reaches_its_extension(pbx: Pbx, tmp_path: Path) -> None:
    base = _world()
    carrier = trunk("carrier-in", host="127.0.0.1", inbound_ips=("127.0.0.1/32",))
    did = DidConfig("+74951110002", "op1", "A", {"type": "extension", "id": "e202"})
    world = snapshot([operator("op1", [carrier], {})], [base.tenants["A"]], [did])
    pbx.b2bua._snapshot = lambda: world
    server = pbx.phones["201"].server
    sipp = require_binary("sipp")
    process = await asyncio.create_subprocess_exec(
        sipp, f"{server.host}:{server.port}", "-sf", str(PEERS / "sipp_uac_call.xml"),
        "-s", "+74951110002", "-i", "127.0.0.1", "-p", str(free_port()), "-m", "1",
        "-nostdin", "-timeout", "20s", "-trace_err",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, output.decode()[-3000:]  # 180, 200, ACK, BYE and its 200
    callee = pbx.phones["202"]
    [incoming] = callee.invites
    assert incoming.request.to.uri.user == "202"  # the DID's extension, in tenant A
    assert callee.byes  # the carrier's BYE reached the extension
    for _ in range(200):
        if not pbx.b2bua.calls:
            break
        await asyncio.sleep(0.01)
    assert not pbx.b2bua.calls and not pbx.media.calls


async def test_max_concurrent_calls_holds_in_the_call_path(pbx: Pbx) -> None:
    base = _world()
    limited = replace(
        base.tenants["A"], limits=replace(base.tenants["A"].limits, max_concurrent_calls=1)
    )
    world = snapshot([operator("op1", [], {})], [limited], [])
    pbx.b2bua._snapshot = lambda: world
    caller = pbx.phones["201"]
    first = await caller.call("202")
    assert (await asyncio.wait_for(_responses(first), 10))[-1] == 200
    second = await caller.call("202")
    statuses = await asyncio.wait_for(_responses(second), 10)
    assert statuses[-1] == 403
    assert "max_concurrent_calls" in (second.final.result().headers.get("reason") or "")
    assert first.dialog is not None
    caller.stack.bye(first.dialog)
    for _ in range(200):
        if not pbx.b2bua.calls:
            break
        await asyncio.sleep(0.01)
    third = await caller.call("202")  # the slot is free again
    assert (await asyncio.wait_for(_responses(third), 10))[-1] == 200
    assert third.dialog is not None
    caller.stack.bye(third.dialog)


async def test_calls_per_second_caps_and_capacity_answer_503_with_retry_after(
    pbx: Pbx,
) -> None:
    now = [0.0]
    pbx.b2bua.rates = CallRateGuard(
        CallRateLimits(per_extension=1, per_tenant=2, burst_seconds=1, max_calls=1),
        clock=lambda: now[0],
    )
    caller, callee = pbx.phones["201"], pbx.phones["202"]
    first = await caller.call("202")
    assert (await asyncio.wait_for(_responses(first), 10))[-1] == 200
    # the node is at capacity while the first call is up
    busy = await callee.call("201")
    assert (await asyncio.wait_for(_responses(busy), 10))[-1] == 503
    reply = busy.final.result()
    assert reply.headers.get("retry-after") == "5"
    assert "node_capacity" in (reply.headers.get("reason") or "")
    assert first.dialog is not None
    caller.stack.bye(first.dialog)
    for _ in range(200):
        if not pbx.b2bua.calls:
            break
        await asyncio.sleep(0.01)
    assert not pbx.b2bua.calls
    # 201 started a call this second: its next one waits; 202's goes (the tenant has room)
    again = await caller.call("202")
    assert (await asyncio.wait_for(_responses(again), 10))[-1] == 503
    reply = again.final.result()
    assert reply.headers.get("retry-after") == "1"
    assert "extension_call_rate" in (reply.headers.get("reason") or "")
    assert not pbx.b2bua.calls and not pbx.media.calls  # refused before any media
    callee.answer = "busy"
    caller.answer = "busy"
    other = await callee.call("201")
    assert (await asyncio.wait_for(_responses(other), 10))[-1] == 486
    # the tenant's two calls this second are used up: 203 waits though it has not called
    third = await pbx.phones["203"].call("202")
    assert (await asyncio.wait_for(_responses(third), 10))[-1] == 503
    assert "tenant_call_rate" in (third.final.result().headers.get("reason") or "")
    now[0] += 1.0
    fourth = await caller.call("202")
    assert (await asyncio.wait_for(_responses(fourth), 10))[-1] == 486


async def test_a_relay_out_of_ports_answers_503_and_keeps_nothing(pbx: Pbx) -> None:
    async with MediaEngine(ports=(43000, 43003)) as tiny:  # one relay session: one call
        pbx.b2bua.media = tiny
        first = await pbx.phones["201"].call("202")
        assert (await asyncio.wait_for(_responses(first), 10))[-1] == 200
        invite = await pbx.phones["202"].call("201")
        assert (await asyncio.wait_for(_responses(invite), 10))[-1] == 503
        reply = invite.final.result()
        assert reply.headers.get("retry-after") and "media_capacity" in (
            reply.headers.get("reason") or ""
        )
        assert len(pbx.b2bua.calls) == 1 and len(tiny.calls) == 1
        assert first.dialog is not None
        pbx.phones["201"].stack.bye(first.dialog)
        for _ in range(200):
            if not pbx.b2bua.calls:
                break
            await asyncio.sleep(0.01)
        assert not pbx.b2bua.calls and not tiny.calls
        assert pbx.b2bua.usage.active_calls("A") == 0


async def test_hold_and_resume_by_re_invite_through_the_relay(pbx: Pbx) -> None:
    caller, callee = pbx.phones["201"], pbx.phones["202"]
    invite = await caller.call("202")
    assert (await asyncio.wait_for(_responses(invite), 10))[-1] == 200
    dialog = invite.dialog
    assert dialog is not None
    await asyncio.sleep(0.05)  # the ACK reached the B2BUA
    for body, expect in (
        (_sdp(30201) + b"a=sendonly\r\n", b"a=recvonly"),  # hold
        (_sdp(30201), None),  # resume
    ):
        request = dialog.new_request("INVITE", [("Content-Type", "application/sdp")], body=body)
        reinvite = await caller.stack.invite(request, dialog=dialog)
        final = await asyncio.wait_for(reinvite.final, 10)
        assert final.status == 200, final
        relayed = callee.reinvites[-1].request.body
        assert _port(relayed) != 30201  # the callee sees the relay, never the caller
        assert (b"a=sendonly" in relayed) == (expect is not None)
        if expect is not None:
            assert expect in final.body
        assert _port(final.body) != 40202
    assert len(callee.reinvites) == 2 and len(pbx.b2bua.calls) == 1
    caller.stack.bye(dialog)


def _forwarding_world(forwarding: dict[str, dict[str, object]]) -> Snapshot:
    base = _world()
    a = base.tenants["A"]
    exts = dict(a.extensions)
    exts["204"] = ext("e204", "204")  # exists, never registered
    for number, fwd in forwarding.items():
        exts[number] = replace(exts[number], forwarding=fwd)
    return snapshot([operator("op1", [], {})], [replace(a, extensions=exts)], [])


@pytest.mark.parametrize(
    ("callee", "forwarding", "mode"),
    [
        ("202", {"busy": "203"}, "busy"),
        ("202", {"no_answer": "203", "no_answer_seconds": 1}, "ring"),
        ("204", {"unavailable": "203"}, None),
    ],
)
async def test_forwarding_on_busy_no_answer_and_unavailable(
    pbx: Pbx, callee: str, forwarding: dict[str, object], mode: str | None
) -> None:
    world = _forwarding_world({callee: forwarding})
    pbx.b2bua._snapshot = lambda: world
    caller, first, second = pbx.phones["201"], pbx.phones["202"], pbx.phones["203"]
    assert await second.register() == 200
    if mode is not None:
        first.answer = mode
    invite = await caller.call(callee)
    statuses = await asyncio.wait_for(_responses(invite), 15)
    assert statuses[-1] == 200, statuses
    assert len(second.invites) == 1  # the forward target answered
    if mode == "ring":
        await asyncio.wait_for(first.cancelled.wait(), 5)  # the first was cancelled
    assert invite.dialog is not None
    caller.stack.bye(invite.dialog)
    for _ in range(200):
        if not pbx.b2bua.calls:
            break
        await asyncio.sleep(0.01)
    assert not pbx.b2bua.calls and not pbx.media.calls


async def test_a_forwarding_loop_ends_with_an_answer_to_the_caller(pbx: Pbx) -> None:
    world = _forwarding_world({"204": {"unavailable": "203"}, "203": {"unavailable": "204"}})
    pbx.b2bua._snapshot = lambda: world
    invite = await pbx.phones["201"].call("204")  # neither 204 nor 203 is registered
    final = (await asyncio.wait_for(_responses(invite), 15))[-1]
    assert final in (480, 482, 483), final
    assert not pbx.b2bua.calls and not pbx.media.calls


async def _both_hung_up(pbx: Pbx, caller: Phone, callee: Phone) -> None:
    for _ in range(500):
        if caller.byes and callee.byes and not pbx.b2bua.calls:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not ended: {pbx.b2bua.calls}, {caller.byes}, {callee.byes}")


async def test_a_call_without_rtp_is_ended_on_both_sides(pbx: Pbx) -> None:
    pbx.media.leg_timeout = 0.3  # the phones here send no RTP at all
    caller, callee = pbx.phones["201"], pbx.phones["202"]
    invite = await caller.call("202")
    assert (await asyncio.wait_for(_responses(invite), 10))[-1] == 200
    await _both_hung_up(pbx, caller, callee)
    assert not pbx.media.calls


async def test_the_tenant_maximum_call_duration_ends_the_call(pbx: Pbx) -> None:
    base = _world()
    a = base.tenants["A"]
    short = replace(a, limits=replace(a.limits, max_call_duration_s=1))
    world = snapshot([operator("op1", [], {})], [short], [])
    pbx.b2bua._snapshot = lambda: world
    caller, callee = pbx.phones["201"], pbx.phones["202"]
    invite = await caller.call("202")
    assert (await asyncio.wait_for(_responses(invite), 10))[-1] == 200
    assert pbx.b2bua.calls  # up, for now
    await _both_hung_up(pbx, caller, callee)


async def test_international_barred_and_suspended_tenants_are_refused(pbx: Pbx) -> None:
    base = _world()
    a = base.tenants["A"]
    caller_id = CallerIdRule(mode="fixed", fixed_number="+74950000001")
    carrier = trunk("carrier", host="127.0.0.1", port=9, caller_id=caller_id)
    table = RouteTable([RouteEntry("", "carrier")], fallthrough=True)
    world = snapshot([operator("op1", [carrier], {"rt": table})], [a], [])
    pbx.b2bua._snapshot = lambda: world
    caller = pbx.phones["201"]
    invite = await caller.call("+493012345678")  # Germany: international, barred by default
    assert (await asyncio.wait_for(_responses(invite), 10))[-1] == 403
    assert "international" in (invite.final.result().headers.get("reason") or "")
    suspended = snapshot(
        [operator("op1", [carrier], {"rt": table})], [replace(a, status="suspended")], []
    )
    pbx.b2bua._snapshot = lambda: suspended
    invite = await caller.call("202")
    # a suspended tenant's realm is not served: its phones cannot even authenticate
    assert (await asyncio.wait_for(_responses(invite), 10))[-1] in (403, 404)
    assert not pbx.b2bua.calls and not pbx.media.calls


def _mutated(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        what = rng.randrange(4)
        if what == 0 and out:  # flip a byte
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif what == 1:  # cut
            out = out[: rng.randrange(len(out) + 1)]
        elif what == 2:  # duplicate a slice
            i = rng.randrange(len(out) + 1)
            out[i:i] = out[max(0, i - 20) : i]
        else:  # a line of junk
            out += bytes(rng.randrange(32, 127) for _ in range(rng.randrange(1, 80))) + b"\r\n"
    return bytes(out)


async def test_a_flood_of_mutated_invites_leaves_no_call_session_or_dialog(pbx: Pbx) -> None:
    """Authenticated INVITEs with mutated SDP and hostile dialed strings: every one gets a
    final answer, and nothing is left behind (the callee refuses the ones that ring it)."""
    rng = random.Random(4475)
    caller, callee = pbx.phones["201"], pbx.phones["202"]
    callee.answer = "busy"
    dialed_choices = ["202", "2" * 300, "+", "*#*#", "202;x=1", "%00", "0", "8" * 11, "a" * 40]
    finals: list[int] = []
    for i in range(60):
        number = rng.choice(dialed_choices)
        body = _mutated(rng, _sdp(30201)) if i % 3 else _sdp(30201)
        try:
            request = caller.stack.new_request(
                "INVITE",
                f"sip:{number}@{DOMAIN}",
                from_=f"<sip:201@{DOMAIN}>",
                target=caller.server,
                body=body,
                headers=[("Content-Type", "application/sdp")],
            )
        except (ValueError, SipParseError):
            continue  # our own stack refuses to build it: nothing to send
        invite = await caller.stack.invite(
            request, target=caller.server, credentials=caller.credentials
        )
        finals.append((await asyncio.wait_for(_responses(invite), 15))[-1])
    assert len(finals) > 30 and all(status >= 300 for status in finals), finals
    for _ in range(200):
        if not pbx.b2bua.calls and not pbx.media.calls:
            break
        await asyncio.sleep(0.01)
    assert not pbx.b2bua.calls and not pbx.media.calls
    assert pbx.b2bua.stack.dialog_count == 0
    assert pbx.b2bua.usage.active_calls("A") == 0


async def test_shutdown_refuses_new_calls_and_ends_the_ones_in_progress(pbx: Pbx) -> None:
    """SIGTERM's path: new calls get 503 + Retry-After at once; after the grace period
    (here ended by a second signal) an answered call gets BYE on both sides and a ringing
    one a 503 to its caller and CANCEL to the phone that rings."""
    first, second, third = pbx.phones["201"], pbx.phones["202"], pbx.phones["203"]
    assert await third.register() == 200
    third.answer = "ring"
    up = await first.call("202")
    assert (await asyncio.wait_for(_responses(up), 10))[-1] == 200
    ringing = await second.call("203")
    async for response in ringing.responses():
        if response.status == 180:
            break
    hurry = asyncio.Event()
    shutdown = asyncio.create_task(pbx.b2bua.shutdown(30, hurry=hurry))
    await asyncio.sleep(0)
    refused = await first.call("202")
    final = await asyncio.wait_for(refused.final, 10)
    assert final.status == 503
    assert final.headers.get("retry-after") == "5"
    assert "shutting_down" in (final.headers.get("reason") or "")
    assert not shutdown.done()  # the two calls may still go on
    hurry.set()
    assert await asyncio.wait_for(shutdown, 15) == 2
    assert (await asyncio.wait_for(ringing.final, 10)).status == 503
    await asyncio.wait_for(third.cancelled.wait(), 10)
    assert first.byes and second.byes  # both sides of the answered call
    assert not pbx.b2bua.calls and not pbx.media.calls


async def test_shutdown_waits_for_a_call_that_ends_within_the_grace_period(pbx: Pbx) -> None:
    caller, callee = pbx.phones["201"], pbx.phones["202"]
    invite = await caller.call("202")
    assert (await asyncio.wait_for(_responses(invite), 10))[-1] == 200
    shutdown = asyncio.create_task(pbx.b2bua.shutdown(60))
    await asyncio.sleep(0.05)
    assert not shutdown.done()
    assert invite.dialog is not None
    caller.stack.bye(invite.dialog)  # the caller hangs up by itself
    assert await asyncio.wait_for(shutdown, 15) == 0  # none had to be ended by pbxcore
    assert callee.byes and not caller.byes and not pbx.b2bua.calls


def _menu_world(**menu: object) -> Snapshot:
    """Tenant A with the ivr feature and menu ivr-1 (2: extension 202, default 201), and a
    carrier on 127.0.0.1 whose DID +74951110002 points at the menu."""
    base = _world()
    fields: dict[str, object] = {
        "id": "ivr-1", "name": "Main", "greeting_prompt_id": None,
        "options": {"2": {"type": "extension", "id": "e202"}}, "timeout_s": 1,
        "invalid_prompt_id": None, "max_retries": 0,
        "default_destination": {"type": "extension", "id": "e201"}, "direct_dial": False,
    } | menu  # fmt: skip
    ivr = IvrConfig(**fields)  # type: ignore[arg-type]
    a = replace(base.tenants["A"], features=frozenset({"ivr"}), ivrs={"ivr-1": ivr})
    carrier = trunk("carrier-in", host="127.0.0.1", inbound_ips=("127.0.0.1/32",))
    did = DidConfig("+74951110002", "op1", "A", {"type": "ivr", "id": "ivr-1"})
    return snapshot([operator("op1", [carrier], {})], [a], [did])


async def _carrier_calls_the_menu(pbx: Pbx, keyed: str | None) -> tuple[object, object, object]:
    """A carrier's call to the menu's DID; it keys ``keyed`` as RFC 4733 events."""
    import socket  # noqa: PLC0415

    from pbxcore.media.rtp import telephone_event_packets  # noqa: PLC0415

    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    port = rtp.getsockname()[1]
    carrier = SipStack(listen=ListenAddress.parse("udp:127.0.0.1:0"), timers=FAST)
    await carrier.start()
    carrier.set_handler("BYE", lambda incoming: incoming.respond(200))
    server = pbx.phones["201"].server
    body = (
        f"v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
    ).encode()
    request = carrier.new_request(
        "INVITE", f"sip:+74951110002@{server.host}:{server.port}",
        from_="<sip:+74957770000@127.0.0.1>", target=server, body=body,
        headers=[("Content-Type", "application/sdp")],
    )  # fmt: skip
    invite = await carrier.invite(request, target=server)
    final = await asyncio.wait_for(invite.final, 10)
    assert final.status == 200, final  # pbxcore answered: the menu
    relay = _port(final.body)
    if keyed is not None:
        await asyncio.sleep(0.2)  # the menu starts with the ACK
        for packet in telephone_event_packets(keyed, ssrc=7, sequence_number=1, timestamp=160):
            rtp.sendto(bytes(packet), ("127.0.0.1", relay))
            await asyncio.sleep(0.02)
    return carrier, invite, rtp


@pytest.mark.parametrize(
    ("keyed", "rings"),
    [("2", "202"), ("9", "201"), (None, "201")],
    ids=["digit-2", "invalid-then-default", "no-digit-then-default"],
)
async def test_a_carrier_call_to_a_menu_reaches_the_extension_of_the_digit(
    pbx: Pbx, keyed: str | None, rings: str
) -> None:
    world = _menu_world()
    pbx.b2bua._snapshot = lambda: world
    carrier, invite, rtp = await _carrier_calls_the_menu(pbx, keyed)
    try:
        callee, other = pbx.phones[rings], pbx.phones["202" if rings == "201" else "201"]
        for _ in range(500):
            if callee.invites:
                break
            await asyncio.sleep(0.01)
        [incoming] = callee.invites
        assert not other.invites
        await asyncio.wait_for(incoming.wait_ack(), 5)
        [call] = pbx.b2bua.calls.values()
        assert call.b_dialog is not None and call.pbx_answered
        # the carrier hangs up: the extension gets the BYE, nothing is left
        bye = invite.dialog.new_request("BYE")  # type: ignore[attr-defined]
        assert (await carrier.request(bye, dialog=invite.dialog)).status == 200  # type: ignore[attr-defined]
        for _ in range(500):
            if callee.byes and not pbx.b2bua.calls:
                break
            await asyncio.sleep(0.01)
        assert callee.byes and not pbx.b2bua.calls and not pbx.media.calls
    finally:
        rtp.close()  # type: ignore[attr-defined]
        await carrier.stop()  # type: ignore[attr-defined]


async def test_a_menu_without_the_ivr_feature_is_never_entered(pbx: Pbx) -> None:
    world = _menu_world()
    a = world.tenants["A"]
    pbx.b2bua._snapshot = lambda: replace(world, tenants={"A": replace(a, features=frozenset())})
    carrier = SipStack(listen=ListenAddress.parse("udp:127.0.0.1:0"), timers=FAST)
    async with carrier:
        server = pbx.phones["201"].server
        request = carrier.new_request(
            "INVITE", f"sip:+74951110002@{server.host}:{server.port}",
            from_="<sip:+74957770000@127.0.0.1>", target=server, body=_sdp(30999),
            headers=[("Content-Type", "application/sdp")],
        )  # fmt: skip
        invite = await carrier.invite(request, target=server)
        assert (await asyncio.wait_for(invite.final, 10)).status == 403
    assert not pbx.b2bua.calls and not pbx.media.calls


async def test_the_caller_hanging_up_in_the_menu_leaves_nothing(pbx: Pbx) -> None:
    world = _menu_world(timeout_s=30)
    pbx.b2bua._snapshot = lambda: world
    carrier, invite, rtp = await _carrier_calls_the_menu(pbx, None)
    try:
        await asyncio.sleep(0.2)
        bye = invite.dialog.new_request("BYE")  # type: ignore[attr-defined]
        assert (await carrier.request(bye, dialog=invite.dialog)).status == 200  # type: ignore[attr-defined]
        for _ in range(500):
            if not pbx.b2bua.calls and not pbx.media.calls:
                break
            await asyncio.sleep(0.01)
        assert not pbx.b2bua.calls and not pbx.media.calls
        assert not pbx.phones["201"].invites and not pbx.phones["202"].invites
    finally:
        rtp.close()  # type: ignore[attr-defined]
        await carrier.stop()  # type: ignore[attr-defined]


@pytest.mark.peers
async def test_sipp_keys_a_digit_from_a_pcap_into_the_menu(pbx: Pbx, tmp_path: Path) -> None:
    """SIPp as the carrier: its call to the DID enters the menu, its RFC 4733 "2" (SIPp's
    dtmf_2833_2.pcap) reaches extension 202, and its BYE ends the call there."""
    sipp = require_binary("sipp")
    pcaps = Path("/usr/share/sip-tester")
    if not (pcaps / "dtmf_2833_2.pcap").exists():
        pytest.fail(f"SIPp pcaps missing in {pcaps} (package sip-tester)")
    (tmp_path / "pcap").symlink_to(pcaps)
    scenario = tmp_path / "uac_menu_dtmf.xml"  # SIPp looks for pcap/ next to the scenario
    scenario.write_text((PEERS / "sipp_uac_menu_dtmf.xml").read_text())
    world = _menu_world(timeout_s=5)
    pbx.b2bua._snapshot = lambda: world
    server = pbx.phones["201"].server
    process = await asyncio.create_subprocess_exec(
        sipp, f"{server.host}:{server.port}", "-sf", str(scenario), "-s", "+74951110002",
        "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(free_port()), "-m", "1",
        "-nostdin", "-timeout", "30s", "-trace_err", "-trace_msg",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 40)
    assert process.returncode == 0, output.decode()[-3000:]
    callee = pbx.phones["202"]
    assert len(callee.invites) == 1 and not pbx.phones["201"].invites  # the digit's extension
    for _ in range(500):
        if callee.byes and not pbx.b2bua.calls:
            break
        await asyncio.sleep(0.01)
    assert callee.byes and not pbx.b2bua.calls and not pbx.media.calls


async def test_a_key_in_sip_info_reaches_the_menu(pbx: Pbx) -> None:
    """A carrier that signals keys in INFO (application/dtmf-relay), not RFC 4733: the
    menu takes them; a bad body is a 400, another content type a 415 naming the two."""
    world = _menu_world(timeout_s=5)
    pbx.b2bua._snapshot = lambda: world
    carrier, invite, rtp = await _carrier_calls_the_menu(pbx, None)
    try:
        dialog = invite.dialog  # type: ignore[attr-defined]

        async def info(content_type: str, body: bytes) -> object:
            request = dialog.new_request("INFO", [("Content-Type", content_type)], body=body)
            return await carrier.request(request, dialog=dialog)  # type: ignore[attr-defined]

        bad = await info("application/dtmf-relay", b"Signal=Z\r\nDuration=100\r\n")
        assert bad.status == 400 and "not a DTMF key" in (bad.headers.get("warning") or "")  # type: ignore[attr-defined]
        other = await info("text/plain", b"2")
        assert other.status == 415 and "application/dtmf-relay" in (
            other.headers.get("accept") or ""
        )  # type: ignore[attr-defined]
        assert (await info("application/dtmf-relay", b"Signal=2\r\nDuration=160\r\n")).status == 200  # type: ignore[attr-defined]
        callee = pbx.phones["202"]
        for _ in range(500):
            if callee.invites:
                break
            await asyncio.sleep(0.01)
        assert len(callee.invites) == 1 and not pbx.phones["201"].invites
        bye = dialog.new_request("BYE")
        assert (await carrier.request(bye, dialog=dialog)).status == 200  # type: ignore[attr-defined]
        for _ in range(500):
            if not pbx.b2bua.calls:
                break
            await asyncio.sleep(0.01)
        assert not pbx.b2bua.calls and not pbx.media.calls
    finally:
        rtp.close()  # type: ignore[attr-defined]
        await carrier.stop()  # type: ignore[attr-defined]


async def _keys_by_info(carrier: object, invite: object, keys: str) -> None:
    dialog = invite.dialog  # type: ignore[attr-defined]
    for key in keys:
        body = f"Signal={key}\r\nDuration=100\r\n".encode()
        request = dialog.new_request(
            "INFO", [("Content-Type", "application/dtmf-relay")], body=body
        )
        assert (await carrier.request(request, dialog=dialog)).status == 200  # type: ignore[attr-defined]


async def test_direct_dial_of_an_extension_from_the_menu(pbx: Pbx) -> None:
    """A menu with direct_dial: the caller keys an extension number of the tenant."""
    world = _menu_world(timeout_s=3, direct_dial=True, options={})
    pbx.b2bua._snapshot = lambda: world
    carrier, invite, rtp = await _carrier_calls_the_menu(pbx, None)
    try:
        await _keys_by_info(carrier, invite, "201")
        for _ in range(500):
            if pbx.phones["201"].invites:
                break
            await asyncio.sleep(0.01)
        assert len(pbx.phones["201"].invites) == 1
    finally:
        rtp.close()  # type: ignore[attr-defined]
        await carrier.stop()  # type: ignore[attr-defined]


async def test_menus_that_lead_to_each_other_end_at_the_depth_limit(pbx: Pbx) -> None:
    """ivr-1 key 1 -> ivr-2, ivr-2 key 1 -> ivr-1: a caller keying 1 forever is hung up
    after MAX_MENU_DEPTH menus, and nothing rang."""
    from pbxcore.pbx.ivr import MAX_MENU_DEPTH  # noqa: PLC0415

    world = _menu_world(timeout_s=3, options={"1": {"type": "ivr", "id": "ivr-2"}})
    a = world.tenants["A"]
    second = replace(
        a.ivrs["ivr-1"], id="ivr-2", name="Second", options={"1": {"type": "ivr", "id": "ivr-1"}}
    )
    world = replace(world, tenants={"A": replace(a, ivrs={**a.ivrs, "ivr-2": second})})
    pbx.b2bua._snapshot = lambda: world
    hung_up = asyncio.Event()
    carrier, invite, rtp = await _carrier_calls_the_menu(pbx, None)
    carrier.set_handler("BYE", lambda incoming: (incoming.respond(200), hung_up.set()))  # type: ignore[attr-defined]
    try:
        await _keys_by_info(carrier, invite, "1" * MAX_MENU_DEPTH)
        await asyncio.wait_for(hung_up.wait(), 10)  # pbxcore's BYE: the loop is cut
        assert not pbx.phones["201"].invites and not pbx.phones["202"].invites
        for _ in range(500):
            if not pbx.b2bua.calls:
                break
            await asyncio.sleep(0.01)
        assert not pbx.b2bua.calls and not pbx.media.calls
    finally:
        rtp.close()  # type: ignore[attr-defined]
        await carrier.stop()  # type: ignore[attr-defined]


async def test_a_menu_digit_through_a_schedule_into_another_menu(pbx: Pbx) -> None:
    """Key 3 -> schedule "always open" -> menu ivr-2, key 2 there -> extension 202."""
    from pbxcore.tenancy.snapshot import ScheduleConfig  # noqa: PLC0415

    world = _menu_world(timeout_s=3, options={"3": {"type": "schedule", "id": "sch-1"}})
    a = world.tenants["A"]
    days = frozenset({"mon", "tue", "wed", "thu", "fri", "sat", "sun"})
    always = ScheduleConfig(
        "sch-1", "Always", "UTC", ((days, "00:00", "24:00"),), frozenset(),
        {"type": "ivr", "id": "ivr-2"}, {"type": "hangup"},
    )  # fmt: skip
    second = replace(
        a.ivrs["ivr-1"],
        id="ivr-2",
        name="Sales",
        options={"2": {"type": "extension", "id": "e202"}},
    )
    tenant = replace(
        a, features=frozenset({"ivr", "schedules"}), ivrs={**a.ivrs, "ivr-2": second},
        schedules={"sch-1": always},
    )  # fmt: skip
    world = replace(world, tenants={"A": tenant})
    pbx.b2bua._snapshot = lambda: world
    carrier, invite, rtp = await _carrier_calls_the_menu(pbx, None)
    try:
        await _keys_by_info(carrier, invite, "32")
        for _ in range(500):
            if pbx.phones["202"].invites:
                break
            await asyncio.sleep(0.01)
        assert len(pbx.phones["202"].invites) == 1 and not pbx.phones["201"].invites
    finally:
        rtp.close()  # type: ignore[attr-defined]
        await carrier.stop()  # type: ignore[attr-defined]


async def test_the_caller_hanging_up_while_the_menus_extension_rings_cancels_it(
    pbx: Pbx,
) -> None:
    world = _menu_world(timeout_s=5)
    pbx.b2bua._snapshot = lambda: world
    callee = pbx.phones["202"]
    callee.answer = "ring"
    carrier, invite, rtp = await _carrier_calls_the_menu(pbx, "2")
    try:
        for _ in range(500):
            if callee.invites:
                break
            await asyncio.sleep(0.01)
        assert callee.invites  # it rings
        bye = invite.dialog.new_request("BYE")  # type: ignore[attr-defined]
        assert (await carrier.request(bye, dialog=invite.dialog)).status == 200  # type: ignore[attr-defined]
        await asyncio.wait_for(callee.cancelled.wait(), 10)  # the ringing phone stops
        for _ in range(500):
            if not pbx.b2bua.calls and not pbx.media.calls:
                break
            await asyncio.sleep(0.01)
        assert not pbx.b2bua.calls and not pbx.media.calls
    finally:
        rtp.close()  # type: ignore[attr-defined]
        await carrier.stop()  # type: ignore[attr-defined]
