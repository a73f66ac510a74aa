"""Media interop through pbxcore's B2BUA with SIPp on loopback (issue 10, "Media").

SIPp is an extension of tenant A: its INVITE is challenged with 407 and sent again with
its digest; the dialed number goes out by the tenant's route table to a SIPp carrier that
echoes RTP (``-rtp_echo``). The caller plays real G.711 A-law audio and three RFC 4733
digits from the sip-tester pcaps; everything must reach the carrier through the relay and
come back, packet for packet. The carrier answers either in the caller's law (the relay
forwards) or in the other one without telephone-event (the relay transcodes both ways and
still forwards the digits).

The baresip calls with a tone check (same codec, and a PCMA-only phone to a PCMU-only one)
run through ``pbxcore serve`` in tests/test_server.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pbxcore import g711
from pbxcore.media import DtmfDigit
from pbxcore.media.engine import MediaCall
from pbxcore.media.relay import SessionStats
from tests import test_pbx_b2bua
from tests.helpers import PEERS, REPO, require_binary
from tests.test_pbx_b2bua import DOMAIN, PASSWORDS, Pbx, _carrier_world

pytestmark = pytest.mark.peers

SIPP_PCAPS = Path("/usr/share/sip-tester")
PLAYED = ("g711a", "dtmf_2833_1", "dtmf_2833_5", "dtmf_2833_pound")  # in this order
# packets in SIPp's g711a.pcap and in each dtmf_2833_*.pcap
G711A_PACKETS = 236
DIGIT_PACKETS = 10
SENT = G711A_PACKETS + 3 * DIGIT_PACKETS
PCMA, TELEPHONE_EVENT = 8, 101  # the caller's payload types (tests/data/sipp_uac_pcap_dtmf.xml)

# the B2BUA of tests/test_pbx_b2bua.py (SipStack, registrar, MediaEngine; phones 201-203)
pbx = test_pbx_b2bua.pbx


def free_udp_port(even: bool = False, span: int = 1) -> int:
    """A loopback UDP port (and the next span-1) nobody uses right now."""
    for _ in range(200):
        port = random.randrange(21000, 39000)
        if even:
            port &= ~1
        socks = []
        try:
            for p in range(port, port + span):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port")


def udp_bound(port: int) -> bool:
    """Whether some process has bound 127.0.0.1:port (UDP), read from /proc/net/udp: a
    probe bind could take the port from under the process starting on it."""
    wanted = f"0100007F:{port:04X}"
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return any(line.split()[1] == wanted for line in lines)


def pcap_rtp(path: Path) -> list[bytes]:
    """The RTP packets (UDP payloads) of a pcap of Ethernet/IPv4/UDP frames, in order."""
    data = path.read_bytes()
    magic, _, _, _, _, _, link = struct.unpack("<IHHiIII", data[:24])
    assert (magic, link) == (0xA1B2C3D4, 1), f"{path}: not a little-endian Ethernet pcap"
    out, pos = [], 24
    while pos < len(data):
        length = struct.unpack("<8xI4x", data[pos : pos + 16])[0]
        frame = data[pos + 16 : pos + 16 + length]
        pos += 16 + length
        ip = frame[14:]
        assert frame[12:14] == b"\x08\x00" and ip[9] == 17, f"{path}: not IPv4/UDP"
        udp = ip[(ip[0] & 0x0F) * 4 :]
        out.append(udp[8 : struct.unpack("!H", udp[4:6])[0]])
    return out


class Heard(asyncio.DatagramProtocol):
    """The caller's RTP port as far as the relay can tell: collects what comes back."""

    def __init__(self, expected: int) -> None:
        self.packets: list[bytes] = []
        self.expected = expected
        self.all_back = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets.append(data)
        if len(self.packets) >= self.expected:
            self.all_back.set()


@contextlib.asynccontextmanager
async def process(*argv: str, cwd: Path, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A peer process that is always stopped, whatever the test does."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


@pytest.fixture
async def caller_ear() -> AsyncIterator[tuple[int, Heard]]:
    """SIPp's -mp for the caller, and what arrives on -mp+4, the port its SDP will name."""
    uac_media = free_udp_port(even=True, span=6)
    heard = Heard(SENT)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: heard, local_addr=("127.0.0.1", uac_media + 4)
    )
    yield uac_media, heard
    transport.close()


def _ended_calls(pbx: Pbx, monkeypatch: pytest.MonkeyPatch) -> list[tuple[MediaCall, SessionStats]]:
    """Each call's media with the relay's counters of its two parties, read as the B2BUA
    deletes it (the ports and their counters go with it)."""
    ended: list[tuple[MediaCall, SessionStats]] = []
    delete = pbx.media.delete

    async def delete_counted(call: MediaCall) -> None:
        if call.b is not None and not call.a.released:
            ended.append((call, call.stats()))
        await delete(call)

    monkeypatch.setattr(pbx.media, "delete", delete_counted)
    return ended


