"""MediaEngine: calls, forks, PBX-answered legs, bridges and holds, as a B2BUA uses them.

Real UDP packets on loopback play the phones; the relay in between is the native one, and
the reference core where no prompt or recording is involved.
"""

from __future__ import annotations

import asyncio
import math
import socket
import struct
from pathlib import Path

import pytest

from pbxcore import g711
from pbxcore.media import (
    DtmfDigit,
    LegReleasedError,
    LegTimeout,
    MediaLeg,
    PlayerDone,
    Prompt,
    RtpRelay,
)
from pbxcore.media.engine import MediaEngine
from pbxcore.media.sdp import SessionDescription, negotiated_audio
from pbxcore.wavfile import WavAudio, read_wav, write_wav
from tests.test_rtp_relay import (
    Peer,
    ReferenceRtpRelay,
    dtmf,
    port_range,
    rtp,
)


def sdp(port: int, formats: str, extra: str = "", host: str = "127.0.0.1") -> str:
    rtpmaps = {
        "0": "a=rtpmap:0 PCMU/8000",
        "8": "a=rtpmap:8 PCMA/8000",
        "101": "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16",
    }
    lines = [
        "v=0",
        f"o=- 1 1 IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {formats}",
        *[rtpmaps[f] for f in formats.split()],
        *([extra] if extra else []),
        "a=sendrecv",
    ]
    return "\r\n".join(lines) + "\r\n"


@pytest.fixture(params=["native", "reference"])
async def engine(request):
    cls = RtpRelay if request.param == "native" else ReferenceRtpRelay
    relay = cls(ports=port_range())
    async with MediaEngine(relay) as e:
        yield e
    assert e.relay.counters()["live_sessions"] == 0
    relay.close()


@pytest.fixture
async def native_engine():
    """Prompts and recordings are native-only."""
    async with MediaEngine(ports=port_range()) as e:
        yield e
    assert e.relay.counters()["live_sessions"] == 0


def tone(freq: float, samples: int, level: float = 8000.0) -> list[int]:
    return [round(level * math.sin(2 * math.pi * freq * n / 8000)) for n in range(samples)]


def goertzel(samples: list[int], freq: float) -> float:
    """Signal power at ``freq`` (Hz) in 8 kHz samples."""
    k = 2 * math.cos(2 * math.pi * freq / 8000)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    return s1 * s1 + s2 * s2 - k * s1 * s2


def pcm_of(ulaw: bytes) -> list[int]:
    pcm = g711.ulaw2lin(ulaw)
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def to_port(sdp_: SessionDescription | None) -> int:
    assert sdp_ is not None
    audio = negotiated_audio(sdp_)
    assert audio is not None
    return audio.port


def direction_of(sdp_: SessionDescription) -> str:
    audio = negotiated_audio(sdp_)
    assert audio is not None
    return audio.direction


async def test_offer_answer_points_both_sides_at_the_relay(engine):
    a, b = Peer(), Peer()
    call = await engine.offer(sdp(a.addr[1], "0 8 101", "a=rtcp-mux"))
    to_b = negotiated_audio(call.offer_for_b)
    assert to_b is not None
    assert (to_b.address, to_b.port) == ("127.0.0.1", call.forks[0].local_port)
    assert not to_b.rtcp_mux  # the relay keeps RTCP on port + 1
    assert [m.payload_types for m in call.offer_for_b.media] == [[0, 8, 101]]
    answer_a = await engine.answer(call, sdp(b.addr[1], "0 101"))
    to_a = negotiated_audio(answer_a)
    assert to_a is not None and to_a.port == call.a.local_port
    assert to_a.codec.name == "PCMU" and to_a.telephone_event == 101
    # media now flows A -> relay leg a -> B and back, without latching first
    b.send(rtp(1, ssrc=2), to_b.port)
    assert a.recv() == rtp(1, ssrc=2)
    a.send(rtp(2), to_a.port)
    assert b.recv() == rtp(2)
    await engine.delete(call)
    a.close()
    b.close()


