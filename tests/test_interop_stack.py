"""Interop: :class:`~pbxcore.sip.stack.SipStack` against real SIPp, both directions.

SIPp plays the UAC (scenarios ``tests/peers/sipp_uac_*.xml``) against our INVITE/BYE
handlers, and the UAS (``tests/peers/sipp_uas_*.xml`` and the built-in ``uas``) against
:meth:`SipStack.invite`. SIPp's exit status is 0 only when its scenario ran to the end,
so every message it expects (the 180, the 200 retransmission, our BYE, the ACK...) is
checked by SIPp itself; the test checks what our side saw.

The stack binds port 0; SIPp gets a port found free at run time and is started again on
another one when it loses the race for it. Every SIPp process is stopped at the end of
its test, killed when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pbxcore.sip.dialog import Dialog
from pbxcore.sip.message import Request, Response
from pbxcore.sip.stack import IncomingRequest, SipStack, StaticCredentials, Target
from pbxcore.sip.transaction import TimerSettings
from pbxcore.sip.transport import ListenAddress, TransportName
from tests.helpers import PEERS, require_binary

pytestmark = pytest.mark.peers

HOST = "127.0.0.1"
# small T1: the 2xx retransmission and the 64*T1 ACK timeout happen within seconds
TIMERS = TimerSettings(t1=0.1, t2=0.8)
SDP = (
    b"v=0\r\no=pbxcore 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
SIPP_TIMEOUT = 30.0  # seconds SIPp may run at most (its own -timeout, and ours after it)
BIND_ATTEMPTS = 5


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (at the time of asking)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port on 127.0.0.1")


def _bound(port: int, transport: TransportName) -> bool:
    """Whether something on this machine listens on ``port`` (from /proc/net)."""
    table = Path("/proc/net/udp" if transport == "udp" else "/proc/net/tcp")
    wanted = f"0100007F:{port:04X}"
    for line in table.read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and (transport == "udp" or fields[3] == "0A"):
            return True
    return False


@dataclass
class SippResult:
    returncode: int
    output: str
    folder: Path

    @property
    def messages(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.folder.glob("*_messages.log"))

    @property
    def errors(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.folder.glob("*_errors.log"))

    def received(self) -> list[str]:
        """The messages SIPp received, in order (from its -trace_msg log)."""
        blocks = re.split(r"^-{20,} [^\n]*\n", self.messages, flags=re.MULTILINE)
        return [
            block.split("\n\n", 1)[1]
            for block in blocks
            if " message received " in block.split("\n", 1)[0] and "\n\n" in block
        ]

    def explain(self) -> str:
        return f"exit {self.returncode}\n{self.output[-3000:]}\n{self.errors[-3000:]}"


class Sipp:
    """One SIPp process in a test's folder; :meth:`stop` kills it if it still runs."""

    def __init__(self, folder: Path, transport: TransportName) -> None:
        self.folder = folder
        self.transport = transport
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None

    async def start(self, args: list[str], *, wait_bound: bool) -> None:
        """Start ``sipp ARGS`` on a free port; with ``wait_bound``, return once it
        listens there (a UAS must, before we send it anything)."""
        sipp = require_binary("sipp")
        for _ in range(BIND_ATTEMPTS):
            self.port = _free_port()
            command = [
                sipp, *args, "-i", HOST, "-p", str(self.port),
                "-t", "u1" if self.transport == "udp" else "t1",
                "-m", "1", "-nostdin", "-timeout", f"{int(SIPP_TIMEOUT)}s",
                "-trace_err", "-trace_msg",
            ]  # fmt: skip
            self._process = await asyncio.create_subprocess_exec(
                *command,
                cwd=self.folder,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            if not wait_bound:
                return
            while self._process.returncode is None and not _bound(self.port, self.transport):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._process.wait(), 0.02)
            if self._process.returncode is None:
                return
            result = await self.result()
            if "Unable to bind" not in result.output:
                pytest.fail(f"SIPp exited before listening: {result.explain()}")
        pytest.fail(f"SIPp found no free port in {BIND_ATTEMPTS} attempts")

    async def result(self) -> SippResult:
        """Wait for SIPp to end (killing it after SIPP_TIMEOUT) and collect its output."""
        process = self._process
        assert process is not None and process.stdout is not None
        try:
            output = await asyncio.wait_for(process.stdout.read(), SIPP_TIMEOUT + 10)
            await process.wait()
        except TimeoutError:
            self.stop()
            await process.wait()
            pytest.fail("SIPp did not end")
        assert process.returncode is not None
        return SippResult(process.returncode, output.decode(errors="replace"), self.folder)

    async def run(self, args: list[str]) -> SippResult:
        """Run a SIPp UAC to its end, on another port if it loses the race for one."""
        for _ in range(BIND_ATTEMPTS):
            await self.start(args, wait_bound=False)
            result = await self.result()
            if "Unable to bind" not in result.output:
                return result
        pytest.fail(f"SIPp found no free port in {BIND_ATTEMPTS} attempts")

    def stop(self) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            process.kill()


