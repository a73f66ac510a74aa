"""MediaEngine: SDP offer/answer through a relay session, as a B2BUA uses it."""

from __future__ import annotations

import asyncio
import socket

import pytest

from pbxcore import g711
from pbxcore.media import DtmfDigit, RtpRelay
from pbxcore.media.engine import MediaEngine
from pbxcore.media.sdp import SessionDescription, negotiated_audio
from tests.test_rtp_relay import Peer, dtmf, port_range, rtp


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


@pytest.fixture
async def engine():
    async with MediaEngine(ports=port_range()) as e:
        yield e
    assert e.relay.counters()["live_sessions"] == 0


async def test_offer_answer_points_both_sides_at_the_relay(engine):
    a, b = Peer(), Peer()
    call = await engine.offer(sdp(a.addr[1], "0 8 101", "a=rtcp-mux"))
    to_b = negotiated_audio(call.offer_for_b)
    assert to_b is not None
    assert (to_b.address, to_b.port) == ("127.0.0.1", call.session.b.local_port)
    assert not to_b.rtcp_mux  # the relay keeps RTCP on port + 1
    assert [m.payload_types for m in call.offer_for_b.media] == [[0, 8, 101]]
    answer_a = await engine.answer(call, sdp(b.addr[1], "0 101"))
    to_a = negotiated_audio(answer_a)
    assert to_a is not None and to_a.port == call.session.a.local_port
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
    a.send(rtp(1, pt=0, payload=ulaw), call.session.a.local_port)
    got = b.recv()
    assert got[1] == 8 and got[12:] == g711.ulaw2alaw(ulaw)
    b.send(rtp(1, pt=8, payload=got[12:]), call.session.b.local_port)
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
    a.send(p, call.session.a.local_port)
    assert b.recv() == p
    await engine.delete(call)
    a.close()
    b.close()


async def test_events_routed_to_the_call(engine):
    a, b = Peer(), Peer()
    call = await engine.offer(sdp(a.addr[1], "0 101"))
    await engine.answer(call, sdp(b.addr[1], "0 101"))
    for i, (dur, end) in enumerate([(160, False), (800, True), (800, True), (800, True)]):
        a.send(dtmf(i, 3, dur, end, ts=999), call.session.a.local_port)
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
    assert negotiated_audio(to_a).port == call.session.a.local_port
    a.send(rtp(5), call.session.a.local_port)
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