async def test_transcoding_when_b_picks_what_a_did_not_offer(engine):
    a, b = Peer(), Peer()
    call = await engine.offer(sdp(a.addr[1], "0 101"), transcode=True)
    offered = [m.payload_types for m in call.offer_for_b.media]
    assert offered == [[0, 8, 101]]
    answer_a = await engine.answer(call, sdp(b.addr[1], "8 101"))
    to_a = negotiated_audio(answer_a)
    assert to_a is not None and to_a.codec.name == "PCMU" and to_a.payload_type == 0
    ulaw = bytes(range(160))
    a.send(rtp(1, pt=0, payload=ulaw), call.a.local_port)
    got = b.recv()
    assert got[1] == 8 and got[12:] == g711.ulaw2alaw(ulaw)
    b.send(rtp(1, pt=8, payload=got[12:]), call.forks[0].local_port)
    back = a.recv()
    assert back[1] == 0 and back[12:] == g711.alaw2ulaw(got[12:])
    await engine.delete(call)
    a.close()
    b.close()


async def test_no_transcoding_when_b_picks_an_offered_codec(engine):
    a, b = Peer(), Peer()
    call = await engine.offer(sdp(a.addr[1], "8 0"), transcode=True)
    # A offered no telephone-event, so B is not offered any either
    assert [m.payload_types for m in call.offer_for_b.media] == [[8, 0]]
    answer_a = await engine.answer(call, sdp(b.addr[1], "8"))
    assert negotiated_audio(answer_a).codec.name == "PCMA"
    p = rtp(1, pt=8, payload=bytes(range(160)))
    a.send(p, call.a.local_port)
    assert b.recv() == p
    await engine.delete(call)
    a.close()
    b.close()


async def test_events_routed_to_the_call(engine):
    a, b = Peer(), Peer()
    call = await engine.offer(sdp(a.addr[1], "0 101"))
    await engine.answer(call, sdp(b.addr[1], "0 101"))
    for i, (dur, end) in enumerate([(160, False), (800, True), (800, True), (800, True)]):
        a.send(dtmf(i, 3, dur, end, ts=999), call.a.local_port)
    while True:
        ev = await asyncio.wait_for(call.events.get(), 2)
        if isinstance(ev, DtmfDigit):
            break
    assert (ev.digit, ev.duration_ms, ev.leg) == ("3", 100, "a")
    await engine.delete(call)
    a.close()
    b.close()


async def test_reinvite_moves_media(engine):
    a, b, b2 = Peer(), Peer(), Peer()
    call = await engine.offer(sdp(a.addr[1], "0"))
    await engine.answer(call, sdp(b.addr[1], "0"))
    to_a = await engine.update(call, "b", sdp(b2.addr[1], "0"))
    assert negotiated_audio(to_a).port == call.a.local_port
    a.send(rtp(5), call.a.local_port)
    assert b2.recv() == rtp(5)
    assert b.nothing()
    with pytest.raises(ValueError):
        await engine.update(call, "c", sdp(b2.addr[1], "0"))
    await engine.delete(call)
    for p in (a, b, b2):
        p.close()


async def test_bad_sdp_is_refused_without_leaking(engine):
    with pytest.raises(ValueError, match="PCMU or PCMA"):
        await engine.offer(sdp(4000, "101"))
    with pytest.raises(ValueError):
        await engine.offer("not sdp at all")
    call = await engine.offer(sdp(4000, "0"))
    with pytest.raises(ValueError, match="PCMU or PCMA"):
        await engine.answer(call, sdp(0, "0"))
    await engine.delete(call)
    await engine.delete(call)  # idempotent
    assert engine.relay.counters()["live_sessions"] == 0


async def test_ipv6_offer():
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    relay = RtpRelay(bind="::1", ports=port_range())
    async with MediaEngine(relay) as engine:
        offer = sdp(4000, "0").replace("IP4 127.0.0.1", "IP6 ::1")
        call = await engine.offer(offer)
        to_b = SessionDescription.parse(str(call.offer_for_b))
        assert to_b.connection is not None and to_b.connection.address == "::1"
        await engine.delete(call)
    relay.close()


