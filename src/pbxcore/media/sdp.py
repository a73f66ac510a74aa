"""SDP (RFC 4566) and offer/answer (RFC 3264) for G.711 audio with telephone-events.

:class:`SessionDescription` parses and serializes a session description, keeping every
line it understands as written (``parse(str(sdp)) == sdp``); malformed input raises
:class:`ValueError` naming the line. Attributes are kept in order as ``(name, value)``
pairs; the media-level view (``rtpmap``, ``direction``, ``ptime``, ``rtcp``, ``rtcp_mux``)
is computed from them.

:func:`create_offer`, :func:`create_answer` and :func:`negotiated_audio` implement the
offer/answer model for PCMU, PCMA and telephone-event, the codecs the media engine carries.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pbxcore.media.relay import Law

__all__ = [
    "DIRECTIONS",
    "PCMA",
    "PCMU",
    "TELEPHONE_EVENT",
    "Codec",
    "Connection",
    "MediaDescription",
    "NegotiatedAudio",
    "Origin",
    "RtpMap",
    "SessionDescription",
    "codec_for_law",
    "create_answer",
    "create_offer",
    "negotiated_audio",
    "rewrite_audio",
]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_REVERSE_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}
_RTP_PROTOS = ("RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF")
# RFC 3551 table 4: the static audio payload types an SDP may use without an rtpmap
_STATIC_PT = {0: ("PCMU", 8000), 3: ("GSM", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000),
              18: ("G729", 8000)}  # fmt: skip
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+$")


def _token(value: str, what: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"SDP {what} is not a token: {value!r}")
    return value


def _int(value: str, what: str, lo: int = 0, hi: int | None = None) -> int:
    if not value.isascii() or not value.isdigit():
        raise ValueError(f"SDP {what} is not a number: {value!r}")
    n = int(value)
    if n < lo or (hi is not None and n > hi):
        raise ValueError(f"SDP {what} is out of range: {n}")
    return n


@functools.lru_cache(maxsize=1024)
def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # the same few addresses come in every message: parse each once (ValueError is not cached)
    return ipaddress.ip_address(host)


def _check_address(addrtype: str, address: str, what: str) -> None:
    if addrtype not in ("IP4", "IP6"):
        raise ValueError(f"SDP {what} has unknown address type {addrtype!r}")
    host = address.split("/", 1)[0]
    try:
        ip = _ip_address(host)
    except ValueError:
        # a fully qualified domain name is allowed (RFC 4566 section 5.7)
        if not host or not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?$", host):
            raise ValueError(f"SDP {what} has an invalid address {address!r}") from None
        return
    if (ip.version == 4) != (addrtype == "IP4"):
        raise ValueError(f"SDP {what} address {host!r} is not {addrtype}")
    if "/" in address:
        for part in address.split("/")[1:]:
            _int(part, f"{what} TTL / address count", 0, 0xFFFF)


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


@dataclass(slots=True)
class Origin:
    """The o= line (RFC 4566 section 5.2)."""

    username: str = "-"
    session_id: int = 0
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "127.0.0.1"

    @classmethod
    def parse(cls, value: str) -> Origin:
        parts = value.split(" ")
        if len(parts) != 6:
            raise ValueError(f"SDP o= line needs 6 fields, got {len(parts)}: {value!r}")
        user, sid, ver, nettype, addrtype, address = parts
        if nettype != "IN":
            raise ValueError(f"SDP o= line has unknown network type {nettype!r}")
        _check_address(addrtype, address, "o= line")
        return cls(user, _int(sid, "o= session id"), _int(ver, "o= session version"), nettype,
                   addrtype, address)  # fmt: skip

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(slots=True)
class Connection:
    """A c= line (RFC 4566 section 5.7)."""

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = value.split(" ")
        if len(parts) != 3:
            raise ValueError(f"SDP c= line needs 3 fields, got {len(parts)}: {value!r}")
        nettype, addrtype, address = parts
        if nettype != "IN":
            raise ValueError(f"SDP c= line has unknown network type {nettype!r}")
        _check_address(addrtype, address, "c= line")
        return cls(address, addrtype, nettype)

    @classmethod
    def for_address(cls, address: str) -> Connection:
        """The c= line for an IPv4 or IPv6 address."""
        conn = cls(address, _addrtype(address))
        _check_address(conn.addrtype, address, "c= line")
        return conn

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """An a=rtpmap value: ``<pt> <encoding>/<clock rate>[/<channels>]``."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str) -> RtpMap:
        pt, _, rest = value.partition(" ")
        parts = rest.strip().split("/")
        if not rest or len(parts) not in (2, 3) or not parts[0]:
            raise ValueError(f"SDP a=rtpmap is malformed: {value!r}")
        channels = _int(parts[2], "rtpmap channels", 1) if len(parts) == 3 else None
        return cls(_int(pt, "rtpmap payload type", 0, 127), _token(parts[0], "rtpmap encoding"),
                   _int(parts[1], "rtpmap clock rate", 1), channels)  # fmt: skip

    def __str__(self) -> str:
        chan = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{chan}"


