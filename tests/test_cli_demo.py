"""``pbxcore demo``: a seeded server on loopback whose printed logins and softphone
accounts work as printed: the client admin logs in, 201 calls 202, 8 495 ... goes out to
the test carrier, SIGTERM stops it with status 0."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from pathlib import Path

import pytest

from pbxcore.sip.stack import SipStack, StaticCredentials, Target
from pbxcore.sip.transaction import TimerSettings
from pbxcore.sip.transport import ListenAddress
from tests.helpers import pbxcore_command, require_binary
from tests.peers.api import ApiClient
from tests.peers.pbxserve import free_port

pytestmark = pytest.mark.peers

SDP = (
    b"v=0\r\no=d 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 37000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def _read_instructions(process: subprocess.Popen[str]) -> str:
    """What the demo prints up to its last instruction (pytest-timeout bounds the wait)."""
    assert process.stdout is not None
    text = ""
    for line in process.stdout:
        text += line
        if line.lstrip().startswith("calls "):
            return text
    pytest.fail(f"pbxcore demo stopped: {text}")


async def _calls(sip_port: int, domain: str, passwords: dict[str, str], carrier: Path) -> None:
    target = Target("udp", "127.0.0.1", sip_port)
    timers = TimerSettings(t1=0.1, t2=0.8, t4=1.0)
    listen = ListenAddress.parse("udp:127.0.0.1:0")
    async with (
        SipStack(listen=listen, timers=timers) as a,
        SipStack(listen=listen, timers=timers) as b,
    ):

        async def answer(incoming: object) -> None:
            incoming.respond(200, body=SDP, content_type="application/sdp")  # type: ignore[attr-defined]

        b.set_handler("INVITE", answer)
        b.set_handler("BYE", lambda incoming: incoming.respond(200))
        for stack, number in ((a, "201"), (b, "202")):
            request = stack.new_request(
                "REGISTER", f"sip:{domain}", from_=f"<sip:{number}@{domain}>",
                to=f"<sip:{number}@{domain}>", target=target,
            )  # fmt: skip
            creds = StaticCredentials(number, passwords[number])
            assert (await stack.request(request, target=target, credentials=creds)).status == 200
        for dialed in ("202", "84951234567"):
            invite = a.new_request(
                "INVITE", f"sip:{dialed}@{domain}", from_=f"<sip:201@{domain}>", target=target,
                body=SDP, headers=[("Content-Type", "application/sdp")],
            )  # fmt: skip
            call = await a.invite(
                invite, target=target, credentials=StaticCredentials("201", passwords["201"])
            )
            final = await asyncio.wait_for(call.final, 20)
            assert final.status == 200, (dialed, final)
            assert call.dialog is not None
            assert (
                await a.request(call.dialog.new_request("BYE"), dialog=call.dialog)
            ).status == 200


def test_the_demo_serves_what_it_prints(tmp_path: Path) -> None:
    sipp = require_binary("sipp")
    sip_port, api_port, carrier_port = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [*pbxcore_command(), "demo", "--data-dir", str(tmp_path / "demo"),
         "--sip-port", str(sip_port), "--api-port", str(api_port),
         "--carrier-port", str(carrier_port), "--rtp-ports", "46100-46199"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    carrier_dir = tmp_path / "carrier"
    carrier_dir.mkdir()
    carrier = subprocess.Popen(
        [sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", str(carrier_port), "-m", "1",
         "-nostdin", "-timeout", "60s", "-trace_msg"],
        cwd=carrier_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        text = _read_instructions(process)
        boss = re.search(r"client admin:\s+(\S+) / (\S+)", text)
        assert boss is not None, text
        passwords = dict(re.findall(r"user (\d+), password (\S+)", text))
        assert sorted(passwords) == ["201", "202"], text
        domain = boss.group(1).split("@", 1)[1]
        assert domain == "acme.demo.test"
        api = ApiClient(f"http://127.0.0.1:{api_port}/api/v1")
        api.login(boss.group(1), boss.group(2))
        tenant = re.search(r"/tenants/(\S+)/calls", text)
        assert tenant is not None
        extensions = api.call("GET", f"/tenants/{tenant.group(1)}/extensions", 200)
        assert sorted(e["number"] for e in extensions["items"]) == ["201", "202"]
        numbers = api.call("GET", f"/tenants/{tenant.group(1)}/numbers", 200)["items"]
        assert all(n["destination"]["type"] == "extension" for n in numbers) and len(numbers) == 2
        asyncio.run(_calls(sip_port, domain, passwords, carrier_dir))
        assert carrier.wait(30) == 0
        traced = "".join(p.read_text() for p in carrier_dir.glob("*_messages.log"))
        assert "INVITE sip:+74951234567@127.0.0.1" in traced
        for secret in (boss.group(2), *passwords.values()):
            assert text.count(secret) == 1  # printed once, in the instructions only
    finally:
        carrier.kill()
        process.send_signal(signal.SIGTERM)
        out = process.communicate(timeout=30)[0]
    assert process.returncode == 0, out
    for secret in passwords.values():
        assert secret not in out  # nothing logged them


def test_the_demo_refuses_a_directory_with_a_database(tmp_path: Path) -> None:
    (tmp_path / "pbxcore.db").write_text("")
    result = subprocess.run(
        [*pbxcore_command(), "demo", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "holds a database already" in result.stderr