@pytest.fixture
async def sipp(tmp_path: Path) -> AsyncIterator[Callable[[TransportName], Sipp]]:
    started: list[Sipp] = []

    def make(transport: TransportName = "udp") -> Sipp:
        folder = tmp_path / f"sipp{len(started)}"
        folder.mkdir()
        peer = Sipp(folder, transport)
        started.append(peer)
        return peer

    try:
        yield make
    finally:
        for peer in started:
            peer.stop()
            if peer._process is not None:
                await peer._process.wait()


@pytest.fixture
async def stack() -> AsyncIterator[SipStack]:
    async with SipStack(listen=ListenAddress.parse(f"{HOST}:0"), timers=TIMERS) as node:
        yield node


def _uac_args(stack: SipStack, transport: TransportName, scenario: str) -> list[str]:
    address = stack.address(transport)
    return [f"{address.host}:{address.port}", "-sf", str(PEERS / scenario), "-s", "alice"]


async def _eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until ``condition()`` holds: work the stack finishes after SIPp."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"never happened: {what}")


# -- SIPp as the UAC, our handlers as the UAS ---------------------------------------------------


class Callee:
    """INVITE and BYE handlers that answer 180, then 200 with SDP, and record the call."""

    def __init__(self, stack: SipStack, *, hang_up: bool = False) -> None:
        self.stack = stack
        self.hang_up = hang_up
        self.invites: list[IncomingRequest] = []
        self.acks: list[Request] = []
        self.ack_errors: list[BaseException] = []
        self.byes: list[IncomingRequest] = []
        self.bye_responses: list[Response] = []
        self.dialog_count_at_answer = -1
        stack.set_handler("INVITE", self.on_invite)
        stack.set_handler("BYE", self.on_bye)

    async def on_invite(self, incoming: IncomingRequest) -> None:
        self.invites.append(incoming)
        incoming.respond(180)
        await asyncio.sleep(0)  # the 180 and the 200 leave in separate turns
        incoming.respond(200, body=SDP, content_type="application/sdp")
        self.dialog_count_at_answer = self.stack.dialog_count
        try:
            self.acks.append(await incoming.wait_ack())
        except TimeoutError as exc:
            self.ack_errors.append(exc)
            return
        if self.hang_up:
            dialog = incoming.dialog
            assert dialog is not None
            response = await self.stack.request(dialog.new_request("BYE"), dialog=dialog)
            self.bye_responses.append(response)

    def on_bye(self, incoming: IncomingRequest) -> None:
        self.byes.append(incoming)
        incoming.respond(200)


TRANSPORTS = pytest.mark.parametrize("transport", ["udp", "tcp"])


@TRANSPORTS
async def test_sipp_calls_us_and_hangs_up(
    stack: SipStack, sipp: Callable[[TransportName], Sipp], transport: TransportName
) -> None:
    callee = Callee(stack)
    result = await sipp(transport).run(_uac_args(stack, transport, "sipp_uac_call.xml"))
    assert result.returncode == 0, result.explain()
    assert len(callee.invites) == 1
    assert callee.invites[0].request.body.startswith(b"v=0")
    assert callee.dialog_count_at_answer == 1
    [ack] = callee.acks  # wait_ack() returned SIPp's ACK
    assert ack.method == "ACK" and ack.call_id == callee.invites[0].request.call_id
    [bye] = callee.byes
    assert bye.dialog is callee.invites[0].dialog
    assert bye.final_status == 200
    assert stack.dialog_count == 0
    messages = result.messages
    assert "SIP/2.0 180 Ringing" in messages and "SIP/2.0 200 OK" in messages


