"""The REGISTER scanner: the native module and its pure-Python reference, same tests.

Both must accept exactly the same datagrams and return exactly the same fields; the
fuzz tests compare them byte for byte on random and mutated messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pbxcore._sipscan as native
import pbxcore._sipscan_ref as reference
from pbxcore._sipscan_ref import Fields
from pbxcore.sip.errors import SipParseError
from pbxcore.sip.headers import COMPACT_FORMS
from pbxcore.sip.message import ParseLimits, _split_general

Scanner = Callable[[bytes], Fields | None]

AUTH = (
    'Digest username="alice",realm="pbx.test",cnonce="6b8b4567",nc=00000001,qop=auth,'
    'uri="sip:pbx.test",nonce="AAAA-b_c=",response="0123456789abcdef",algorithm=MD5'
)
LINES = [
    "REGISTER sip:pbx.test SIP/2.0",
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1-2;rport",
    "From: <sip:alice@pbx.test>;tag=12SIPpTag001",
    "To: <sip:alice@pbx.test>",
    "Call-ID: 1-2@127.0.0.1",
    "CSeq: 2 REGISTER",
    "Contact: <sip:alice@127.0.0.1:5070>;expires=120",
    f"Authorization: {AUTH}",
    "Max-Forwards: 70",
    "Expires: 3600",
    "User-Agent: SIPp v3.6",
    "Allow: REGISTER, OPTIONS",
    "Supported: path",
    "Content-Length: 0",
]


def wire(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture(params=[native.scan_register, reference.scan_register], ids=["native", "ref"])
def scan(request: pytest.FixtureRequest) -> Scanner:
    return request.param  # type: ignore[no-any-return]


class TestScanner:
    def test_fields_of_a_full_register(self, scan: Scanner) -> None:
        assert scan(wire(LINES)) == (
            "z9hG4bK-1-2",
            "127.0.0.1",
            5070,
            True,
            "alice",
            "pbx.test",
            "1-2@127.0.0.1",
            2,
            "sip:alice@127.0.0.1:5070",
            120,
            3600,
            {
                "username": "alice",
                "realm": "pbx.test",
                "cnonce": "6b8b4567",
                "nc": "00000001",
                "qop": "auth",
                "uri": "sip:pbx.test",
                "nonce": "AAAA-b_c=",
                "response": "0123456789abcdef",
                "algorithm": "MD5",
            },
            "SIPp v3.6",
            [
                ("Via", LINES[1][5:]),
                ("From", LINES[2][6:]),
                ("To", LINES[3][4:]),
                ("Call-ID", LINES[4][9:]),
                ("CSeq", LINES[5][6:]),
            ],
        )

    def test_digest_parameters(self, scan: Scanner) -> None:
        lines = list(LINES)
        lines[7] = 'Authorization: Digest a="",b=x=y\\,c="q, r",d=1'
        fields = scan(wire(lines))
        assert fields is not None
        assert fields[11] == {"a": "", "b": "x=y\\", "c": "q, r", "d": "1"}

    def test_minimal_register(self, scan: Scanner) -> None:
        lines = [LINES[0], "To: <sip:b@h>", "From: <sip:b@h>;tag=t", "CSeq: 1 REGISTER"]
        lines += ["Contact: <sip:b@h>", "Call-ID: c", "Via: SIP/2.0/UDP h;branch=z9hG4bKx"]
        fields = scan(wire(lines))
        assert fields is not None
        assert fields[:4] == ("z9hG4bKx", "h", None, False)
        assert fields[9:13] == (None, None, None, None)
        assert [name for name, _ in fields[13]] == ["To", "From", "CSeq", "Call-ID", "Via"]

    @pytest.mark.parametrize(
        ("index", "line"),
        [
            (0, "REGISTER sip:pbx.test SIP/2.1"),
            (0, "INVITE sip:pbx.test SIP/2.0"),
            (0, "REGISTER sip:-pbx.test SIP/2.0"),
            (1, "v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1"),
            (1, "via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1"),
            (1, "Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-1"),
            (1, "Via: SIP/2.0/UDP 127.0.0.1:70000;branch=z9hG4bK-1"),
            (1, "Via: SIP/2.0/UDP 127.0.0.1:0;branch=z9hG4bK-1"),
            (1, "Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK"),
            (1, "Via: SIP/2.0/UDP 127.0.0.1;branch=1234"),
            (1, "Via: SIP/2.0/UDP 127.0.0.1;rport;branch=z9hG4bK1"),
            (1, "Via: SIP/2.0/UDP [::1];branch=z9hG4bK1"),
            (1, "Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1, SIP/2.0/UDP h;branch=z9hG4bK2"),
            (2, "From: <sip:alice@pbx.test>"),
            (2, 'From: "A" <sip:alice@pbx.test>;tag=1'),
            (3, "To: <sip:alice@pbx.test>;tag=1"),
            (3, "To: <sip:al%41ice@pbx.test>"),
            (3, "To: <sips:alice@pbx.test>"),
            (3, "To: <sip:pbx.test>"),
            (4, "Call-ID: a b"),
            (4, "Call-ID: a@b@c"),
            (5, "CSeq: 2 INVITE"),
            (5, "CSeq: 1234567890 REGISTER"),
            (6, "Contact: *"),
            (6, "Contact: <sip:alice@127.0.0.1:65536>"),
            (6, "Contact: <sip:alice@127.0.0.1:5070>;q=0.5"),
            (6, "Contact: <sip:alice@127.0.0.1:5070;transport=udp>"),
            (6, "Contact: <sip:alice@127.0.0.1:5070>, <sip:alice@10.0.0.1>"),
            (7, "Authorization: Basic YWxpY2U6c2VjcmV0"),
            (7, 'Authorization: Digest username="a\\"b",realm="pbx.test"'),
            (7, "Authorization: Digest username = alice"),
            (7, "Authorization: Digest username=alice,,realm=x"),
            (7, "Authorization: Digest nc=1, nc=2"),
            (7, "Authorization: Digest nc=1 ,cnonce=2"),
            (8, "Max-Forwards: 256"),
            (9, "Expires: -1"),
            (10, "User-Agent: trailing "),
            (10, "User-Agent:no-space"),
            (10, "User-Agent: caf\u00e9"),
            (11, "Require: gruu"),
            (12, "Route: <sip:proxy>"),
            (13, "Content-Length: 5"),
            (13, "Content-Length:  0"),
            (13, " Content-Length: 0"),
            (13, "Content-Length: 0\tx"),
        ],
    )
    def test_declines(self, scan: Scanner, index: int, line: str) -> None:
        lines = list(LINES)
        lines[index] = line
        assert scan(wire(lines)) is None

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"\r\n\r\n",
            wire(LINES)[:-2],  # no empty line
            wire(LINES) + b"body",
            wire([*LINES, LINES[4]]),  # Call-ID twice
            wire(LINES[:3] + LINES[4:]),  # no To
            wire(LINES).replace(b"\r\nFrom", b"\nFrom"),
            wire(LINES).replace(b"\r\nFrom", b"\r\n From"),  # folded
            wire(LINES).replace(b"Supported: path", b"Supported: " + b"x" * 4096),
        ],
    )
    def test_declines_framing(self, scan: Scanner, data: bytes) -> None:
        assert scan(data) is None


@settings(max_examples=500, deadline=None)
@given(
    position=st.integers(0, len(wire(LINES))),
    cut=st.integers(0, 3),
    insert=st.sampled_from(
        [b"", b" ", b"\r", b"\n", b"\r\n", b":", b";", b",", b'"', b"\\", b"@", b"<", b">",
         b"0", b"9", b"a", b"Z", b"-", b"\x00", b"\x7f", b"\xc3\xa9", b"=", b"\t"]
    ),
)  # fmt: skip
def test_native_matches_reference_on_mutations(position: int, cut: int, insert: bytes) -> None:
    data = wire(LINES)
    mutated = data[:position] + insert + data[position + cut :]
    assert native.scan_register(mutated) == reference.scan_register(mutated)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_native_matches_reference_on_random_bytes(data: bytes) -> None:
    assert native.scan_register(data) == reference.scan_register(data)


_VALUE = st.text(alphabet=st.sampled_from("abz09-._~@:;<>\"=, \\/%!*+`'"), max_size=12)


@settings(max_examples=500, deadline=None)
@given(line=st.integers(0, len(LINES) - 1), head=_VALUE, tail=_VALUE, keep=st.integers(0, 80))
def test_native_matches_reference_on_edited_values(
    line: int, head: str, tail: str, keep: int
) -> None:
    lines = list(LINES)
    name, sep, value = lines[line].partition(": ")
    lines[line] = f"{name}{sep}{head}{value[:keep]}{tail}"
    data = wire(lines)
    assert native.scan_register(data) == reference.scan_register(data)


def test_none_is_refused() -> None:
    with pytest.raises(TypeError):
        native.scan_register(None)  # type: ignore[arg-type]


CrlfFinder = Callable[[bytes, int, int, int], int]


@pytest.fixture(params=[native.nth_crlf, reference.nth_crlf], ids=["native", "ref"])
def nth_crlf(request: pytest.FixtureRequest) -> CrlfFinder:
    return request.param  # type: ignore[no-any-return]


def nth_crlf_by_split(data: bytes, start: int, end: int, n: int) -> int:
    # the obvious definition, for the comparison
    positions = [m.start() for m in re.finditer(b"\r\n", data[:end])]
    positions = [p for p in positions if p >= start]
    return positions[n - 1] if len(positions) >= n else -1


class TestNthCrlf:
    def test_offsets_in_the_range(self, nth_crlf: CrlfFinder) -> None:
        data = b"A\r\nB\r\n\r\nbody\r\n"
        assert [nth_crlf(data, 0, len(data), n) for n in (1, 2, 3, 4, 5)] == [1, 4, 6, 12, -1]
        assert nth_crlf(data, 1, 3, 1) == 1  # the CRLF at 1..2 is inside
        assert nth_crlf(data, 2, 10, 1) == 4  # the LF at 2 has its CR outside
        assert nth_crlf(data, 0, 2, 1) == -1  # the CR at 1 has its LF outside
        assert nth_crlf(data, 5, 3, 1) == -1
        assert nth_crlf(data, 0, -1, 1) == -1  # not "all but the last octet"
        assert nth_crlf(data, 0, 10_000, 4) == 12  # end is clamped
        assert nth_crlf(data, 100, 200, 1) == -1
        assert nth_crlf(b"a\nb\rc\n\r", 0, 8, 1) == -1  # bare LF and CR do not count

    def test_stops_at_the_nth_line(self, nth_crlf: CrlfFinder) -> None:
        data = b"X: y\r\n" * 7638
        assert nth_crlf(data, 0, len(data), 257) == 257 * 6 - 2
        assert nth_crlf(data, 0, len(data), 7639) == -1

    def test_bad_arguments(self, nth_crlf: CrlfFinder) -> None:
        with pytest.raises(ValueError, match="negative"):
            nth_crlf(b"a\r\n", -1, 3, 1)
        with pytest.raises(ValueError, match="positive"):
            nth_crlf(b"a\r\n", 0, 3, 0)
        with pytest.raises(TypeError):
            nth_crlf(None, 0, 3, 1)  # type: ignore[arg-type]

    @settings(max_examples=300, deadline=None)
    @given(
        st.binary(max_size=64).map(lambda b: b.replace(b"x", b"\r\n")),
        st.integers(0, 70),
        st.integers(-5, 70),
        st.integers(1, 8),
    )
    def test_native_agrees_with_reference(self, data: bytes, start: int, end: int, n: int) -> None:
        expected = nth_crlf_by_split(data, start, end, n) if end > start else -1
        assert native.nth_crlf(data, start, end, n) == expected
        assert reference.nth_crlf(data, start, end, n) == expected


# -- split_headers: the general parser's header block splitter ------------------------------

Splitter = Callable[
    [bytes, int, int, int], tuple[str, list[tuple[str, str, str]], list[str]] | None
]


@pytest.fixture(params=[native.split_headers, reference.split_headers], ids=["native", "ref"])
def split(request: pytest.FixtureRequest) -> Splitter:
    return request.param  # type: ignore[no-any-return]


def block(data: bytes) -> tuple[bytes, int, int]:
    return data, 0, data.find(b"\r\n\r\n")


class TestSplitHeaders:
    def test_triples(self, split: Splitter) -> None:
        data = (
            b"INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nv : SIP/2.0/TCP x"
            b"\r\nCALL-id:  a@b \t\r\nX-Custom:\r\nm:<sip:c@d>\r\n\r\nbody"
        )
        assert split(*block(data), 8192) == (
            "INVITE sip:b@h SIP/2.0",
            [
                ("Via", "via", "SIP/2.0/UDP h;branch=z9hG4bK1"),
                ("v", "via", "SIP/2.0/TCP x"),
                ("CALL-id", "call-id", "a@b"),
                ("X-Custom", "x-custom", ""),
                ("m", "contact", "<sip:c@d>"),
            ],
            [],
        )

    def test_folding_keeps_the_continuation_whitespace(self, split: Splitter) -> None:
        data = (
            b"OPTIONS sip:h SIP/2.0\r\nSubject: a\r\n  b \r\n\tc\r\nX-Y:\r\n  d\r\n"
            b"l: 1\r\n 2\r\nContent-Length: 3\r\n\r\n"
        )
        assert split(*block(data), 8192) == (
            "OPTIONS sip:h SIP/2.0",
            [
                ("Subject", "subject", "a  b\tc"),
                ("X-Y", "x-y", "d"),
                ("l", "content-length", "1 2"),
                ("Content-Length", "content-length", "3"),
            ],
            ["1 2", "3"],
        )

    def test_utf8_and_bad_octets_decode_as_the_whole_block_would(self, split: Splitter) -> None:
        data = "MESSAGE sip:h SIP/2.0\r\nSubject: café \xff\r\n\r\n".encode(
            "utf-8", "surrogateescape"
        )
        head = data[: data.find(b"\r\n\r\n")].decode("utf-8", "surrogateescape")
        assert split(*block(data), 8192) == (
            "MESSAGE sip:h SIP/2.0",
            [("Subject", "subject", head.split(": ", 1)[1].strip())],
            [],
        )

    @pytest.mark.parametrize(
        "data",
        [
            b"A\r\nB: c\rd\r\n\r\n",  # bare CR
            b"A\r\nB: c\nd\r\n\r\n",  # bare LF
            b"A\nB: c\r\n\r\n",
            b"A\r\n x\r\n\r\n",  # continuation with nothing to continue
            b"A\r\nB: c\r\n \t\r\n\r\n",  # continuation with nothing in it
            b"A\r\nno colon\r\n\r\n",
            b"A\r\n: empty name\r\n\r\n",
            b"A\r\nB@d: c\r\n\r\n",  # not a token
            b"A\r\nB C: d\r\n\r\n",
            b"A\r\nX-\xc3\xa9: d\r\n\r\n",
            b"A\r\nB: " + b"x" * 30 + b"\r\n\r\n",  # over max_line (32)
            b"A" * 33 + b"\r\nB: c\r\n\r\n",
        ],
    )
    def test_declines(self, split: Splitter, data: bytes) -> None:
        assert split(*block(data), 32) is None

    def test_limits_are_inclusive_and_arguments_checked(self, split: Splitter) -> None:
        data = b"A\r\nB: " + b"x" * 29 + b"\r\n\r\n"  # a 32-octet line
        assert split(*block(data), 32) == ("A", [("B", "referred-by", "x" * 29)], [])
        assert split(data, 3, len(data) - 4, 32) == ("B: " + "x" * 29, [], [])
        with pytest.raises(ValueError):
            split(data, 0, len(data) - 1, 32)
        with pytest.raises(ValueError):
            split(data, -1, 3, 32)

    def test_none_is_refused(self) -> None:
        with pytest.raises(TypeError):
            native.split_headers(None, 0, 0, 1)  # type: ignore[arg-type]

    def test_compact_forms_are_the_parsers(self) -> None:
        assert reference.COMPACT == COMPACT_FORMS


_NAMES = st.sampled_from(
    ["Via", "v", "From", "f", "To", "t", "Call-ID", "call-id", "CSeq", "Contact", "m", "l",
     "Content-Length", "X-A", "x", "Subject", "Record-Route", "a.b!%*_+`'~", "V", "Cseq",
     "\xe9", "B C", "", " Via"]
)  # fmt: skip
_LINE_VALUES = st.lists(
    st.sampled_from([*'ab :;<>"=,\t\\\xe9\udcff@\r\n', "\r\n"]), max_size=10
).map("".join)
_FIELD = st.tuples(_NAMES, st.sampled_from([": ", ":", " : ", "\t:", ""]), _LINE_VALUES).map(
    "".join
)
_LINES = st.lists(
    st.one_of(_FIELD, _LINE_VALUES.map(lambda v: " " + v), _LINE_VALUES.map(lambda v: "\t" + v)),
    max_size=8,
)


@settings(max_examples=600, deadline=None)
@given(first=_LINE_VALUES, lines=_LINES, max_line=st.integers(1, 30))
def test_split_headers_native_matches_reference_and_the_general_loop(
    first: str, lines: list[str], max_line: int
) -> None:
    data = "\r\n".join([first, *lines]).encode("utf-8", "surrogateescape") + b"\r\n\r\n"
    end = data.find(b"\r\n\r\n")
    got = native.split_headers(data, 0, end, max_line)
    assert got == reference.split_headers(data, 0, end, max_line)
    try:
        general = _split_general(data, 0, end, ParseLimits(max_line_length=max_line), 400)
    except SipParseError:
        assert got is None  # the general loop explains the error
    else:
        assert got is None or got == (
            *general,
            [v for _, k, v in general[1] if k == "content-length"],
        )


# -- parse_via, parse_name_addr: the common shapes of the header fast paths ---------------

ViaParser = Callable[[str], tuple[str, str, int | None, dict[str, str | None]] | None]
NameAddrParser = Callable[[str], reference.NameAddr | None]


@pytest.fixture(params=[native.parse_via, reference.parse_via], ids=["native", "ref"])
def parse_via(request: pytest.FixtureRequest) -> ViaParser:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=[native.parse_name_addr, reference.parse_name_addr], ids=["native", "ref"])
def parse_name_addr(request: pytest.FixtureRequest) -> NameAddrParser:
    return request.param  # type: ignore[no-any-return]


class TestShapes:
    def test_via(self, parse_via: ViaParser) -> None:
        assert parse_via("SIP/2.0/UDP pc33.example.com:5060;branch=z9hG4bK7;rport;x=1;x=2") == (
            "UDP",
            "pc33.example.com",
            5060,
            {"branch": "z9hG4bK7", "rport": None, "x": "2"},
        )
        assert parse_via("SIP/2.0/TLS _h;received=[2001:db8::1]") == (
            "TLS",
            "_h",
            None,
            {"received": "[2001:db8::1]"},
        )

    @pytest.mark.parametrize(
        "text",
        [
            "SIP/2.0/udp h",  # lower-case transport
            "SIP/2.0/UDP [::1]",
            "SIP/2.0/UDP h:65536",
            "SIP/2.0/UDP h:123456",
            "SIP/2.0/UDP h:",
            "SIP/2.0/UDP h ;branch=z9hG4bK1",
            "SIP/2.0/UDP h;branch=",
            'SIP/2.0/UDP h;x="q"',
            "SIP/2.0/UDP h;",
            "SIP/2.0/UDP h, SIP/2.0/UDP g",
            "SIP/2.0/UDP -h",
            "SIP / 2.0 / UDP h",
            "SIP/2.0/UDP hé",
            "",
        ],
    )
    def test_via_declines(self, parse_via: ViaParser, text: str) -> None:
        assert parse_via(text) is None

    def test_name_addr(self, parse_name_addr: NameAddrParser) -> None:
        assert parse_name_addr(' \t"A b" \t<sips:u%41:p=w@h.x:5061;lr;t=;m=a:b/c>;tag=1;q') == (
            "A b",
            "sips",
            "u%41",
            "p=w",
            "h.x",
            5061,
            {"lr": None, "t": "", "m": "a:b/c"},
            {"tag": "1", "q": None},
        )
        assert parse_name_addr("<sip:h:5060>") == (None, "sip", None, None, "h", 5060, {}, {})
        assert parse_name_addr('""<sip:a:@h>') == ("", "sip", "a", "", "h", None, {}, {})

    @pytest.mark.parametrize(
        "text",
        [
            "sip:a@h",  # addr-spec
            "Alice <sip:a@h>",  # unquoted display name
            '"A\\"" <sip:a@h>',
            '"A <sip:a@h>',
            "<SIP:a@h>",
            "<tel:123>",
            "<sip:a@[::1]>",
            "<sip:a@h:65536>",
            "<sip:a:b:c@h>",
            "<sip:@h>",
            "<sip:a@h?x=y>",
            "<sip:a@h;=x>",
            "<sip:a@h;a=b=c>",
            "<sip:a@h>;tag=",
            "<sip:a@h> ;tag=1",
            '<sip:a@h>;x="q"',
            "<sip:a@h>, <sip:b@h>",
            "<sip:a@h",
            "<sip:a@hé>",
            "",
        ],
    )
    def test_name_addr_declines(self, parse_name_addr: NameAddrParser, text: str) -> None:
        assert parse_name_addr(text) is None

    def test_none_is_refused(self) -> None:
        with pytest.raises(TypeError):
            native.parse_via(None)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            native.parse_name_addr(None)  # type: ignore[arg-type]


_SHAPE_TEXT = st.lists(
    st.sampled_from(
        ["SIP/2.0/", "UDP", "udp", " ", "\t", "h", "-", "_", "é", ":", "5060", "99999", "0",
         ";", "=", "branch", "z9hG4bK", "[::1]", '"', "\\", "<", ">", "sip:", "sips:", "@",
         "a", "%41", "&", "?", ",", "/", "\x00", "\x7f"]
    ),
    max_size=14,
).map("".join)  # fmt: skip


@settings(max_examples=1000, deadline=None)
@given(_SHAPE_TEXT)
def test_shapes_native_match_reference(text: str) -> None:
    assert native.parse_via(text) == reference.parse_via(text)
    assert native.parse_name_addr(text) == reference.parse_name_addr(text)
    assert native.parse_via(f"SIP/2.0/UDP {text}") == reference.parse_via(f"SIP/2.0/UDP {text}")
    for wrapped in (f"<sip:{text}", f'"{text}" <sip:a@h>;{text}', f"<sip:a@h;{text}>"):
        assert native.parse_name_addr(wrapped) == reference.parse_name_addr(wrapped)


# -- serialize ------------------------------------------------------------------------------

Serializer = Callable[[str, list[tuple[str, str, str]], bytes], bytes | None]


@pytest.fixture(params=[native.serialize, reference.serialize], ids=["native", "ref"])
def serialize(request: pytest.FixtureRequest) -> Serializer:
    return request.param  # type: ignore[no-any-return]


class TestSerialize:
    def test_content_length_where_the_first_was(self, serialize: Serializer) -> None:
        items = [("Via", "via", "x"), ("l", "content-length", "99"), ("To", "to", "")]
        items.append(("Content-Length", "content-length", "7"))
        assert serialize("A B C", items, b"body") == (
            b"A B C\r\nVia: x\r\nl: 4\r\nTo: \r\n\r\nbody"
        )
        assert serialize("A", [("X", "x", "1")], b"") == b"A\r\nX: 1\r\nContent-Length: 0\r\n\r\n"
        assert serialize("A", [], b"\x00" * 1234) == (
            b"A\r\nContent-Length: 1234\r\n\r\n" + b"\x00" * 1234
        )

    def test_declines_non_ascii(self, serialize: Serializer) -> None:
        assert serialize("A é", [], b"") is None
        assert serialize("A", [("X", "x", "\udcff")], b"") is None

    def test_bad_arguments(self) -> None:
        with pytest.raises(TypeError):
            native.serialize("A", [("X", "x", 1)], b"")  # type: ignore[list-item]
        with pytest.raises(TypeError):
            native.serialize("A", [["X", "x", "1"]], b"")  # type: ignore[list-item]
        with pytest.raises(TypeError):
            native.serialize(None, [], b"")  # type: ignore[arg-type]


_SER_TEXT = st.text(alphabet="aZ: ;\t,é", max_size=6)


@settings(max_examples=500, deadline=None)
@given(
    start=_SER_TEXT,
    items=st.lists(
        st.tuples(_SER_TEXT, st.sampled_from(["via", "content-length", "x"]), _SER_TEXT),
        max_size=6,
    ),
    body=st.binary(max_size=300),
)
def test_serialize_native_matches_reference(
    start: str, items: list[tuple[str, str, str]], body: bytes
) -> None:
    assert native.serialize(start, items, body) == reference.serialize(start, items, body)


@pytest.mark.parametrize("first_value", [native.first_value, reference.first_value])
def test_first_value(first_value: Callable[[list[tuple[str, str, str]], str], str | None]) -> None:
    items = [("Via", "via", "a"), ("v", "via", "b"), ("To", "to", "")]
    assert first_value(items, "via") == "a"
    assert first_value(items, "to") == ""
    assert first_value(items, "from") is None
    assert first_value([], "via") is None
    with pytest.raises(TypeError):
        native.first_value([["x", "x", "x"]], "x")  # type: ignore[list-item]


@pytest.mark.parametrize("all_values", [native.all_values, reference.all_values])
def test_all_values(all_values: Callable[[list[tuple[str, str, str]], str], list[str]]) -> None:
    items = [("Via", "via", "a"), ("To", "to", ""), ("v", "via", "b")]
    assert all_values(items, "via") == ["a", "b"]
    assert all_values(items, "to") == [""]
    assert all_values(items, "from") == []
    with pytest.raises(TypeError):
        native.all_values([["x", "x", "x"]], "x")  # type: ignore[list-item]


@pytest.mark.parametrize("parse_cseq", [native.parse_cseq, reference.parse_cseq])
def test_parse_cseq(parse_cseq: Callable[[str], tuple[int, str] | None]) -> None:
    assert parse_cseq("314159 INVITE") == (314159, "INVITE")
    assert parse_cseq("0002147483647 x") is None  # 13 digits: the general parser
    assert parse_cseq("2147483647 FOO-bar") == (2**31 - 1, "FOO-bar")
    for text in ["2147483648 A", "1  A", " 1 A", "1 A ", "1\tA", "A", "1 ", "", "1 é", "1 A;"]:
        assert parse_cseq(text) is None


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="0129 \tAa-;é", max_size=14))
def test_parse_cseq_native_matches_reference_and_the_parser(text: str) -> None:
    got = native.parse_cseq(text)
    assert got == reference.parse_cseq(text)
    if got is not None:
        assert got == _parse_cseq_general(text)


def _parse_cseq_general(text: str) -> tuple[int, str]:
    m = re.fullmatch(r"[ \t]*([0-9]+)[ \t]+([A-Za-z0-9.!%*_+`'~-]+)[ \t]*", text)
    assert m is not None
    return int(m[1]), m[2]