def _validate_attribute(name: str, value: str | None) -> None:
    if name == "rtpmap":
        RtpMap.parse(value or "")
    elif name == "fmtp":
        pt, _, params = (value or "").partition(" ")
        if not pt or not params:
            raise ValueError(f"SDP a=fmtp is malformed: {value!r}")
    elif name in ("ptime", "maxptime"):
        try:
            ok = value is not None and float(value) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"SDP a={name} is not a positive number: {value!r}")
    elif name == "rtcp":
        parts = (value or "").split(" ")
        _int(parts[0], "a=rtcp port", 0, 65535)
        if len(parts) != 1:
            if len(parts) != 4 or parts[1] != "IN":
                raise ValueError(f"SDP a=rtcp is malformed: {value!r}")
            _check_address(parts[2], parts[3], "a=rtcp")
    elif (name in DIRECTIONS or name == "rtcp-mux") and value is not None:
        raise ValueError(f"SDP a={name} takes no value")


def _parse_attribute(value: str) -> tuple[str, str | None]:
    name, sep, val = value.partition(":")
    _token(name, "attribute name")
    attr = (name, val if sep else None)
    _validate_attribute(*attr)
    return attr


def _format_attribute(attr: tuple[str, str | None]) -> str:
    name, value = attr
    return f"a={name}" if value is None else f"a={name}:{value}"


def _direction(attributes: Iterable[tuple[str, str | None]]) -> str | None:
    found = None
    for name, _ in attributes:
        if name in DIRECTIONS:
            found = name
    return found


@dataclass(slots=True)
class MediaDescription:
    """One m= section (RFC 4566 section 5.14) and its lines."""

    media: str = "audio"
    port: int = 0
    proto: str = "RTP/AVP"
    formats: list[str] = field(default_factory=list)
    port_count: int | None = None
    title: str | None = None  # i=
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[str] = field(default_factory=list)
    key: str | None = None  # k=
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    @classmethod
    def parse_m_line(cls, value: str) -> MediaDescription:
        parts = value.split(" ")
        if len(parts) < 4:
            raise ValueError(f"SDP m= line needs at least 4 fields: {value!r}")
        media, port_field, proto, *formats = parts
        port_text, sep, count = port_field.partition("/")
        port = _int(port_text, "m= port", 0, 65535)
        port_count = _int(count, "m= port count", 1) if sep else None
        _token(media, "m= media")
        if not proto or any(not _TOKEN.match(p) for p in proto.split("/")):
            raise ValueError(f"SDP m= line has an invalid protocol {proto!r}")
        for f in formats:
            if proto in _RTP_PROTOS:
                _int(f, "m= RTP payload type", 0, 127)
            else:
                _token(f, "m= format")
        return cls(media, port, proto, formats, port_count)

    def __str__(self) -> str:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        lines = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}"]
        if self.title is not None:
            lines.append(f"i={self.title}")
        lines += [f"c={c}" for c in self.connections]
        lines += [f"b={b}" for b in self.bandwidths]
        if self.key is not None:
            lines.append(f"k={self.key}")
        lines += [_format_attribute(a) for a in self.attributes]
        return "\r\n".join(lines) + "\r\n"

    # ---- the media-level view ----

    def attribute_values(self, name: str) -> list[str | None]:
        return [v for n, v in self.attributes if n == name]

    def rtpmap(self, payload_type: int) -> RtpMap | None:
        """The rtpmap of a payload type, from a=rtpmap or RFC 3551's static table."""
        for value in self.attribute_values("rtpmap"):
            m = RtpMap.parse(value or "")
            if m.payload_type == payload_type:
                return m
        static = _STATIC_PT.get(payload_type)
        return RtpMap(payload_type, *static) if static else None

    def fmtp(self, payload_type: int) -> str | None:
        for value in self.attribute_values("fmtp"):
            pt, _, params = (value or "").partition(" ")
            if pt == str(payload_type):
                return params
        return None

    @property
    def payload_types(self) -> list[int]:
        return [int(f) for f in self.formats] if self.proto in _RTP_PROTOS else []

    @property
    def ptime(self) -> float | None:
        values = self.attribute_values("ptime")
        return float(values[-1]) if values and values[-1] else None

    @property
    def rtcp_mux(self) -> bool:
        return any(n == "rtcp-mux" for n, _ in self.attributes)

    @property
    def rtcp(self) -> tuple[int, str | None] | None:
        """The a=rtcp port and address (RFC 3605), if given."""
        values = self.attribute_values("rtcp")
        if not values or values[-1] is None:
            return None
        parts = values[-1].split(" ")
        return int(parts[0]), parts[3] if len(parts) == 4 else None

    def direction_or(self, default: str) -> str:
        return _direction(self.attributes) or default