@TRANSPORTS
async def test_we_hang_up_on_sipp(
    stack: SipStack, sipp: Callable[[TransportName], Sipp], transport: TransportName
) -> None:
    callee = Callee(stack, hang_up=True)
    result = await sipp(transport).run(_uac_args(stack, transport, "sipp_uac_call_remote_bye.xml"))
    assert result.returncode == 0, result.explain()
    assert len(callee.acks) == 1
    await _eventually(lambda: bool(callee.bye_responses), "the 200 to our BYE")
    assert [r.status for r in callee.bye_responses] == [200]
    assert callee.byes == []
    assert stack.dialog_count == 0


@TRANSPORTS
async def test_sipp_cancels_after_180(
    stack: SipStack, sipp: Callable[[TransportName], Sipp], transport: TransportName
) -> None:
    seen: list[IncomingRequest] = []
    fired: list[bool] = []

    def on_invite(incoming: IncomingRequest) -> None:
        seen.append(incoming)
        incoming.on_cancel(lambda: fired.append(incoming.cancelled))
        incoming.respond(180)  # and never a final: the CANCEL brings the 487

    stack.set_handler("INVITE", on_invite)
    result = await sipp(transport).run(_uac_args(stack, transport, "sipp_uac_cancel.xml"))
    assert result.returncode == 0, result.explain()
    [incoming] = seen
    assert fired == [True]  # the callback ran once, with cancelled already set
    assert incoming.cancelled
    assert incoming.final_status == 487
    assert stack.dialog_count == 0  # the early dialog of the 180 ended with the 487
    responses = {m.split("\n", 1)[0].split(" ", 1)[1].strip(): m for m in result.received()}
    assert set(responses) == {"100 Trying", "180 Ringing", "200 OK", "487 Request Terminated"}
    # §9.2: the 200 to the CANCEL carries the To tag of the INVITE's responses
    tags = {
        status: re.findall(r"\nTo: [^\r\n]*;tag=([^;\r\n]+)", m) for status, m in responses.items()
    }
    assert tags["180 Ringing"] == tags["200 OK"] == tags["487 Request Terminated"]
    assert len(tags["180 Ringing"]) == 1


@TRANSPORTS
async def test_sipp_loses_the_ack_and_gets_the_200_again(
    stack: SipStack, sipp: Callable[[TransportName], Sipp], transport: TransportName
) -> None:
    callee = Callee(stack)
    result = await sipp(transport).run(
        [*_uac_args(stack, transport, "sipp_uac_ack_lost.xml"), "-nr"]
    )
    assert result.returncode == 0, result.explain()
    [ack] = callee.acks
    assert ack.call_id == callee.invites[0].request.call_id
    assert callee.ack_errors == []
    assert len(callee.byes) == 1
    assert stack.dialog_count == 0
    # SIPp received the INVITE's 200 at least twice (its scenario waited for both)
    answers = [
        m for m in result.received() if m.startswith("SIP/2.0 200") and "CSeq: 1 INVITE" in m
    ]
    assert len(answers) >= 2
    assert len(set(answers)) == 1  # retransmissions: the same bytes


@TRANSPORTS
async def test_sipp_never_acks_and_we_send_bye(
    stack: SipStack, sipp: Callable[[TransportName], Sipp], transport: TransportName
) -> None:
    callee = Callee(stack)
    result = await sipp(transport).run(_uac_args(stack, transport, "sipp_uac_ack_never.xml"))
    assert result.returncode == 0, result.explain()  # SIPp got our BYE and answered it
    assert callee.acks == []
    [error] = callee.ack_errors
    assert isinstance(error, TimeoutError)
    await _eventually(lambda: stack.dialog_count == 0, "the dialog ends with the BYE's 200")
    assert callee.byes == []