# ---------------------------------------------------------------- late offer


async def test_late_offer_end_to_end(engine):
    a, b = Peer(), Peer()
    call = engine.create_call()  # A's INVITE had no SDP
    fork = call.fork()
    offer_b = fork.local_sdp
    assert offer_b is not None and fork.awaiting_answer and fork.state == "offered"
    assert to_port(offer_b) == fork.local_port
    assert [m.payload_types for m in offer_b.media] == [[0, 8, 101]]
    # B answers PCMA in its 200; pbxcore offers A in the 200 toward A, B's law first
    offer_a = await call.answer(fork, sdp(b.addr[1], "8 101"))
    assert call.a.awaiting_answer and call.a.law is None
    assert to_port(offer_a) == call.a.local_port
    assert [m.payload_types for m in offer_a.media] == [[8, 0, 101]]
    # A's answer comes in the ACK: A picks PCMU, the relay transcodes
    await call.a.answer(sdp(a.addr[1], "0 101"))
    assert not call.a.awaiting_answer
    assert (call.a.law, fork.law) == ("ulaw", "alaw")
    assert call.a.state == "connected" and fork.state == "connected" and call.b is fork
    ulaw = bytes(range(160))
    a.send(rtp(1, pt=0, payload=ulaw), call.a.local_port)
    got = b.recv()
    assert got[1] == 8 and got[12:] == g711.ulaw2alaw(ulaw)
    b.send(rtp(1, pt=8, payload=got[12:], ssrc=9), fork.local_port)
    back = a.recv()
    assert back[1] == 0 and back[12:] == g711.alaw2ulaw(got[12:])
    with pytest.raises(ValueError, match="no offer"):
        await call.a.answer(sdp(a.addr[1], "0"))  # nothing is waiting for an answer now
    await engine.delete(call)
    assert call.a.released and fork.released
    a.close()
    b.close()


async def test_late_offer_answer_without_audio_is_refused(engine):
    call = engine.create_call()
    fork = call.fork()
    await call.answer(fork, sdp(4000, "0"))
    with pytest.raises(ValueError, match="PCMU or PCMA"):
        await call.a.answer(sdp(4002, "101"))
    assert call.a.awaiting_answer  # still waiting: a good answer may follow
    await engine.delete(call)


# ---------------------------------------------------------------- forking


async def test_forking_first_answer_wins_and_the_others_are_released(engine):
    a, b1, b2, b3 = Peer(), Peer(), Peer(), Peer()
    call = engine.create_call(sdp(a.addr[1], "0 101"))
    forks = [call.fork() for _ in range(3)]
    ports = [f.local_port for f in forks]
    assert len(set(ports)) == 3 and all(to_port(f.local_sdp) == f.local_port for f in forks)
    assert engine.relay.counters()["live_sessions"] == 3
    answer_a = await call.answer(forks[1], sdp(b2.addr[1], "0 101"))
    assert to_port(answer_a) == call.a.local_port and not call.a.awaiting_answer
    assert call.b is forks[1] and call.forks == [forks[1]]
    assert forks[0].released and forks[2].released
    assert engine.relay.counters()["live_sessions"] == 1
    # the loser answering late is refused, and its old port forwards nothing
    with pytest.raises(LegReleasedError, match="b3"):
        await call.answer(forks[2], sdp(b3.addr[1], "0"))
    with pytest.raises(ValueError, match="already answered"):
        call.fork()
    b3.send(rtp(1, ssrc=3), ports[2])
    b1.send(rtp(1, ssrc=1), ports[0])
    b2.send(rtp(7, ssrc=2), ports[1])
    assert a.recv() == rtp(7, ssrc=2)
    assert a.nothing()
    a.send(rtp(8), call.a.local_port)
    assert b2.recv() == rtp(8)
    assert b1.nothing(0.05) and b3.nothing(0.05)
    with pytest.raises(LegReleasedError):
        forks[0].stats()
    await engine.delete(call)
    for p in (a, b1, b2, b3):
        p.close()


