"""Interop with real peers on loopback: SIPp (G.711 pcap + RFC 2833 digits) and baresip.

A small SIP proxy (tests/peers/sip_media_proxy.py) rewrites the SDP through MediaEngine, so
every RTP packet between the peers crosses a relay session.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import shutil
import socket
import struct
import subprocess
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pbxcore.media import DtmfDigit
from pbxcore.media.engine import MediaEngine
from tests.helpers import PEERS, REPO, require_binary
from tests.peers.sip_media_proxy import SipMediaProxy
from tests.test_rtp_relay import port_range

pytestmark = pytest.mark.peers

SIPP_PCAPS = Path("/usr/share/sip-tester")
# packets in SIPp's g711a.pcap and in each dtmf_2833_*.pcap
G711A_PACKETS = 236
DIGIT_PACKETS = 10


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

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets.append(data)


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
    heard = Heard()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: heard, local_addr=("127.0.0.1", uac_media + 4)
    )
    yield uac_media, heard
    transport.close()


async def test_sipp_pcap_through_relay_to_rtp_echo(tmp_path, caller_ear):
    sipp = require_binary("sipp")
    if not (SIPP_PCAPS / "g711a.pcap").exists():
        pytest.fail(f"SIPp pcaps missing in {SIPP_PCAPS} (package sip-tester)")
    (tmp_path / "pcap").symlink_to(SIPP_PCAPS)
    scenario = tmp_path / "uac_pcap_dtmf.xml"  # SIPp looks for pcap/ next to the scenario
    # SIPp binds -mp and -mp+2 itself and never reads them; it plays the pcaps from the
    # port its SDP names (raw socket). Naming -mp+4, which the test listens on, lets the test
    # hear what the relay sends back to the caller.
    xml = (REPO / "tests" / "data" / "sipp_uac_pcap_dtmf.xml").read_text()
    assert xml.count("m=audio [auto_media_port] ") == 1
    scenario.write_text(xml.replace("m=audio [auto_media_port] ", "m=audio [auto_media_port+4] "))
    uas_port, uac_port = free_udp_port(), free_udp_port()
    echo_port = free_udp_port(even=True, span=4)
    uac_media, heard = caller_ear
    async with MediaEngine(ports=port_range()) as engine:
        proxy = SipMediaProxy(engine, ("127.0.0.1", uas_port))
        _, proxy_port = await proxy.start()
        uas = process(
            sipp, "-sn", "uas", "-rtp_echo", "-i", "127.0.0.1", "-mi", "127.0.0.1",
            "-mp", str(echo_port), "-p", str(uas_port), "-m", "1", "-nostdin",
            "-timeout", "40s", cwd=tmp_path, log=tmp_path / "uas.log",
        )  # fmt: skip
        uac = process(
            sipp, f"127.0.0.1:{proxy_port}", "-sf", str(scenario), "-i", "127.0.0.1",
            "-mi", "127.0.0.1", "-mp", str(uac_media), "-p", str(uac_port), "-m", "1",
            "-nostdin", "-timeout", "40s", "-trace_err", cwd=tmp_path, log=tmp_path / "uac.log",
        )  # fmt: skip
        async with uas, uac as uac_proc:
            rc = await asyncio.wait_for(uac_proc.wait(), 60)
        assert not proxy.errors
        assert rc == 0, (tmp_path / "uac.log").read_text(errors="replace")[-2000:]
        (call,) = proxy.calls.values()
        stats = call.stats()
        sent = G711A_PACKETS + 3 * DIGIT_PACKETS
        # the relay counted every packet to the echo and every echo back to the caller ...
        assert stats.a.packets == sent
        assert stats.b.sent_packets == sent
        assert stats.b.packets == sent
        assert stats.a.sent_packets == sent
        assert stats.a.dropped_invalid == stats.a.dropped_unlatched == 0
        assert stats.a.peer == ("127.0.0.1", uac_media + 4)
        # and the caller heard its own audio and digits back, packet for packet
        for _ in range(100):  # the last few may still be on their way through the loop
            if len(heard.packets) >= sent:
                break
            await asyncio.sleep(0.02)
        played = [
            rtp
            for name in ("g711a", "dtmf_2833_1", "dtmf_2833_5", "dtmf_2833_pound")
            for rtp in pcap_rtp(SIPP_PCAPS / f"{name}.pcap")
        ]
        assert len(played) == sent
        assert len(heard.packets) == sent
        assert heard.packets == played
        assert [p[1] & 0x7F for p in heard.packets].count(8) == G711A_PACKETS
        digits: list[DtmfDigit] = []
        with contextlib.suppress(TimeoutError):
            while len(digits) < 3:
                ev = await asyncio.wait_for(call.events.get(), 5)
                if isinstance(ev, DtmfDigit):
                    digits.append(ev)
        # SIPp's uas answers without telephone-event, so digits are reported on leg a only
        assert [(d.digit, d.leg) for d in digits] == [("1", "a"), ("5", "a"), ("#", "a")]
        assert all(d.duration_ms == 280 for d in digits)  # as in the pcaps (2240 / 8 kHz)
        await proxy.close()


# ---------------------------------------------------------------- baresip


def tone_wav(path: Path, freq: float, seconds: float) -> None:
    n = int(8000 * seconds)
    samples = [int(8000 * math.sin(2 * math.pi * freq * i / 8000)) for i in range(n)]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(struct.pack(f"<{n}h", *samples))


def goertzel(samples: list[int], freq: float, rate: int = 8000) -> float:
    k = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    return s1 * s1 + s2 * s2 - k * s1 * s2


def read_pcm(path: Path) -> list[int]:
    with wave.open(str(path), "rb") as w:
        raw = w.readframes(w.getnframes())
        assert w.getsampwidth() == 2
    return list(struct.unpack(f"<{len(raw) // 2}h", raw))


def baresip_config(
    conf: Path, user: str, sip_port: int, ctrl_port: int, rtp: int, wav: Path, codec: str
) -> None:
    script = PEERS / "baresip-config.sh"
    subprocess.run(
        ["sh", str(script), str(conf), user, str(sip_port), str(ctrl_port),
         f"{rtp}-{rtp + 20}", str(wav), "auto"],
        check=True,
    )  # fmt: skip
    accounts = conf / "accounts"
    accounts.write_text(accounts.read_text().replace("audio_codecs=PCMU", f"audio_codecs={codec}"))


@pytest.mark.parametrize(
    ("caller_codec", "callee_codec"),
    [("PCMU", "PCMU"), ("PCMU", "PCMA")],
    ids=["same", "transcode"],
)
async def test_baresip_call_through_relay_tones_cross(tmp_path, caller_codec, callee_codec):
    baresip = require_binary("baresip")
    tone_a, tone_b = 440.0, 1000.0
    tone_wav(tmp_path / "alice.wav", tone_a, 5.0)  # the callee
    tone_wav(tmp_path / "bob.wav", tone_b, 4.0)  # the caller hangs up first
    ports = [free_udp_port() for _ in range(4)]
    rtp_a, rtp_b = free_udp_port(even=True, span=22), free_udp_port(even=True, span=22)
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    baresip_config(alice, "alice", ports[0], ports[1], rtp_a, tmp_path / "alice.wav", callee_codec)
    baresip_config(bob, "bob", ports[2], ports[3], rtp_b, tmp_path / "bob.wav", caller_codec)
    async with MediaEngine(ports=port_range()) as engine:
        proxy = SipMediaProxy(engine, ("127.0.0.1", ports[0]), transcode=True)
        _, proxy_port = await proxy.start()
        callee = process(
            baresip, "-f", str(alice), "-t", "12", cwd=tmp_path, log=tmp_path / "a.log"
        )
        async with callee:
            await asyncio.sleep(0.5)  # let the callee bind its SIP port
            caller = process(
                baresip, "-f", str(bob), "-e", f"/dial sip:alice@127.0.0.1:{proxy_port}",
                "-t", "8", cwd=tmp_path, log=tmp_path / "b.log",
            )  # fmt: skip
            async with caller as caller_proc:
                await asyncio.wait_for(caller_proc.wait(), 30)
        assert not proxy.errors
        assert proxy.calls, (tmp_path / "b.log").read_text(errors="replace")[-2000:]
        (call,) = proxy.calls.values()
        stats = call.stats()
        assert stats.a.packets > 100 and stats.b.packets > 100
        assert call.b.codec.name == callee_codec and call.a.codec.name == caller_codec
        await proxy.close()
    for who, own, other in (("alice", tone_a, tone_b), ("bob", tone_b, tone_a)):
        decoded = sorted((tmp_path / who / "rec").glob("*-dec.wav"))
        assert decoded, f"{who} recorded nothing: {list((tmp_path / who / 'rec').iterdir())}"
        pcm = read_pcm(decoded[0])
        assert len(pcm) > 8000
        # what each side heard is the other side's tone, by orders of magnitude
        assert goertzel(pcm, other) > 100 * goertzel(pcm, own)
    shutil.rmtree(tmp_path / "alice" / "rec", ignore_errors=True)
