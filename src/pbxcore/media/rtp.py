"""RTP and RTCP wire formats (RFC 3550), sequence arithmetic, RFC 4733 telephone-events.

Each format is a small dataclass with ``parse()`` and ``__bytes__``; malformed input raises
:class:`ValueError` with a precise message, and ``parse(bytes(x)) == x``. This is the Python
view for signalling, tests and tools; the relay parses packets in native code.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "DTMF_EVENTS",
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SR",
    "RTP_VERSION",
    "ReceiverReport",
    "ReportBlock",
    "RtcpBye",
    "RtcpPacket",
    "RtcpUnknown",
    "RtpPacket",
    "SenderReport",
    "TelephoneEvent",
    "extend_seq",
    "is_rtcp",
    "ntp_to_seconds",
    "parse_rtcp",
    "seconds_to_ntp",
    "seq_diff",
    "telephone_event_packets",
    "uint16_add",
    "uint16_gt",
    "uint32_add",
    "uint32_gt",
]

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204

# RFC 4733 section 3.2: DTMF events 0-15, and 16 = flash
DTMF_EVENTS = "0123456789*#ABCD"
FLASH_EVENT = 16

_NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01


# ---- sequence arithmetic with wrap (RFC 3550 / RFC 1982 serial numbers), in one place ----


def uint16_add(a: int, b: int) -> int:
    """``a + b`` modulo 2**16."""
    return (a + b) & 0xFFFF


def uint16_gt(a: int, b: int) -> bool:
    """Whether sequence number ``a`` is newer than ``b`` (serial number comparison)."""
    half = 0x8000
    return (a > b and a - b < half) or (a < b and b - a > half)


def seq_diff(a: int, b: int) -> int:
    """Signed distance from ``b`` to ``a`` on the 16-bit circle, in [-32768, 32767]."""
    d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


def uint32_add(a: int, b: int) -> int:
    """``a + b`` modulo 2**32 (RTP timestamps)."""
    return (a + b) & 0xFFFFFFFF


def uint32_gt(a: int, b: int) -> bool:
    """Whether timestamp ``a`` is later than ``b`` (serial number comparison)."""
    half = 0x8000_0000
    return (a > b and a - b < half) or (a < b and b - a > half)


def extend_seq(last_extended: int, seq: int) -> int:
    """The extended (wrap-counting) sequence number of ``seq`` nearest ``last_extended``."""
    return last_extended + seq_diff(seq, last_extended & 0xFFFF)


def _check_uint(name: str, value: int, bits: int) -> None:
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{name} must fit in {bits} bits, got {value}")


# ---- RTP ----


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 section 5.1)."""

    payload_type: int = 0
    marker: bool = False
    sequence_number: int = 0
    timestamp: int = 0
    ssrc: int = 0
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None  # None: no header extension (X = 0)
    extension: bytes = b""  # the extension's words, a multiple of 4 bytes
    payload: bytes = b""
    padding_size: int = 0  # 0, or 1-255 bytes of padding including the count byte

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        """Parse and validate one RTP packet."""
        data = bytes(data)
        if len(data) < RTP_HEADER_SIZE:
            raise ValueError(f"RTP packet length is less than {RTP_HEADER_SIZE} bytes")
        first, second, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
        version = first >> 6
        if version != RTP_VERSION:
            raise ValueError(f"RTP packet has invalid version {version}")
        cc = first & 0x0F
        pos = RTP_HEADER_SIZE + 4 * cc
        if len(data) < pos:
            raise ValueError("RTP packet has truncated CSRC")
        csrc = struct.unpack_from(f"!{cc}I", data, RTP_HEADER_SIZE)
        profile: int | None = None
        extension = b""
        if first & 0x10:
            if len(data) < pos + 4:
                raise ValueError("RTP packet has truncated extension profile / length")
            profile, words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if len(data) < pos + 4 * words:
                raise ValueError("RTP packet has truncated extension value")
            extension = data[pos : pos + 4 * words]
            pos += 4 * words
        end = len(data)
        padding = 0
        if first & 0x20:
            padding = data[-1]
            if padding == 0:
                raise ValueError("RTP packet padding length is zero")
            if padding > end - pos:
                raise ValueError("RTP packet padding length is invalid")
            end -= padding
        return cls(
            payload_type=second & 0x7F,
            marker=bool(second & 0x80),
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            csrc=csrc,
            extension_profile=profile,
            extension=extension,
            payload=data[pos:end],
            padding_size=padding,
        )

    def __bytes__(self) -> bytes:
        _check_uint("payload_type", self.payload_type, 7)
        _check_uint("sequence_number", self.sequence_number, 16)
        _check_uint("timestamp", self.timestamp, 32)
        _check_uint("ssrc", self.ssrc, 32)
        if len(self.csrc) > 15:
            raise ValueError(f"RTP packet has {len(self.csrc)} CSRCs, at most 15 fit")
        for c in self.csrc:
            _check_uint("csrc", c, 32)
        _check_uint("padding_size", self.padding_size, 8)
        first = (RTP_VERSION << 6) | len(self.csrc)
        ext = b""
        if self.extension_profile is not None:
            _check_uint("extension_profile", self.extension_profile, 16)
            if len(self.extension) % 4:
                raise ValueError("RTP header extension length is not a multiple of 4 bytes")
            if len(self.extension) > 4 * 0xFFFF:
                raise ValueError("RTP header extension is too long")
            first |= 0x10
            ext = struct.pack("!HH", self.extension_profile, len(self.extension) // 4)
            ext += self.extension
        elif self.extension:
            raise ValueError("RTP header extension data without an extension profile")
        pad = b""
        if self.padding_size:
            first |= 0x20
            pad = bytes(self.padding_size - 1) + bytes([self.padding_size])
        header = struct.pack(
            "!BBHII",
            first,
            (0x80 if self.marker else 0) | self.payload_type,
            self.sequence_number,
            self.timestamp,
            self.ssrc,
        )
        csrc = struct.pack(f"!{len(self.csrc)}I", *self.csrc)
        return header + csrc + ext + bytes(self.payload) + pad


def is_rtcp(data: bytes) -> bool:
    """Whether a datagram on a muxed port is RTCP (RFC 5761 section 4: PT 192-223)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


# ---- RTCP ----


def ntp_to_seconds(ntp: int) -> float:
    """A 64-bit NTP timestamp as Unix time in seconds."""
    return (ntp >> 32) - _NTP_EPOCH_OFFSET + (ntp & 0xFFFFFFFF) / 2**32


def seconds_to_ntp(t: float) -> int:
    """Unix time in seconds as a 64-bit NTP timestamp."""
    secs = int(t // 1)
    frac = round((t - secs) * 2**32)
    if frac >= 2**32:
        secs, frac = secs + 1, 0
    return ((secs + _NTP_EPOCH_OFFSET) & 0xFFFFFFFF) << 32 | frac


@dataclass(slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 section 6.4.1)."""

    ssrc: int
    fraction_lost: int  # 8-bit fixed point, lost / expected * 256
    packets_lost: int  # cumulative, 24-bit signed
    highest_sequence: int  # extended highest sequence number received
    jitter: int  # interarrival jitter, timestamp units
    lsr: int  # middle 32 bits of the last SR's NTP timestamp
    dlsr: int  # delay since that SR, 1/65536 s

    SIZE = 24

    @classmethod
    def parse(cls, data: bytes, pos: int = 0) -> ReportBlock:
        if len(data) < pos + cls.SIZE:
            raise ValueError("RTCP report block is truncated")
        ssrc, lost_word, highest, jitter, lsr, dlsr = struct.unpack_from("!IIIIII", data, pos)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        _check_uint("ssrc", self.ssrc, 32)
        _check_uint("fraction_lost", self.fraction_lost, 8)
        if not -0x800000 <= self.packets_lost <= 0x7FFFFF:
            raise ValueError(f"packets_lost must fit in 24 bits signed, got {self.packets_lost}")
        for name in ("highest_sequence", "jitter", "lsr", "dlsr"):
            _check_uint(name, getattr(self, name), 32)
        lost = (self.fraction_lost << 24) | (self.packets_lost & 0xFFFFFF)
        return struct.pack(
            "!IIIIII", self.ssrc, lost, self.highest_sequence, self.jitter, self.lsr, self.dlsr
        )

    def round_trip_time(self, arrival_ntp: int) -> float | None:
        """RTT in seconds from this block's LSR/DLSR and the NTP time it arrived, if known."""
        if self.lsr == 0:
            return None
        a = (arrival_ntp >> 16) & 0xFFFFFFFF
        return ((a - self.lsr - self.dlsr) & 0xFFFFFFFF) / 65536.0


def _rtcp_header(packet_type: int, count: int, body: bytes, padding: int = 0) -> bytes:
    _check_uint("count", count, 5)
    if (len(body) + padding) % 4:
        raise ValueError("RTCP packet length is not a multiple of 4 bytes")
    length = (len(body) + padding) // 4
    if length > 0xFFFF:
        raise ValueError("RTCP packet is too long")
    first = (RTP_VERSION << 6) | (0x20 if padding else 0) | count
    pad = bytes(padding - 1) + bytes([padding]) if padding else b""
    return struct.pack("!BBH", first, packet_type, length) + body + pad


def _parse_blocks(body: bytes, pos: int, count: int) -> tuple[list[ReportBlock], bytes]:
    if len(body) < pos + count * ReportBlock.SIZE:
        raise ValueError(f"RTCP packet is too short for {count} report blocks")
    blocks = [ReportBlock.parse(body, pos + k * ReportBlock.SIZE) for k in range(count)]
    return blocks, body[pos + count * ReportBlock.SIZE :]


@dataclass(slots=True)
class SenderReport:
    """RTCP SR (RFC 3550 section 6.4.1)."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)
    extension: bytes = b""  # profile-specific, a multiple of 4 bytes

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> SenderReport:
        if len(body) < 24:
            raise ValueError("RTCP sender report is shorter than 24 bytes")
        ssrc, ntp, rtp_ts, packets, octets = struct.unpack_from("!IQIII", body)
        reports, ext = _parse_blocks(body, 24, count)
        return cls(ssrc, ntp, rtp_ts, packets, octets, reports, ext)

    def __bytes__(self) -> bytes:
        _check_uint("ssrc", self.ssrc, 32)
        _check_uint("ntp_timestamp", self.ntp_timestamp, 64)
        for name in ("rtp_timestamp", "packet_count", "octet_count"):
            _check_uint(name, getattr(self, name), 32)
        body = struct.pack(
            "!IQIII",
            self.ssrc,
            self.ntp_timestamp,
            self.rtp_timestamp,
            self.packet_count,
            self.octet_count,
        )
        body += b"".join(bytes(r) for r in self.reports) + self.extension
        return _rtcp_header(RTCP_SR, len(self.reports), body)


@dataclass(slots=True)
class ReceiverReport:
    """RTCP RR (RFC 3550 section 6.4.2)."""

    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)
    extension: bytes = b""

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> ReceiverReport:
        if len(body) < 4:
            raise ValueError("RTCP receiver report is shorter than 4 bytes")
        (ssrc,) = struct.unpack_from("!I", body)
        reports, ext = _parse_blocks(body, 4, count)
        return cls(ssrc, reports, ext)

    def __bytes__(self) -> bytes:
        _check_uint("ssrc", self.ssrc, 32)
        body = struct.pack("!I", self.ssrc) + b"".join(bytes(r) for r in self.reports)
        return _rtcp_header(RTCP_RR, len(self.reports), body + self.extension)


@dataclass(slots=True)
class RtcpBye:
    """RTCP BYE (RFC 3550 section 6.6)."""

    sources: list[int] = field(default_factory=list)
    reason: str = ""

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> RtcpBye:
        if len(body) < 4 * count:
            raise ValueError(f"RTCP BYE is too short for {count} sources")
        sources = list(struct.unpack_from(f"!{count}I", body))
        reason = ""
        pos = 4 * count
        if pos < len(body):
            n = body[pos]
            if pos + 1 + n > len(body):
                raise ValueError("RTCP BYE reason is truncated")
            try:
                reason = body[pos + 1 : pos + 1 + n].decode()
            except UnicodeDecodeError as exc:
                raise ValueError("RTCP BYE reason is not UTF-8") from exc
            if any(body[pos + 1 + n :]):
                raise ValueError("RTCP BYE has trailing data after the reason")
        return cls(sources, reason)

    def __bytes__(self) -> bytes:
        for s in self.sources:
            _check_uint("source", s, 32)
        body = struct.pack(f"!{len(self.sources)}I", *self.sources)
        if self.reason:
            raw = self.reason.encode()
            if len(raw) > 255:
                raise ValueError("RTCP BYE reason is longer than 255 bytes")
            body += bytes([len(raw)]) + raw
            body += bytes(-len(body) % 4)
        return _rtcp_header(RTCP_BYE, len(self.sources), body)


@dataclass(slots=True)
class RtcpUnknown:
    """An RTCP packet type this module keeps opaque (SDES, APP, feedback, XR)."""

    packet_type: int
    count: int
    body: bytes

    def __bytes__(self) -> bytes:
        _check_uint("packet_type", self.packet_type, 8)
        return _rtcp_header(self.packet_type, self.count, self.body)


RtcpPacket = SenderReport | ReceiverReport | RtcpBye | RtcpUnknown


def parse_rtcp(data: bytes | bytearray | memoryview) -> list[RtcpPacket]:
    """Parse a (compound) RTCP datagram into its packets."""
    data = bytes(data)
    if len(data) < 4:
        raise ValueError("RTCP packet length is less than 4 bytes")
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < len(data):
        if len(data) < pos + 4:
            raise ValueError("RTCP packet has a truncated header")
        first, packet_type, length = struct.unpack_from("!BBH", data, pos)
        version = first >> 6
        if version != RTP_VERSION:
            raise ValueError(f"RTCP packet has invalid version {version}")
        end = pos + 4 + 4 * length
        if end > len(data):
            raise ValueError("RTCP packet length exceeds the datagram")
        body = data[pos + 4 : end]
        if first & 0x20:
            if end != len(data):
                raise ValueError("RTCP padding is only allowed on the last packet")
            if not body or body[-1] == 0 or body[-1] > len(body) or body[-1] % 4:
                raise ValueError("RTCP packet padding length is invalid")
            body = body[: -body[-1]]
        count = first & 0x1F
        if packet_type == RTCP_SR:
            packets.append(SenderReport.parse_body(count, body))
        elif packet_type == RTCP_RR:
            packets.append(ReceiverReport.parse_body(count, body))
        elif packet_type == RTCP_BYE:
            packets.append(RtcpBye.parse_body(count, body))
        elif 192 <= packet_type <= 223:
            packets.append(RtcpUnknown(packet_type, count, body))
        else:
            raise ValueError(f"RTCP packet has invalid type {packet_type}")
        pos = end
    return packets


# ---- RFC 4733 telephone-event ----


@dataclass(slots=True)
class TelephoneEvent:
    """An RFC 4733 telephone-event payload (section 2.3)."""

    event: int  # 0-9 * # A-D = 0-15, flash = 16
    end: bool = False
    volume: int = 10  # power level as -dBm0, 0-63
    duration: int = 0  # timestamp units since the event began

    SIZE = 4

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> TelephoneEvent:
        data = bytes(data)
        if len(data) < cls.SIZE:
            raise ValueError(f"telephone-event payload is shorter than {cls.SIZE} bytes")
        if len(data) % cls.SIZE:
            raise ValueError("telephone-event payload length is not a multiple of 4 bytes")
        event, flags, duration = struct.unpack_from("!BBH", data)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def __bytes__(self) -> bytes:
        _check_uint("event", self.event, 8)
        _check_uint("volume", self.volume, 6)
        _check_uint("duration", self.duration, 16)
        return struct.pack(
            "!BBH", self.event, (0x80 if self.end else 0) | self.volume, self.duration
        )

    @property
    def digit(self) -> str | None:
        """The DTMF digit ("0"-"9", "*", "#", "A"-"D"), or None for other events."""
        return DTMF_EVENTS[self.event] if self.event < len(DTMF_EVENTS) else None

    @classmethod
    def for_digit(
        cls, digit: str, *, end: bool = False, volume: int = 10, duration: int = 0
    ) -> TelephoneEvent:
        """The event for a DTMF digit."""
        index = DTMF_EVENTS.find(digit.upper()) if len(digit) == 1 else -1
        if index < 0:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        return cls(index, end, volume, duration)


def telephone_event_packets(
    digit: str,
    *,
    ssrc: int,
    sequence_number: int,
    timestamp: int,
    duration_ms: int = 100,
    payload_type: int = 101,
    volume: int = 10,
    packet_ms: int = 20,
    clock_rate: int = 8000,
    end_repeats: int = 3,
) -> list[RtpPacket]:
    """RTP packets carrying one DTMF digit as RFC 4733 section 2.5.1 describes.

    One packet per ``packet_ms`` with the event's start timestamp and a growing duration; the
    first has the marker bit; the final (end) packet is sent ``end_repeats`` times.
    """
    if duration_ms <= 0 or packet_ms <= 0:
        raise ValueError("duration_ms and packet_ms must be positive")
    total = duration_ms * clock_rate // 1000
    if total > 0xFFFF:
        raise ValueError(f"event duration of {duration_ms} ms does not fit 16 bits")
    step = packet_ms * clock_rate // 1000
    durations = [*range(step, total, step), total]
    packets = []
    seq = sequence_number
    for k, dur in enumerate(durations):
        last = k == len(durations) - 1
        event = TelephoneEvent.for_digit(digit, volume=volume, duration=dur, end=last)
        for _ in range(end_repeats if last else 1):
            packets.append(
                RtpPacket(
                    payload_type=payload_type,
                    marker=k == 0,
                    sequence_number=seq,
                    timestamp=timestamp,
                    ssrc=ssrc,
                    payload=bytes(event),
                )
            )
            seq = uint16_add(seq, 1)
    return packets