async def test_early_media_from_one_fork_then_another_answers(engine):
    a, b1, b2 = Peer(), Peer(), Peer()
    call = engine.create_call(sdp(a.addr[1], "0 8 101"))
    f1, f2 = call.fork(), call.fork()
    # f2 sends ringback in a 183: A hears it, f1's media is not connected
    await call.early(f2, sdp(b2.addr[1], "8"))
    early_port = to_port(call.a.local_sdp)
    assert f2.state == "early" and early_port == call.a.local_port
    b2.send(rtp(1, pt=8, ssrc=2), f2.local_port)
    assert a.recv() == rtp(1, pt=8, ssrc=2)
    b1.send(rtp(1, ssrc=1), f1.local_port)
    assert a.nothing()
    # then f1 answers: f2 is released, A moves to f1's session and is re-offered
    to_a = await call.answer(f1, sdp(b1.addr[1], "0 101"))
    assert f2.released and call.b is f1
    assert call.a.awaiting_answer and to_port(to_a) == call.a.local_port != early_port
    assert call.a.law == "alaw"  # agreed with A during early media; the relay transcodes
    b2.send(rtp(2, pt=8, ssrc=2), f2.local_port)
    ulaw = bytes(range(160))
    b1.send(rtp(3, pt=0, ssrc=1, payload=ulaw), f1.local_port)
    got = a.recv()
    assert got[1] == 8 and got[12:] == g711.ulaw2alaw(ulaw)
    await call.a.answer(sdp(a.addr[1], "0 101"))  # A's answer to the re-offer
    a.send(rtp(4, pt=0), call.a.local_port)
    assert b1.recv() == rtp(4, pt=0)
    await engine.delete(call)
    for p in (a, b1, b2):
        p.close()


async def test_early_media_moves_from_one_fork_to_another(engine):
    a, b1, b2 = Peer(), Peer(), Peer()
    call = engine.create_call(sdp(a.addr[1], "0 101"))
    f1, f2 = call.fork(), call.fork()
    await call.early(f1, sdp(b1.addr[1], "0"))
    b1.send(rtp(1, ssrc=1), f1.local_port)
    assert a.recv() == rtp(1, ssrc=1)
    await call.early(f2, sdp(b2.addr[1], "0"))  # now f2 plays its announcement
    assert call.a.awaiting_answer  # A's port changed: A is re-offered
    b1.send(rtp(2, ssrc=1), f1.local_port)
    b2.send(rtp(3, ssrc=2), f2.local_port)
    assert a.recv() == rtp(3, ssrc=2)
    assert a.nothing()  # f1's early media no longer reaches A
    call.release(f1)
    to_a = await call.answer(f2, sdp(b2.addr[1], "0"))
    assert to_port(to_a) == call.a.local_port
    await engine.delete(call)
    assert engine.relay.counters()["live_sessions"] == 0
    for p in (a, b1, b2):
        p.close()


async def test_a_port_left_behind_raises_no_timeout(engine):
    engine.leg_timeout = 0.3
    a, b2 = Peer(), Peer()
    call = engine.create_call(sdp(a.addr[1], "0"))
    await call.a.accept()  # A on the home session, timing out after 0.3 s without RTP
    _f1, f2 = call.fork(), call.fork()
    await call.early(f2, sdp(b2.addr[1], "0"))  # A moves to f2's session; f1 still rings
    await call.a.answer(sdp(a.addr[1], "0"))
    for seq in range(40):  # A and f2 keep talking for 0.8 s; A's old port hears nothing
        a.send(rtp(seq), call.a.local_port)
        b2.send(rtp(seq, ssrc=2), f2.local_port)
        await asyncio.sleep(0.02)
    events = []
    while not call.events.empty():
        events.append(call.events.get_nowait())
    assert not [e for e in events if isinstance(e, LegTimeout)]
    # now both go quiet: A's current leg times out, as it should
    event = await asyncio.wait_for(call.events.get(), 2)
    while not (isinstance(event, LegTimeout) and event.leg == "a"):
        event = await asyncio.wait_for(call.events.get(), 2)
    await engine.delete(call)
    a.close()
    b2.close()


