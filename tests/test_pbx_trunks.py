"""Outbound registration: a trunk with ``register: true`` registers to a SIPp registrar that
challenges with digest (alice/secret), and its state is reported."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pbxcore.pbx.trunks import TrunkRegistrations
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