@dataclass(slots=True)
class SessionDescription:
    """A session description (RFC 4566)."""

    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    version: int = 0
    info: str | None = None  # i=
    uri: str | None = None  # u=
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    times: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])
    repeats: list[str] = field(default_factory=list)  # r= lines, as written
    zone: str | None = None  # z=
    key: str | None = None  # k=
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str | bytes) -> SessionDescription:
        """Parse SDP text (CRLF or LF line ends)."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError("SDP is not valid UTF-8") from exc
        lines = text.replace("\r\n", "\n").split("\n")
        while lines and lines[-1] == "":
            lines.pop()
        if not lines:
            raise ValueError("SDP is empty")
        sdp = cls(times=[])
        order = "vosiuepcbtrzkam"
        last = -1
        mlast = 0
        seen: set[str] = set()
        media: MediaDescription | None = None
        for number, line in enumerate(lines, 1):
            if len(line) < 2 or line[1] != "=":
                raise ValueError(f"SDP line {number} is not <type>=<value>: {line!r}")
            kind, value = line[0], line[2:]
            if any(ord(ch) < 0x20 and ch != "\t" for ch in value) or "\x7f" in value:
                raise ValueError(f"SDP line {number} has a control character")
            if media is None:
                pos = order.find(kind)
                if pos < 0:
                    raise ValueError(f"SDP line {number} has an unknown type {kind!r}")
                repeatable = kind in "epbtra"
                if number == 1 and kind != "v":
                    raise ValueError("SDP must start with a v= line")
                after_repeat = kind == "t" and last == order.find("r")
                if (pos < last and not after_repeat) or (pos == last and not repeatable):
                    raise ValueError(f"SDP line {number}: {kind}= is out of order")
                for required in "vost":
                    if required not in seen and order.find(required) < pos:
                        raise ValueError(f"SDP line {number}: {kind}= before a {required}= line")
                seen.add(kind)
                last = pos
                sdp._session_line(kind, value)
                if kind == "m":
                    media = sdp.media[-1]
                    mlast = 0
                continue
            mpos = "micbka".find(kind)
            if mpos < 0:
                raise ValueError(f"SDP line {number}: {kind}= is not allowed in a media section")
            if kind == "m":
                sdp.media.append(MediaDescription.parse_m_line(value))
                media = sdp.media[-1]
                mlast = 0
                continue
            if mpos < mlast or (mpos == mlast and kind in "ik"):
                raise ValueError(f"SDP line {number}: {kind}= is out of order")
            mlast = mpos
            if kind == "i":
                media.title = value
            elif kind == "c":
                media.connections.append(Connection.parse(value))
            elif kind == "b":
                media.bandwidths.append(_bandwidth(value))
            elif kind == "k":
                media.key = value
            else:
                media.attributes.append(_parse_attribute(value))
        for required in "vost":
            if required not in seen:
                raise ValueError(f"SDP has no {required}= line")
        for m in sdp.media:
            if sdp.connection is None and not m.connections and m.port != 0:
                raise ValueError(f"SDP {m.media} section has no c= line and no session c= line")
        return sdp

    def _session_line(self, kind: str, value: str) -> None:
        if kind == "v":
            if value != "0":
                raise ValueError(f"SDP version must be 0, got {value!r}")
        elif kind == "o":
            self.origin = Origin.parse(value)
        elif kind == "s":
            if not value:
                raise ValueError("SDP s= line is empty (use s=-)")
            self.session_name = value
        elif kind == "i":
            self.info = value
        elif kind == "u":
            self.uri = value
        elif kind == "e":
            self.emails.append(value)
        elif kind == "p":
            self.phones.append(value)
        elif kind == "c":
            self.connection = Connection.parse(value)
        elif kind == "b":
            self.bandwidths.append(_bandwidth(value))
        elif kind == "t":
            parts = value.split(" ")
            if len(parts) != 2:
                raise ValueError(f"SDP t= line needs 2 fields: {value!r}")
            self.times.append((_int(parts[0], "t= start"), _int(parts[1], "t= stop")))
        elif kind == "r":
            self.repeats.append(value)
        elif kind == "z":
            self.zone = value
        elif kind == "k":
            self.key = value
        elif kind == "a":
            self.attributes.append(_parse_attribute(value))
        elif kind == "m":
            self.media.append(MediaDescription.parse_m_line(value))

    def __str__(self) -> str:
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        if self.info is not None:
            lines.append(f"i={self.info}")
        if self.uri is not None:
            lines.append(f"u={self.uri}")
        lines += [f"e={e}" for e in self.emails]
        lines += [f"p={p}" for p in self.phones]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines += [f"b={b}" for b in self.bandwidths]
        for k, (start, stop) in enumerate(self.times):
            lines.append(f"t={start} {stop}")
            if k == len(self.times) - 1:
                lines += [f"r={r}" for r in self.repeats]
        if self.zone is not None:
            lines.append(f"z={self.zone}")
        if self.key is not None:
            lines.append(f"k={self.key}")
        lines += [_format_attribute(a) for a in self.attributes]
        return "\r\n".join(lines) + "\r\n" + "".join(str(m) for m in self.media)

    def __bytes__(self) -> bytes:
        return str(self).encode()

    @property
    def direction(self) -> str:
        """The session-level direction (sendrecv when not given)."""
        return _direction(self.attributes) or "sendrecv"

    def media_connection(self, media: MediaDescription) -> Connection | None:
        return media.connections[0] if media.connections else self.connection


def _bandwidth(value: str) -> str:
    bwtype, sep, amount = value.partition(":")
    if not sep:
        raise ValueError(f"SDP b= line is not <type>:<bandwidth>: {value!r}")
    _token(bwtype, "b= type")
    _int(amount, "b= bandwidth")
    return value


# ---- offer/answer (RFC 3264) ----


@dataclass(frozen=True, slots=True)
class Codec:
    """An SDP codec the media engine carries (an rtpmap entry) and its default payload type.

    The G.711 law the relay applies for it is :attr:`law`.
    """

    name: str
    payload_type: int
    clock_rate: int = 8000
    fmtp: str | None = None

    def rtpmap(self, payload_type: int | None = None) -> RtpMap:
        pt = self.payload_type if payload_type is None else payload_type
        return RtpMap(pt, self.name, self.clock_rate)

    @property
    def law(self) -> Law | None:
        """``"ulaw"`` for PCMU, ``"alaw"`` for PCMA, None for telephone-event."""
        return _LAWS.get(self.name.upper())


PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)
TELEPHONE_EVENT = Codec("telephone-event", 101, fmtp="0-16")
_AUDIO_CODECS = {"PCMU": PCMU, "PCMA": PCMA}
_LAWS: dict[str, Law] = {"PCMU": "ulaw", "PCMA": "alaw"}


def codec_for_law(law: Law) -> Codec:
    """The SDP codec that carries a G.711 law (PCMU for ``"ulaw"``, PCMA for ``"alaw"``)."""
    return PCMU if law == "ulaw" else PCMA


def _codec_named(name: str) -> Codec:
    codec = _AUDIO_CODECS.get(name.upper())
    if codec is None:
        raise ValueError(f"unsupported codec {name!r}: the media engine carries PCMU and PCMA")
    return codec


def _new_origin(address: str) -> Origin:
    sid = secrets.randbelow(2**62)
    return Origin("-", sid, sid, "IN", _addrtype(address), address)


def _audio_section(
    port: int,
    payloads: Sequence[tuple[int, Codec]],
    telephone_event: int | None,
    *,
    direction: str,
    ptime: int | None,
    rtcp_mux: bool,
    rtcp_port: int | None,
) -> MediaDescription:
    m = MediaDescription("audio", port, "RTP/AVP", [str(pt) for pt, _ in payloads])
    for pt, codec in payloads:
        m.attributes.append(("rtpmap", str(codec.rtpmap(pt))))
    if telephone_event is not None:
        m.formats.append(str(telephone_event))
        m.attributes.append(("rtpmap", str(TELEPHONE_EVENT.rtpmap(telephone_event))))
        m.attributes.append(("fmtp", f"{telephone_event} {TELEPHONE_EVENT.fmtp}"))
    if ptime is not None:
        m.attributes.append(("ptime", str(ptime)))
    if rtcp_mux:
        m.attributes.append(("rtcp-mux", None))
    elif rtcp_port is not None and rtcp_port != port + 1:
        m.attributes.append(("rtcp", str(rtcp_port)))
    m.attributes.append((direction, None))
    return m


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")


def create_offer(
    address: str,
    port: int,
    *,
    codecs: Sequence[str] = ("PCMU", "PCMA"),
    telephone_event: int | None = TELEPHONE_EVENT.payload_type,
    direction: str = "sendrecv",
    ptime: int | None = 20,
    rtcp_mux: bool = False,
    rtcp_port: int | None = None,
    origin: Origin | None = None,
) -> SessionDescription:
    """An audio offer from ``address``:``port`` (IPv4 or IPv6) with ``codecs`` in order."""
    _check_direction(direction)
    if not codecs:
        raise ValueError("an offer needs at least one codec")
    payloads = [(c.payload_type, c) for c in map(_codec_named, codecs)]
    if telephone_event is not None and not 96 <= telephone_event <= 127:
        raise ValueError(f"telephone-event needs a dynamic payload type, got {telephone_event}")
    media = _audio_section(port, payloads, telephone_event, direction=direction, ptime=ptime,
                           rtcp_mux=rtcp_mux, rtcp_port=rtcp_port)  # fmt: skip
    return SessionDescription(
        origin=origin or _new_origin(address),
        connection=Connection.for_address(address),
        media=[media],
    )


def _offered_codecs(m: MediaDescription) -> tuple[list[tuple[int, Codec]], int | None]:
    audio: list[tuple[int, Codec]] = []
    te: int | None = None
    for pt in m.payload_types:
        rtpmap = m.rtpmap(pt)
        if rtpmap is None or rtpmap.clock_rate != 8000 or rtpmap.channels not in (None, 1):
            continue
        name = rtpmap.encoding.upper()
        if name in _AUDIO_CODECS and all(c.name != name for _, c in audio):
            audio.append((pt, _AUDIO_CODECS[name]))
        elif name == "TELEPHONE-EVENT" and te is None:
            te = pt
    return audio, te


def create_answer(
    offer: SessionDescription,
    address: str,
    port: int,
    *,
    codecs: Sequence[str] = ("PCMU", "PCMA"),
    telephone_event: bool = True,
    direction: str = "sendrecv",
    ptime: int | None = 20,
    rtcp_mux: bool = True,
    rtcp_port: int | None = None,
    origin: Origin | None = None,
) -> SessionDescription:
    """The answer to ``offer``: the first audio stream with a common codec is accepted.

    The accepted stream keeps the offerer's payload type numbers and codec order, limited
    to ``codecs``; its direction is the reverse of the offered one intersected with
    ``direction``; rtcp-mux is accepted when offered and ``rtcp_mux`` is true. Every other
    stream is declined with port 0, as RFC 3264 section 6 requires. Raises ValueError when
    no audio stream can be accepted.
    """
    _check_direction(direction)
    ours = {_codec_named(c).name for c in codecs}
    answer = SessionDescription(
        origin=origin or _new_origin(address), connection=Connection.for_address(address)
    )
    accepted = False
    for m in offer.media:
        payloads, te = _offered_codecs(m) if m.media == "audio" and m.port else ([], None)
        payloads = [(pt, c) for pt, c in payloads if c.name in ours]
        if accepted or not payloads or m.proto not in ("RTP/AVP", "RTP/AVPF"):
            answer.media.append(MediaDescription(m.media, 0, m.proto, list(m.formats)))
            continue
        accepted = True
        offered = _REVERSE_DIRECTION[m.direction_or(offer.direction)]
        answer.media.append(
            _audio_section(
                port,
                payloads,
                te if telephone_event else None,
                direction=_intersect(offered, direction),
                ptime=ptime,
                rtcp_mux=rtcp_mux and m.rtcp_mux,
                rtcp_port=rtcp_port,
            )
        )
    if not accepted:
        raise ValueError("SDP offer has no audio stream with PCMU or PCMA over RTP/AVP")
    return answer


def _intersect(a: str, b: str) -> str:
    send = a in ("sendrecv", "sendonly") and b in ("sendrecv", "sendonly")
    recv = a in ("sendrecv", "recvonly") and b in ("sendrecv", "recvonly")
    return {(True, True): "sendrecv", (True, False): "sendonly",
            (False, True): "recvonly", (False, False): "inactive"}[(send, recv)]  # fmt: skip


@dataclass(frozen=True, slots=True)
class NegotiatedAudio:
    """What one side's SDP says about the accepted audio stream, from our point of view."""

    address: str  # where to send RTP
    port: int
    rtcp_port: int  # where to send RTCP (== port with rtcp-mux)
    rtcp_address: str
    codec: Codec  # the first common codec, which the sender will use
    payload_type: int
    telephone_event: int | None  # payload type, if events were agreed
    direction: str  # the remote side's direction (sendonly: it only sends)
    ptime: float | None
    rtcp_mux: bool