async def test_released_fork_frees_its_ports(engine):
    a = Peer()
    call = engine.create_call(sdp(a.addr[1], "0"))
    f1, f2 = call.fork(), call.fork()
    call.release(f2)
    assert f2.released and engine.relay.counters()["live_sessions"] == 1
    call.release(f1)  # the home session stays: A keeps its port, the spare B side is reused
    f3 = call.fork()
    assert f3.local_port == f1.local_port
    with pytest.raises(ValueError, match="not a fork"):
        call.release(f1)
    await engine.delete(call)
    a.close()


# ---------------------------------------------------------------- PBX-answered legs


def write_tone_wav(path: Path, freq: float, samples: int, encoding: str) -> list[int]:
    pcm = tone(freq, samples)
    data = struct.pack(f"<{samples}h", *pcm)
    if encoding == "ulaw":
        data = g711.lin2ulaw(data)
    write_wav(path, WavAudio(encoding, 8000, 1, data))  # type: ignore[arg-type]
    return pcm


@pytest.mark.parametrize("encoding", ["pcm16", "ulaw"])
async def test_pbx_answered_leg_plays_a_wav(native_engine, tmp_path, encoding):
    a = Peer()
    call = native_engine.create_call(sdp(a.addr[1], "0 101"))
    answer = await call.a.accept()
    assert to_port(answer) == call.a.local_port and call.a.state == "connected"
    path = tmp_path / "menu.wav"
    write_tone_wav(path, 1000, 1600, encoding)  # 200 ms of 1 kHz
    done = await call.a.play(path)
    assert isinstance(done, PlayerDone) and done.frames == 10 and not done.stopped
    packets = [a.recv() for _ in range(10)]
    assert all(p[1] & 0x7F == 0 for p in packets)
    heard = pcm_of(b"".join(p[12:] for p in packets))
    assert goertzel(heard, 1000) > 1000 * goertzel(heard, 1400)
    await native_engine.delete(call)
    a.close()


async def test_play_is_cancelled_and_released_legs_wake_their_waiters(native_engine):
    a = Peer()
    call = native_engine.create_call(sdp(a.addr[1], "0"))
    await call.a.accept()
    task = asyncio.create_task(call.a.play(Prompt.from_pcm16(bytes(16000 * 2)), loops=0))
    await asyncio.sleep(0)  # the task starts the prompt
    a.recv()  # it plays
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    while not a.nothing(0.05):
        pass
    playing = asyncio.create_task(call.a.play(Prompt.from_pcm16(bytes(16000 * 2))))
    collecting = asyncio.create_task(call.a.collect_digits(4, timeout=None))
    await asyncio.sleep(0.05)
    await native_engine.delete(call)
    with pytest.raises(LegReleasedError):
        await playing
    with pytest.raises(LegReleasedError):
        await collecting
    a.close()


async def test_collect_digits_from_rfc4733_packets(engine):
    a = Peer()
    call = engine.create_call(sdp(a.addr[1], "0 101"))
    await call.a.accept()
    port = call.a.local_port
    seq = 0
    for n, event in enumerate([1, 2, 11, 3]):  # "1", "2", "#", "3"
        ts = 1000 + n * 1600
        for dur, end in [(160, False), (480, False), (800, True), (800, True), (800, True)]:
            a.send(dtmf(seq, event, dur, end, ts=ts), port)
            seq += 1
    assert await call.a.collect_digits(5, timeout=2, terminator="#") == "12"
    assert await call.a.collect_digits(1, timeout=2) == "3"  # left over after the '#'
    assert await call.a.collect_digits(3, timeout=0.2) == ""  # nothing more: times out
    a.send(dtmf(seq, 5, 800, True, ts=99999), port)
    digit = await call.a.next_digit(timeout=2)
    assert digit is not None and (digit.digit, digit.duration_ms) == ("5", 100)
    with pytest.raises(ValueError, match="max_digits"):
        await call.a.collect_digits(0)
    with pytest.raises(ValueError, match="terminator"):
        await call.a.collect_digits(2, terminator="##")
    await engine.delete(call)
    a.close()


