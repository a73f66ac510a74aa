"""RTP/RTCP wire formats, sequence arithmetic and RFC 4733 telephone-events."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxcore.media.rtp import (
    ReceiverReport,
    ReportBlock,
    RtcpBye,
    RtcpUnknown,
    RtpPacket,
    SenderReport,
    TelephoneEvent,
    extend_seq,
    is_rtcp,
    ntp_to_seconds,
    parse_rtcp,
    seconds_to_ntp,
    seq_diff,
    telephone_event_packets,
    uint16_add,
    uint16_gt,
    uint32_add,
    uint32_gt,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
words = st.integers(0, 8).map(lambda n: n * 4).flatmap(lambda n: st.binary(min_size=n, max_size=n))


class TestSequenceArithmetic:
    def test_add_wraps(self) -> None:
        assert uint16_add(0xFFFF, 1) == 0
        assert uint16_add(0xFFF0, 0x20) == 0x10
        assert uint32_add(0xFFFFFFFF, 2) == 1

    def test_newer_across_the_wrap(self) -> None:
        assert uint16_gt(1, 0xFFFF)
        assert not uint16_gt(0xFFFF, 1)
        assert uint16_gt(100, 50)
        assert not uint16_gt(5, 5)
        assert uint32_gt(3, 0xFFFFFFF0)
        assert not uint32_gt(0xFFFFFFF0, 3)

    def test_seq_diff(self) -> None:
        assert seq_diff(2, 0xFFFE) == 4
        assert seq_diff(0xFFFE, 2) == -4
        assert seq_diff(0x8000, 0) == -0x8000
        assert seq_diff(0x7FFF, 0) == 0x7FFF

    def test_extend_seq_counts_cycles(self) -> None:
        ext = 0xFFFE
        for seq in (0xFFFF, 0, 1, 0xFFFF, 2):
            ext = max(ext, extend_seq(ext, seq))
        assert ext == 0x10002
        assert extend_seq(0x10002, 0xFFFF) == 0xFFFF

    @given(a=u16, b=st.integers(0, 0x7FFF))
    def test_properties(self, a: int, b: int) -> None:
        c = uint16_add(a, b)
        assert seq_diff(c, a) == b
        assert uint16_gt(c, a) == (b != 0)
        assert not uint16_gt(a, c) or b == 0x8000


class TestRtpPacket:
    def test_parse_minimal(self) -> None:
        data = struct.pack("!BBHII", 0x80, 0x80 | 8, 4660, 1000, 0xDEADBEEF) + b"\x01\x02"
        p = RtpPacket.parse(data)
        assert (p.payload_type, p.marker, p.sequence_number, p.timestamp, p.ssrc) == (
            8,
            True,
            4660,
            1000,
            0xDEADBEEF,
        )
        assert p.payload == b"\x01\x02"
        assert bytes(p) == data

    def test_csrc_extension_and_padding(self) -> None:
        p = RtpPacket(
            payload_type=0,
            sequence_number=1,
            timestamp=2,
            ssrc=3,
            csrc=(10, 11),
            extension_profile=0xBEDE,
            extension=b"\x10\xaa\x00\x00",
            payload=b"abc",
            padding_size=5,
        )
        data = bytes(p)
        assert data[0] == 0x80 | 0x20 | 0x10 | 2
        assert data[-1] == 5
        assert len(data) == 12 + 8 + 4 + 4 + 3 + 5
        assert RtpPacket.parse(data) == p

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"\x80\x00\x00", "less than 12 bytes"),
            (b"\x40" + bytes(11), "invalid version 1"),
            (b"\x82" + bytes(11) + bytes(4), "truncated CSRC"),
            (b"\x90" + bytes(11) + b"\x00\x01", "truncated extension profile"),
            (b"\x90" + bytes(11) + b"\xbe\xde\x00\x02" + bytes(4), "truncated extension value"),
            (b"\xa0" + bytes(11) + b"\x00", "padding length is zero"),
            (b"\xa0" + bytes(11) + b"\x01\x02\x09", "padding length is invalid"),
        ],
    )
    def test_malformed(self, data: bytes, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            RtpPacket.parse(data)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"payload_type": 128}, "payload_type"),
            ({"sequence_number": 0x10000}, "sequence_number"),
            ({"timestamp": -1}, "timestamp"),
            ({"csrc": tuple(range(16))}, "16 CSRCs"),
            ({"extension_profile": 1, "extension": b"abc"}, "multiple of 4"),
            ({"extension": b"abcd"}, "without an extension profile"),
            ({"padding_size": 256}, "padding_size"),
        ],
    )
    def test_serialize_rejects_bad_fields(self, kwargs: dict[str, object], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            bytes(RtpPacket(**kwargs))  # type: ignore[arg-type]

    @settings(max_examples=300, deadline=None)
    @given(data=st.binary(max_size=80))
    def test_random_bytes_raise_only_value_error(self, data: bytes) -> None:
        try:
            p = RtpPacket.parse(data)
        except ValueError:
            return
        assert RtpPacket.parse(bytes(p)) == p

    @settings(max_examples=300, deadline=None)
    @given(
        pt=st.integers(0, 127),
        marker=st.booleans(),
        seq=u16,
        ts=u32,
        ssrc=u32,
        csrc=st.lists(u32, max_size=15).map(tuple),
        profile=st.none() | u16,
        ext=words,
        payload=st.binary(max_size=200),
        padding=st.integers(0, 255),
    )
    def test_round_trip(
        self,
        pt: int,
        marker: bool,
        seq: int,
        ts: int,
        ssrc: int,
        csrc: tuple[int, ...],
        profile: int | None,
        ext: bytes,
        payload: bytes,
        padding: int,
    ) -> None:
        p = RtpPacket(
            pt,
            marker,
            seq,
            ts,
            ssrc,
            csrc,
            profile,
            ext if profile is not None else b"",
            payload,
            padding,
        )
        assert RtpPacket.parse(bytes(p)) == p


report_blocks = st.builds(
    ReportBlock,
    ssrc=u32,
    fraction_lost=u8,
    packets_lost=st.integers(-0x800000, 0x7FFFFF),
    highest_sequence=u32,
    jitter=u32,
    lsr=u32,
    dlsr=u32,
)
rtcp_packets = st.one_of(
    st.builds(
        SenderReport,
        ssrc=u32,
        ntp_timestamp=st.integers(0, 2**64 - 1),
        rtp_timestamp=u32,
        packet_count=u32,
        octet_count=u32,
        reports=st.lists(report_blocks, max_size=31),
        extension=words,
    ),
    st.builds(
        ReceiverReport, ssrc=u32, reports=st.lists(report_blocks, max_size=31), extension=words
    ),
    st.builds(
        RtcpBye,
        sources=st.lists(u32, max_size=31),
        reason=st.text(max_size=60).filter(lambda r: len(r.encode()) <= 255),
    ),
    st.builds(
        RtcpUnknown,
        packet_type=st.sampled_from([202, 204, 205, 206, 207]),
        count=st.integers(0, 31),
        body=words,
    ),
)


class TestRtcp:
    def test_sender_report_with_a_block(self) -> None:
        block = ReportBlock(0xCAFE, 25, -3, 0x1_0005, 40, 0x12345678, 65536)
        sr = SenderReport(0xBEEF, seconds_to_ntp(1_700_000_000.5), 160, 10, 1600, [block])
        data = bytes(sr)
        assert len(data) == 28 + 24
        assert data[:4] == b"\x81\xc8\x00\x0c"
        (parsed,) = parse_rtcp(data)
        assert parsed == sr
        assert isinstance(parsed, SenderReport)
        assert parsed.reports[0].packets_lost == -3
        assert ntp_to_seconds(parsed.ntp_timestamp) == pytest.approx(1_700_000_000.5)

    def test_compound_rr_and_bye(self) -> None:
        data = bytes(ReceiverReport(7, [])) + bytes(RtcpBye([7], "bye"))
        rr, bye = parse_rtcp(data)
        assert rr == ReceiverReport(7, [])
        assert bye == RtcpBye([7], "bye")
        assert is_rtcp(data)
        assert not is_rtcp(bytes(RtpPacket(payload_type=0)))

    def test_round_trip_time(self) -> None:
        sent = seconds_to_ntp(100.0)
        lsr = (sent >> 16) & 0xFFFFFFFF
        block = ReportBlock(1, 0, 0, 0, 0, lsr, dlsr=int(0.25 * 65536))
        assert block.round_trip_time(seconds_to_ntp(100.75)) == pytest.approx(0.5, abs=1e-4)
        assert ReportBlock(1, 0, 0, 0, 0, 0, 0).round_trip_time(sent) is None

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"\x80\xc8", "less than 4 bytes"),
            (b"\x40\xc9\x00\x01" + bytes(4), "invalid version"),
            (b"\x80\xc9\x00\x05" + bytes(4), "exceeds the datagram"),
            (b"\x80\xc8\x00\x01" + bytes(4), "shorter than 24 bytes"),
            (b"\x81\xc9\x00\x01" + bytes(4), "too short for 1 report blocks"),
            (b"\x80\x00\x00\x00", "invalid type 0"),
            (b"\xa0\xc9\x00\x01" + b"\x00\x00\x00\x00", "padding length is invalid"),
            (b"\x81\xcb\x00\x00", "too short for 1 sources"),
            (b"\x80\xc9\x00\x01" + bytes(4) + b"\x80", "truncated header"),
        ],
    )
    def test_malformed(self, data: bytes, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            parse_rtcp(data)

    @settings(max_examples=300, deadline=None)
    @given(data=st.binary(max_size=120))
    def test_random_bytes_raise_only_value_error(self, data: bytes) -> None:
        try:
            packets = parse_rtcp(data)
        except ValueError:
            return
        assert parse_rtcp(b"".join(bytes(p) for p in packets)) == packets

    @settings(max_examples=300, deadline=None)
    @given(packets=st.lists(rtcp_packets, min_size=1, max_size=3))
    def test_round_trip(self, packets: list[object]) -> None:
        assert parse_rtcp(b"".join(bytes(p) for p in packets)) == packets  # type: ignore[call-overload]


class TestTelephoneEvent:
    def test_parse_rfc4733_example(self) -> None:
        ev = TelephoneEvent.parse(bytes([11, 0x80 | 10, 0x03, 0x20]))
        assert ev == TelephoneEvent(event=11, end=True, volume=10, duration=800)
        assert ev.digit == "#"
        assert TelephoneEvent(16).digit is None

    def test_digits(self) -> None:
        assert [TelephoneEvent.for_digit(d).event for d in "0123456789*#ABCD"] == list(range(16))
        assert TelephoneEvent.for_digit("a").event == 12
        with pytest.raises(ValueError, match="not a DTMF digit"):
            TelephoneEvent.for_digit("X")

    @pytest.mark.parametrize(
        ("data", "message"),
        [(b"\x01\x02", "shorter than 4"), (b"\x01\x02\x03\x04\x05", "multiple of 4")],
    )
    def test_malformed(self, data: bytes, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            TelephoneEvent.parse(data)

    def test_generate_digit_packets(self) -> None:
        pkts = telephone_event_packets(
            "5", ssrc=9, sequence_number=0xFFFE, timestamp=4000, duration_ms=100
        )
        events = [TelephoneEvent.parse(p.payload) for p in pkts]
        assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
        assert [e.end for e in events] == [False] * 4 + [True] * 3
        assert {e.event for e in events} == {5}
        assert [p.marker for p in pkts] == [True] + [False] * 6
        assert {p.timestamp for p in pkts} == {4000}
        assert [p.sequence_number for p in pkts] == [0xFFFE, 0xFFFF, 0, 1, 2, 3, 4]
        assert {p.payload_type for p in pkts} == {101}
        with pytest.raises(ValueError, match="does not fit"):
            telephone_event_packets("1", ssrc=1, sequence_number=0, timestamp=0, duration_ms=9000)

    @settings(max_examples=300, deadline=None)
    @given(data=st.binary(max_size=12))
    def test_random_bytes_raise_only_value_error(self, data: bytes) -> None:
        try:
            ev = TelephoneEvent.parse(data)
        except ValueError:
            return
        assert TelephoneEvent.parse(bytes(ev)) == ev

    @given(event=u8, end=st.booleans(), volume=st.integers(0, 63), duration=u16)
    def test_round_trip(self, event: int, end: bool, volume: int, duration: int) -> None:
        ev = TelephoneEvent(event, end, volume, duration)
        assert TelephoneEvent.parse(bytes(ev)) == ev


def test_rtcp_padding_on_the_last_packet_is_removed() -> None:
    rr = bytes(ReceiverReport(5, []))
    padded = bytes([rr[0] | 0x20, rr[1], 0, 2]) + rr[4:] + b"\x00\x00\x00\x04"
    assert parse_rtcp(padded) == [ReceiverReport(5, [])]
    with pytest.raises(ValueError, match="only allowed on the last packet"):
        parse_rtcp(padded + rr)