@pytest.mark.parametrize(
    ("carrier", "carrier_law", "digits_on"),
    [
        (("-sf", str(PEERS / "sipp_uas_pcma_events.xml")), "alaw", ["a", "b"]),
        (("-sn", "uas"), "ulaw", ["a"]),  # SIPp's own: PCMU, no telephone-event
    ],
    ids=["same-law", "transcoded"],
)
async def test_sipp_pcap_audio_and_digits_through_the_b2bua_to_an_echoing_carrier(
    pbx: Pbx,
    tmp_path: Path,
    caller_ear: tuple[int, Heard],
    monkeypatch: pytest.MonkeyPatch,
    carrier: tuple[str, ...],
    carrier_law: str,
    digits_on: list[str],
) -> None:
    sipp = require_binary("sipp")
    if not (SIPP_PCAPS / "g711a.pcap").exists():
        pytest.fail(f"SIPp pcaps missing in {SIPP_PCAPS} (package sip-tester)")
    (tmp_path / "pcap").symlink_to(SIPP_PCAPS)
    scenario = tmp_path / "uac_pcap_dtmf.xml"  # SIPp looks for pcap/ next to the scenario
    # SIPp binds -mp and -mp+2 itself and never reads them; it plays the pcaps from the
    # port its SDP names (raw socket). Naming -mp+4, which the test listens on, lets the test
    # hear what the relay sends back to the caller.
    xml = (REPO / "tests" / "data" / "sipp_uac_pcap_dtmf.xml").read_text()
    assert xml.count("m=audio [auto_media_port] ") == 2  # the INVITE and its authenticated copy
    scenario.write_text(xml.replace("m=audio [auto_media_port] ", "m=audio [auto_media_port+4] "))
    carrier_port, uac_port = free_udp_port(), free_udp_port()
    echo_port = free_udp_port(even=True, span=4)
    uac_media, heard = caller_ear
    # tenant A's route table sends 7495... out through the trunk to the SIPp carrier
    world = _carrier_world({"carrier": carrier_port})
    pbx.b2bua._snapshot = lambda: world
    ended = _ended_calls(pbx, monkeypatch)
    server = pbx.phones["201"].server
    uas = process(
        sipp, *carrier, "-rtp_echo", "-i", "127.0.0.1", "-mi", "127.0.0.1",
        "-mp", str(echo_port), "-p", str(carrier_port), "-m", "1", "-nostdin",
        "-timeout", "40s", "-trace_err", cwd=tmp_path, log=tmp_path / "uas.log",
    )  # fmt: skip
    uac = process(
        sipp, f"{server.host}:{server.port}", "-sf", str(scenario), "-s", "84951234567",
        "-au", "201", "-ap", PASSWORDS["201"], "-auth_uri", f"84951234567@{DOMAIN}",
        "-set", "domain", DOMAIN, "-set", "caller", "201",
        "-i", "127.0.0.1", "-mi", "127.0.0.1", "-mp", str(uac_media), "-p", str(uac_port),
        "-m", "1", "-nostdin", "-timeout", "40s", "-trace_err", "-trace_msg",
        cwd=tmp_path, log=tmp_path / "uac.log",
    )  # fmt: skip
    async with uas as uas_proc:
        while not udp_bound(carrier_port):  # the carrier listens before it is called
            assert uas_proc.returncode is None, (tmp_path / "uas.log").read_text()[-2000:]
            await asyncio.sleep(0.02)
        async with uac as uac_proc:
            rc = await asyncio.wait_for(uac_proc.wait(), 60)
        traced = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*_messages.log"))
        assert rc == 0, traced[-4000:] + (tmp_path / "uac.log").read_text(errors="replace")[-2000:]
        assert await asyncio.wait_for(uas_proc.wait(), 20) == 0  # it got its BYE
    assert "SIP/2.0 407 " in traced and "Proxy-Authorization: Digest" in traced
    await asyncio.wait_for(heard.all_back.wait(), 10)
    assert not pbx.b2bua.calls and not pbx.media.calls  # ended, nothing left behind
    [(call, stats)] = ended
    assert call.a.law == "alaw" and call.b is not None and call.b.law == carrier_law
    # the relay counted every packet to the echo and every echo back to the caller ...
    assert stats.a.packets == stats.b.sent_packets == SENT
    assert stats.b.packets == stats.a.sent_packets == SENT
    assert stats.a.dropped_invalid == stats.a.dropped_unlatched == 0
    assert stats.b.dropped_invalid == stats.b.dropped_unlatched == 0
    assert stats.a.peer == ("127.0.0.1", uac_media + 4)
    # ... and the caller heard its own audio and digits back, packet for packet: A-law as
    # it sent it, or through A-law -> mu-law -> A-law when the carrier talks mu-law
    played = [rtp for name in PLAYED for rtp in pcap_rtp(SIPP_PCAPS / f"{name}.pcap")]
    assert len(played) == SENT
    assert len(heard.packets) == SENT
    if carrier_law == "ulaw":
        played = [
            p[:12] + g711.ulaw2alaw(g711.alaw2ulaw(p[12:])) if p[1] & 0x7F == PCMA else p
            for p in played
        ]
    assert heard.packets == played
    payload_types = [p[1] & 0x7F for p in heard.packets]
    assert payload_types.count(PCMA) == G711A_PACKETS
    assert payload_types.count(TELEPHONE_EVENT) == 3 * DIGIT_PACKETS
    # the relay reports the digits of each party that agreed on telephone-event with it
    for name, leg in (("a", call.a), ("b", call.b)):
        digits: list[DtmfDigit] = [d async for d in leg.digits()]  # until the leg's release
        expected = ["1", "5", "#"] if name in digits_on else []
        assert [d.digit for d in digits] == expected, name
        assert all(d.duration_ms == 280 for d in digits)  # as in the pcaps (2240 / 8 kHz)