async def test_digits_iterator_ends_on_release(engine):
    a = Peer()
    call = engine.create_call(sdp(a.addr[1], "0 101"))
    await call.a.accept()
    for i, event in enumerate([7, 10]):
        a.send(dtmf(i, event, 800, True, ts=5000 + i * 1600), call.a.local_port)
    got: list[str] = []

    async def read() -> None:
        async for d in call.a.digits():
            got.append(d.digit)
            if len(got) == 2:
                await engine.delete(call)

    await asyncio.wait_for(read(), 5)
    assert got == ["7", "*"]
    a.close()


async def test_pbx_answered_leg_records_what_it_is_sent(native_engine, tmp_path):
    a = Peer()
    call = native_engine.create_call(sdp(a.addr[1], "0"))
    await call.a.accept()
    path = tmp_path / "voicemail.wav"
    call.a.record(path)
    pcm = tone(600, 160 * 25)
    for i in range(25):
        frame = struct.pack("<160h", *pcm[i * 160 : (i + 1) * 160])
        a.send(rtp(i, payload=g711.lin2ulaw(frame)), call.a.local_port)
        a.nothing(0.02)  # at about the real pace
    a.nothing(0.3)  # the playout clock runs the buffer out
    samples = call.a.stop_recording()
    audio = read_wav(path)
    assert audio.encoding == "pcm16" and audio.frames == samples > 160 * 15
    heard = list(struct.unpack(f"<{audio.frames}h", audio.data))
    assert goertzel(heard, 600) > 1000 * goertzel(heard, 1000)
    await native_engine.delete(call)
    a.close()


async def test_ivr_then_connect_to_an_extension_keeps_a_on_its_port(engine):
    a, b = Peer(), Peer()
    call = engine.create_call(sdp(a.addr[1], "0 8 101"))
    answer = await call.a.accept()
    port = call.a.local_port
    fork = call.fork()  # the extension: offered both laws, A's first
    assert [m.payload_types for m in fork.local_sdp.media] == [[0, 8, 101]]
    to_a = await call.answer(fork, sdp(b.addr[1], "8 101"))
    assert to_a is answer and not call.a.awaiting_answer and call.a.local_port == port
    a.send(rtp(1, pt=0, payload=bytes(160)), port)
    got = b.recv()
    assert got[1] == 8 and got[12:] == g711.ulaw2alaw(bytes(160))
    await engine.delete(call)
    a.close()
    b.close()


# ---------------------------------------------------------------- bridging and hold


async def connected(engine: MediaEngine, x: Peer, y: Peer) -> tuple[MediaLeg, MediaLeg]:
    call = engine.create_call(sdp(x.addr[1], "0 101"))
    fork = call.fork()
    await call.answer(fork, sdp(y.addr[1], "0 101"))
    return call.a, fork


async def test_bridge_two_calls_for_a_transfer(engine):
    a, b, c, d = Peer(), Peer(), Peer(), Peer()
    a_leg, b_leg = await connected(engine, a, b)
    c_leg, d_leg = await connected(engine, c, d)
    old_d_port = d_leg.local_port
    # transfer: A talks to D; B and C are released
    moved = await engine.bridge(a_leg, d_leg)
    assert moved is d_leg and d_leg.awaiting_answer
    assert b_leg.released and c_leg.released and not a_leg.released
    assert d_leg.call is a_leg.call and a_leg.call.b is d_leg
    assert c_leg.call.id not in engine.calls
    assert engine.relay.counters()["live_sessions"] == 1
    new_port = to_port(d_leg.local_sdp)
    assert new_port == d_leg.local_port != old_d_port
    a.send(rtp(1), a_leg.local_port)
    assert d.recv() == rtp(1)  # A reaches D at once
    d.send(rtp(2, ssrc=4), new_port)
    assert a.recv() == rtp(2, ssrc=4)
    d.send(rtp(3, ssrc=4), old_d_port)  # the old port is gone
    assert a.nothing() and b.nothing(0.05) and c.nothing(0.05)
    await d_leg.answer(sdp(d.addr[1], "0 101"))
    with pytest.raises(ValueError, match="same call"):
        await engine.bridge(a_leg, d_leg)
    with pytest.raises(ValueError, match="released"):
        await engine.bridge(a_leg, b_leg)
    await engine.delete(a_leg.call)
    for p in (a, b, c, d):
        p.close()