# -- our stack as the UAC, SIPp as the UAS ------------------------------------------------------


async def _start_uas(sipp: Sipp, scenario: str | None) -> Target:
    args = ["-sn", "uas"] if scenario is None else ["-sf", str(PEERS / scenario)]
    await sipp.start(args, wait_bound=True)
    return Target(sipp.transport, HOST, sipp.port)


def _invite_to(stack: SipStack, target: Target) -> Request:
    transport = "" if target.transport == "udp" else f";transport={target.transport}"
    return stack.new_request(
        "INVITE",
        f"sip:bob@{target.host}:{target.port}{transport}",
        from_="<sip:alice@pbx.test>",
        target=target,
        body=SDP,
        headers=[("Content-Type", "application/sdp")],
    )


async def _hang_up(stack: SipStack, dialog: Dialog | None) -> Response:
    assert dialog is not None
    response = await stack.request(dialog.new_request("BYE"), dialog=dialog)
    assert stack.dialog_count == 0
    return response


@TRANSPORTS
async def test_we_call_sipp_with_early_media(
    stack: SipStack, sipp: Callable[[TransportName], Sipp], transport: TransportName
) -> None:
    peer = sipp(transport)
    target = await _start_uas(peer, "sipp_uas_early_media.xml")
    invite = await stack.invite(_invite_to(stack, target), target=target)
    seen = [response async for response in invite.responses()]
    assert [r.status for r in seen] == [180, 183, 200]
    assert seen[1].body.startswith(b"v=0") and b"m=audio 6002 RTP/AVP 0" in seen[1].body
    assert b"m=audio 6002" in seen[2].body
    final = await invite.final
    assert final is seen[2]
    assert invite.dialog is not None and invite.dialog.remote_tag == final.to.tag
    [route] = invite.dialog.route_set  # SIPp's Record-Route: SIPp checks our Route
    assert route.startswith(f"<sip:{HOST}:{target.port};transport=")
    assert set(invite.early) <= {final.to.tag}  # the early dialog became the dialog
    assert stack.dialog_count == 1
    assert (await _hang_up(stack, invite.dialog)).status == 200
    result = await peer.result()
    assert result.returncode == 0, result.explain()  # it got our ACK and our BYE
    # one ACK (sent again, the same, should SIPp have retransmitted its 200)
    acks = {m for m in result.received() if m.startswith("ACK ")}
    assert len(acks) == 1
    assert f"tag={final.to.tag}" in acks.pop()


@TRANSPORTS
async def test_we_call_sipps_builtin_uas(
    stack: SipStack, sipp: Callable[[TransportName], Sipp], transport: TransportName
) -> None:
    peer = sipp(transport)
    target = await _start_uas(peer, None)
    invite = await stack.invite(_invite_to(stack, target), target=target)
    statuses = [response.status async for response in invite.responses()]
    assert statuses[-1] == 200 and 180 in statuses
    assert (await _hang_up(stack, invite.dialog)).status == 200
    result = await peer.result()
    assert result.returncode == 0, result.explain()


@TRANSPORTS
async def test_we_cancel_a_ringing_call(
    stack: SipStack, sipp: Callable[[TransportName], Sipp], transport: TransportName
) -> None:
    peer = sipp(transport)
    target = await _start_uas(peer, "sipp_uas_cancel.xml")
    invite = await stack.invite(_invite_to(stack, target), target=target)
    statuses = []
    async for response in invite.responses():
        statuses.append(response.status)
        if response.status == 180:
            invite.cancel()
    assert statuses == [180, 487]
    assert (await invite.final).status == 487
    assert invite.cancelled
    assert invite.dialog is None and stack.dialog_count == 0
    result = await peer.result()
    assert result.returncode == 0, result.explain()  # CANCEL, then the ACK for the 487
    [cancel] = [m for m in result.received() if m.startswith("CANCEL ")]
    [ack] = [m for m in result.received() if m.startswith("ACK ")]
    branch = re.compile(r"branch=([^;\r\n]+)")
    invite_branch = branch.search(invite.request.headers.get("via") or "")
    assert invite_branch is not None
    assert branch.findall(cancel) == branch.findall(ack) == [invite_branch.group(1)]


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _digest_matches(header: str, method: str, password: str) -> bool:
    """Whether a qop=auth MD5 answer (RFC 7616 §3.4.1) was made with ``password``:
    computed here with hashlib, independently of pbxcore.sip.auth."""
    params: dict[str, str] = {
        name: quoted or bare
        for name, quoted, bare in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', header)
    }
    ha1 = _md5(f"{params['username']}:{params['realm']}:{password}")
    ha2 = _md5(f"{method}:{params['uri']}")
    expected = _md5(
        f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}"
    )
    return params["response"] == expected