def negotiated_audio(remote: SessionDescription) -> NegotiatedAudio | None:
    """The remote side's accepted audio stream (from an offer or an answer), or None.

    None means the audio was declined (port 0) or carries no PCMU/PCMA.
    """
    for m in remote.media:
        if m.media != "audio" or m.port == 0:
            continue
        payloads, te = _offered_codecs(m)
        if not payloads:
            continue
        conn = remote.media_connection(m)
        if conn is None:
            raise ValueError("SDP audio section has no connection address")
        rtcp = m.rtcp
        mux = m.rtcp_mux
        rtcp_port = m.port if mux else (rtcp[0] if rtcp else m.port + 1)
        rtcp_address = rtcp[1] if rtcp and rtcp[1] else conn.address.split("/")[0]
        pt, codec = payloads[0]
        return NegotiatedAudio(
            address=conn.address.split("/")[0],
            port=m.port,
            rtcp_port=rtcp_port,
            rtcp_address=rtcp_address,
            codec=codec,
            payload_type=pt,
            telephone_event=te,
            direction=m.direction_or(remote.direction),
            ptime=m.ptime,
            rtcp_mux=mux,
        )
    return None


def rewrite_audio(
    sdp: SessionDescription, address: str, port: int, *, rtcp_port: int | None = None
) -> SessionDescription:
    """A copy of ``sdp`` with its audio pointed at ``address``:``port`` (a relay's leg).

    The connection lines and the audio port are replaced, a=rtcp is rewritten to our RTCP
    port (or dropped when it is port + 1), and the origin's version is kept; everything
    else (codecs, attributes, other streams) is left as the peer wrote it.
    """
    conn = Connection.for_address(address)
    media = []
    for m in sdp.media:
        if m.media == "audio" and m.port != 0:
            attrs = [(n, v) for n, v in m.attributes if n != "rtcp"]
            if rtcp_port is not None and rtcp_port != port + 1 and not m.rtcp_mux:
                attrs.append(("rtcp", str(rtcp_port)))
            conns = [conn] if m.connections else []
            media.append(replace(m, port=port, connections=conns, attributes=attrs))
        else:
            media.append(m)
    return replace(sdp, connection=conn, media=media)