async def test_bridge_the_b_side_of_one_call_with_the_a_side_of_another(engine):
    a, b, c, d = Peer(), Peer(), Peer(), Peer()
    a_leg, b_leg = await connected(engine, a, b)
    c_leg, d_leg = await connected(engine, c, d)
    await engine.bridge(b_leg, c_leg)  # B (called by A) talks to C (who called D)
    call = b_leg.call
    assert (call.a, call.b) == (c_leg, b_leg) and a_leg.released and d_leg.released
    b.send(rtp(1, ssrc=2), b_leg.local_port)
    assert c.recv() == rtp(1, ssrc=2)
    c.send(rtp(2, ssrc=3), c_leg.local_port)
    assert b.recv() == rtp(2, ssrc=3)
    assert a.nothing(0.05) and d.nothing(0.05)
    await engine.delete(call)
    assert engine.relay.counters()["live_sessions"] == 0
    for p in (a, b, c, d):
        p.close()


async def test_hold_and_resume(engine):
    a, b = Peer(), Peer()
    a_leg, b_leg = await connected(engine, a, b)
    # A holds: sendonly. B gets the re-offer, pointed at B's port, and answers recvonly
    to_b = await a_leg.update(sdp(a.addr[1], "0 101").replace("a=sendrecv", "a=sendonly"))
    assert direction_of(to_b) == "sendonly" and to_port(to_b) == b_leg.local_port
    to_a = await b_leg.update(sdp(b.addr[1], "0 101").replace("a=sendrecv", "a=recvonly"))
    assert direction_of(to_a) == "recvonly" and to_port(to_a) == a_leg.local_port
    b.send(rtp(1, ssrc=2), b_leg.local_port)
    assert a.nothing()  # nothing is sent to the held party
    a.send(rtp(2), a_leg.local_port)  # music on hold from A still reaches B
    assert b.recv() == rtp(2)
    # resume
    await a_leg.update(sdp(a.addr[1], "0 101"))
    await b_leg.update(sdp(b.addr[1], "0 101"))
    b.send(rtp(3, ssrc=2), b_leg.local_port)
    assert a.recv() == rtp(3, ssrc=2)
    await engine.delete(a_leg.call)
    a.close()
    b.close()


async def test_inactive_hold_of_a_pbx_leg_answered_by_pbxcore(engine):
    a = Peer()
    call = engine.create_call(sdp(a.addr[1], "0"))
    await call.a.accept()
    answer = await call.a.update(sdp(a.addr[1], "0").replace("a=sendrecv", "a=inactive"))
    assert direction_of(answer) == "inactive" and to_port(answer) == call.a.local_port
    await engine.delete(call)
    a.close()


async def test_reoffer_answer_sets_the_offerers_law(engine):
    a, b = Peer(), Peer()
    a_leg, b_leg = await connected(engine, a, b)
    await a_leg.update(sdp(a.addr[1], "8 0 101"))  # A re-offers, PCMA first
    await b_leg.update(sdp(b.addr[1], "0 101"))  # B answers PCMU, which A offered too
    assert a_leg.law == b_leg.law == "ulaw"
    payload = bytes(range(160))
    b.send(rtp(1, pt=0, ssrc=2, payload=payload), b_leg.local_port)
    assert a.recv() == rtp(1, pt=0, ssrc=2, payload=payload)  # no transcoding
    await engine.delete(a_leg.call)
    a.close()
    b.close()


def payload_types(sdp_: SessionDescription) -> list[list[int]]:
    return [m.payload_types for m in sdp_.media]