@TRANSPORTS
@pytest.mark.parametrize(("password", "status"), [("secret", 200), ("wrong", 403)])
async def test_we_answer_a_www_challenge(
    stack: SipStack,
    sipp: Callable[[TransportName], Sipp],
    password: str,
    status: int,
    transport: TransportName,
) -> None:
    """SIPp's <verifyauth> checks the answer to its 401: 200 for the right password,
    403 for a wrong one."""
    peer = sipp(transport)
    target = await _start_uas(peer, "sipp_uas_www_auth.xml")
    invite = await stack.invite(
        _invite_to(stack, target),
        target=target,
        credentials=StaticCredentials("alice", password),
    )
    final = await invite.final
    assert final.status == status
    if status == 200:
        assert (await _hang_up(stack, invite.dialog)).status == 200
    else:
        assert invite.dialog is None and stack.dialog_count == 0
    result = await peer.result()
    assert result.returncode == 0, result.explain()  # including the ACK of the 401/403
    invites = [m for m in result.received() if m.startswith("INVITE ")]
    assert len(invites) == 2
    assert "\nAuthorization: Digest " in invites[1]


@pytest.mark.parametrize("password", ["secret", "wrong"])
async def test_we_answer_a_proxy_challenge(
    stack: SipStack, sipp: Callable[[TransportName], Sipp], password: str
) -> None:
    """407: SIPp checks that Proxy-Authorization answers its challenge (its verifyauth
    cannot read that header); the digest is recomputed here from what SIPp received."""
    peer = sipp("udp")
    target = await _start_uas(peer, "sipp_uas_proxy_auth.xml")
    invite = await stack.invite(
        _invite_to(stack, target),
        target=target,
        credentials=StaticCredentials("alice", password),
    )
    assert (await invite.final).status == 200
    assert (await _hang_up(stack, invite.dialog)).status == 200
    result = await peer.result()
    assert result.returncode == 0, result.explain()
    first, second = [m for m in result.received() if m.startswith("INVITE ")]
    assert "Authorization" not in first
    assert "\nAuthorization:" not in second  # the answer goes where the challenge came from
    [header] = re.findall(r"\nProxy-Authorization: (Digest [^\r\n]+)", second)
    assert _digest_matches(header, "INVITE", password)
    assert not _digest_matches(header, "INVITE", "secret" if password == "wrong" else "wrong")
    # the CSeq went up by one for the retry (RFC 3261 §22.2)
    assert re.search(r"\nCSeq: 1 INVITE", first) and re.search(r"\nCSeq: 2 INVITE", second)


