"""Outbound registration: a trunk with ``register: true`` registers to a SIPp registrar that
challenges with digest (alice/secret), and its state is reported."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from pbxcore.pbx.trunks import TrunkRegistrations
from pbxcore.sip.message import Request
from pbxcore.sip.stack import SipStack
from pbxcore.sip.transaction import TimerSettings
from pbxcore.sip.transport import ListenAddress
from tests.helpers import PEERS, require_binary
from tests.peers.pbxserve import free_port
from tests.test_pbx_decision import operator, snapshot, trunk

pytestmark = pytest.mark.peers


async def _registrar(tmp_path: Path) -> tuple[asyncio.subprocess.Process, int]:
    sipp = require_binary("sipp")
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sipp, "-sf", str(PEERS / "sipp_registrar_digest.xml"), "-i", "127.0.0.1",
        "-p", str(port), "-m", "1", "-nostdin", "-timeout", "20s", "-trace_msg",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    await asyncio.sleep(0.3)  # SIPp binds its port
    return process, port


@pytest.mark.parametrize(("password", "state"), [("secret", "registered"), ("wrong", "failed")])
async def test_a_trunk_registers_to_its_carrier_with_digest(
    tmp_path: Path, password: str, state: str
) -> None:
    process, port = await _registrar(tmp_path)
    carrier = trunk(
        "carrier", host="127.0.0.1", port=port, register=True,
        auth_username="alice", auth_password=password.encode(),
    )  # fmt: skip
    world = snapshot([operator("op1", [carrier], {})], [], [])
    listen = ListenAddress.parse("udp:127.0.0.1:0")
    try:
        async with SipStack(listen=listen, timers=TimerSettings(t1=0.05, t2=0.4)) as stack:
            registrations = TrunkRegistrations(stack, lambda: world, bytes.decode, min_retry=30)
            registrations.sync()
            for _ in range(300):
                status = registrations.status("carrier")
                if status is not None and status.state != "registering":
                    break
                await asyncio.sleep(0.01)
            assert status is not None and status.state == state, status
            if state == "registered":
                assert status.last_status == 200
                assert 55 <= status.to_json()["expires_in"] <= 60  # type: ignore[operator]
                _recognised_by_its_registration(registrations, tmp_path, stack)
            else:
                assert status.last_status == 403 and status.last_error
            # the trunk stops registering: its task ends (an un-REGISTER when registered)
            empty = snapshot([operator("op1", [], {})], [], [])
            registrations._snapshot = lambda: empty
            registrations.sync()
            assert registrations.status("carrier") is None
            await registrations.close()
        assert await asyncio.wait_for(process.wait(), 20) == 0  # SIPp ran its scenario
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _invite(uri: str) -> Request:
    return Request(
        "INVITE",
        uri,
        [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx"),
            ("From", "<sip:+74950000000@carrier.example>;tag=1"),
            ("To", "<sip:+74951110002@carrier.example>"),
            ("Call-ID", "x"),
            ("CSeq", "1 INVITE"),
        ],
    )


def _recognised_by_its_registration(
    registrations: TrunkRegistrations, folder: Path, stack: SipStack
) -> None:
    """The REGISTER's Contact carried a line token; the carrier's INVITE to that Contact is
    the trunk's, from anywhere; without it only the registrar's own address counts."""
    sent = "".join(p.read_text() for p in folder.glob("*_messages.log"))
    found = re.search(r"Contact: <(sip:pbx@[^>]*;line=([0-9a-f]+))>", sent)
    assert found is not None, sent[-2000:]
    contact, token = found.groups()
    assert len(token) == 24
    assert registrations.trunk_for_request(_invite(contact), "192.0.2.7") == "carrier"
    assert registrations.trunk_for_request(_invite(contact.upper()), "192.0.2.7") == "carrier"
    forged = contact.replace(token, "0" * 24)
    assert registrations.trunk_for_request(_invite(forged), "192.0.2.7") is None
    plain = "sip:+74951110002@127.0.0.1"
    assert registrations.trunk_for_request(_invite(plain), "127.0.0.1") == "carrier"
    assert registrations.trunk_for_request(_invite(plain), "192.0.2.7") is None
    assert stack.contact_user == "pbx"