async def test_hold_and_resume_of_a_transcoded_call_keep_each_party_on_its_law(engine):
    """A can only do PCMA, B only PCMU: a re-offer passed on from one offers the other its
    own law too, and the answer passed back is in the offerer's law; the relay keeps
    transcoding. Each party sees one o= session from pbxcore, its version going up."""
    a, b = Peer(), Peer()
    call = await engine.offer(sdp(a.addr[1], "8 101"), transcode=True)
    first_to_b = call.offer_for_b
    first_to_a = await engine.answer(call, sdp(b.addr[1], "0 101"))
    a_leg, b_leg = call.a, call.b
    assert b_leg is not None and (a_leg.law, b_leg.law) == ("alaw", "ulaw")
    # A holds
    to_b = await a_leg.update(sdp(a.addr[1], "8 101").replace("a=sendrecv", "a=sendonly"))
    assert payload_types(to_b) == [[0, 8, 101]]  # B's own law first
    assert direction_of(to_b) == "sendonly" and to_port(to_b) == b_leg.local_port
    to_a = await b_leg.update(sdp(b.addr[1], "0 101").replace("a=sendrecv", "a=recvonly"))
    assert payload_types(to_a) == [[8, 101]]  # an answer to A's PCMA-only offer
    assert direction_of(to_a) == "recvonly" and to_port(to_a) == a_leg.local_port
    assert (a_leg.law, b_leg.law) == ("alaw", "ulaw")
    alaw = bytes(range(160))
    a.send(rtp(1, pt=8, payload=alaw), a_leg.local_port)  # music on hold, transcoded
    got = b.recv()
    assert got[1] == 0 and got[12:] == g711.alaw2ulaw(alaw)
    # B resumes: its PCMU-only offer reaches A with PCMA
    to_a2 = await b_leg.update(sdp(b.addr[1], "0 101"))
    assert payload_types(to_a2) == [[8, 0, 101]] and direction_of(to_a2) == "sendrecv"
    to_b2 = await a_leg.update(sdp(a.addr[1], "8 101"))
    assert payload_types(to_b2) == [[0, 101]]
    ulaw = bytes(range(160))
    b.send(rtp(2, pt=0, ssrc=2, payload=ulaw), b_leg.local_port)
    back = a.recv()
    assert back[1] == 8 and back[12:] == g711.ulaw2alaw(ulaw)
    # RFC 3264 section 8: the same o= line toward each party, one version up per change
    for sent in ((first_to_b, to_b, to_b2), (first_to_a, to_a, to_a2)):
        origins = [x.origin for x in sent]
        assert len({(o.username, o.session_id, o.address) for o in origins}) == 1
        assert [o.session_version - origins[0].session_version for o in origins] == [0, 1, 2]
    await engine.delete(call)
    a.close()
    b.close()


async def test_barge_in_stops_the_prompt_and_keeps_the_digit(native_engine):
    a = Peer()
    call = native_engine.create_call(sdp(a.addr[1], "0 101"))
    await call.a.accept()
    playing = asyncio.create_task(
        call.a.play(Prompt.from_pcm16(bytes(16000 * 2)), loops=0, barge_in=True)
    )
    await asyncio.sleep(0)
    a.recv()  # the menu plays
    a.send(dtmf(1, 9, 800, True, ts=4242), call.a.local_port)
    assert await asyncio.wait_for(playing, 5) is None
    assert await call.a.collect_digits(1, timeout=2) == "9"
    # a digit already waiting keeps the next prompt from starting at all
    a.send(dtmf(2, 4, 800, True, ts=8484), call.a.local_port)
    assert (await call.a.next_digit(2)) is not None
    a.send(dtmf(3, 6, 800, True, ts=9999), call.a.local_port)
    await asyncio.sleep(0.2)
    assert await call.a.play(Prompt.from_pcm16(bytes(3200)), barge_in=True) is None
    assert await call.a.collect_digits(1, timeout=2) == "6"
    await native_engine.delete(call)
    a.close()