async def test_sipp_reinvites_and_we_hang_up_on_its_new_target(
    stack: SipStack, sipp: Callable[[TransportName], Sipp]
) -> None:
    """The first ACK reuses the INVITE's branch (it reaches the Accepted transaction);
    the re-INVITE refreshes the target, and our BYE goes to the new Contact."""
    acks: list[Request] = []
    invites: list[IncomingRequest] = []
    hung_up: list[Response] = []

    async def on_invite(incoming: IncomingRequest) -> None:
        invites.append(incoming)
        if incoming.dialog is None:
            incoming.respond(180)
        incoming.respond(200, body=SDP, content_type="application/sdp")
        acks.append(await incoming.wait_ack())
        dialog = incoming.dialog
        assert dialog is not None
        if len(acks) == 2:
            hung_up.append(await stack.request(dialog.new_request("BYE"), dialog=dialog))

    stack.set_handler("INVITE", on_invite)
    result = await sipp("udp").run(_uac_args(stack, "udp", "sipp_uac_reinvite.xml"))
    assert result.returncode == 0, result.explain()
    first, second = invites
    assert first.dialog is not None and second.dialog is first.dialog
    assert [ack.cseq for ack in acks] == [(1, "ACK"), (2, "ACK")]
    assert first.dialog.remote_target.user == "moved"
    assert first.dialog.remote_seq == 2
    await _eventually(lambda: bool(hung_up), "the 200 to our BYE")
    assert hung_up[0].status == 200
    assert stack.dialog_count == 0


async def test_we_ack_a_late_offer_ourselves(
    stack: SipStack, sipp: Callable[[TransportName], Sipp]
) -> None:
    """auto_ack=False: the 2xx carries SIPp's offer, our ACK the answer. A retransmission
    of that 2xx arriving before ack() is the same answer, not a second fork: the call
    must survive it."""
    peer = sipp("udp")
    target = await _start_uas(peer, "sipp_uas_late_offer.xml")
    request = stack.new_request(
        "INVITE", f"sip:bob@{target.host}:{target.port}", from_="<sip:alice@pbx.test>"
    )
    invite = await stack.invite(request, target=target, auto_ack=False)
    final = await invite.final
    assert final.status == 200 and b"m=audio 6002" in final.body
    received = stack.stats["responses"]
    await _eventually(lambda: stack.stats["responses"] > received, "SIPp retransmits its 200")
    assert invite.dialog is not None and stack.dialog_count == 1
    ack = invite.ack(body=SDP, content_type="application/sdp")
    assert ack.body == SDP and ack.cseq == (1, "ACK")
    assert (await _hang_up(stack, invite.dialog)).status == 200
    result = await peer.result()
    assert result.returncode == 0, result.explain()  # the ACK with the answer; our BYE
    acks = {m for m in result.received() if m.startswith("ACK ")}
    assert len(acks) == 1  # the same ACK whenever SIPp's 200 came again after it
    assert "m=audio 4000 RTP/AVP 0" in acks.pop()


@pytest.mark.parametrize("bye_handler", [True, False])
async def test_sipp_hangs_up_on_our_call(
    stack: SipStack, sipp: Callable[[TransportName], Sipp], bye_handler: bool
) -> None:
    """SIPp's BYE ends our dialog, through our BYE handler or, without one, the stack's
    own 200 (RFC 3261 §15.1.2: a BYE in a dialog gets a 2xx, never a 405)."""
    byes: list[IncomingRequest] = []

    def on_bye(incoming: IncomingRequest) -> None:
        byes.append(incoming)
        incoming.respond(200)

    if bye_handler:
        stack.set_handler("BYE", on_bye)
    peer = sipp("udp")
    target = await _start_uas(peer, "sipp_uas_hangs_up.xml")
    invite = await stack.invite(_invite_to(stack, target), target=target)
    assert (await invite.final).status == 200
    result = await peer.result()
    assert result.returncode == 0, result.explain()  # our ACK, and 200 to its BYE
    if bye_handler:
        [bye] = byes
        assert bye.dialog is invite.dialog
    assert stack.dialog_count == 0


async def test_we_cancel_before_any_provisional(
    stack: SipStack, sipp: Callable[[TransportName], Sipp]
) -> None:
    """cancel() at once: the CANCEL waits for the 180 (RFC 3261 §9.1), then goes."""
    peer = sipp("udp")
    target = await _start_uas(peer, "sipp_uas_cancel.xml")
    invite = await stack.invite(_invite_to(stack, target), target=target)
    invite.cancel()
    assert invite.cancelled
    statuses = [response.status async for response in invite.responses()]
    assert statuses == [180, 487]
    result = await peer.result()
    assert result.returncode == 0, result.explain()
    received = result.received()
    assert [m.split(" ", 1)[0] for m in received] == ["INVITE", "CANCEL", "ACK"]
