"""pbxcore.sip.message: framing, parsing, serialization, UAS checks, make_response."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pbxcore.sip.message as message_mod
from pbxcore.sip import (
    DEFAULT_LIMITS,
    Address,
    Headers,
    ParseLimits,
    Request,
    Response,
    SipParseError,
    Uri,
    Via,
    make_response,
    message_length,
    parse_message,
    validate_request,
    validate_response,
)
from pbxcore.sip.headers import header_key
from tests.helpers import TESTDATA

SDP = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\n"
    b"c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)


def invite(body: bytes = SDP, *, extra: bytes = b"", length: bytes | None = None) -> bytes:
    cl = str(len(body)).encode() if length is None else length
    return (
        b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n"
        b"Max-Forwards: 70\r\n"
        b'To: "Bob" <sip:bob@biloxi.example.com>\r\n'
        b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
        b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
        b"Content-Type: application/sdp\r\n" + extra + b"Content-Length: " + cl + b"\r\n\r\n" + body
    )


REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKnashds7\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:100@example.com>\r\n"
    b"From: <sip:100@example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b"Contact: <sip:100@192.0.2.4>;expires=300, <sip:100@[2001:db8::4]>;q=0.5\r\n"
    b"Expires: 7200\r\n"
    b"Content-Length: 0\r\n\r\n"
)

RESPONSE = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n"
    b"To: <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    b"From: <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def parse_request(data: bytes, **kw: object) -> Request:
    message = parse_message(data, **kw)  # type: ignore[arg-type]
    assert isinstance(message, Request)
    return message


def error_of(data: bytes, **kw: object) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data, **kw)  # type: ignore[arg-type]
    return info.value


class TestParseRequest:
    def test_fields(self) -> None:
        r = parse_request(invite())
        assert r.method == "INVITE" and r.version == "SIP/2.0"
        assert r.uri == Uri.parse("sip:bob@biloxi.example.com")
        assert r.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
        assert r.cseq == (314159, "INVITE")
        assert r.from_.display_name == "Alice" and r.from_.tag == "1928301774"
        assert r.to.display_name == "Bob" and r.to.tag is None
        assert r.max_forwards == 70
        assert r.top_via.branch == "z9hG4bK776asdhds" and r.top_via.rport_requested
        assert [v.host for v in r.via] == ["pc33.atlanta.example.com"]
        assert r.contact == [Address.parse("<sip:alice@pc33.atlanta.example.com>")]
        assert r.content_type == "application/sdp"
        assert r.content_length == len(SDP) and r.body == SDP
        assert r.expires is None and r.route == [] and r.record_route == []
        assert r.require == [] and r.supported == [] and r.proxy_require == []
        validate_request(r)

    def test_register_contacts(self) -> None:
        r = parse_request(REGISTER)
        assert [c.uri.host for c in r.contact] == ["192.0.2.4", "2001:db8::4"]
        assert [c.expires for c in r.contact] == [300, None]
        assert [c.q for c in r.contact] == [None, 0.5]
        assert r.expires == 7200 and not r.contact_is_wildcard
        validate_request(r, schemes=("sip", "sips"))

    def test_wildcard_contact(self) -> None:
        r = parse_request(
            REGISTER.replace(
                b"Contact: <sip:100@192.0.2.4>;expires=300, ", b"Contact: *\r\nX: "
            ).replace(b"Expires: 7200", b"Expires: 0")
        )
        assert r.contact_is_wildcard and r.contact == [] and r.expires == 0
        bad = parse_request(REGISTER.replace(b"Expires: 7200", b"Contact: *"))
        with pytest.raises(SipParseError):
            bad.contact  # noqa: B018

    def test_leading_crlf_is_ignored(self) -> None:
        assert parse_request(b"\r\n\r\n" + invite()).method == "INVITE"

    def test_compact_forms_and_folding(self) -> None:
        data = (
            b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
            b"f: <sip:c@d>;tag=1\r\nt: <sip:a@b>\r\ni: abc\r\nCSeq: 1\r\n  OPTIONS\r\n"
            b"Subject: one\r\n\ttwo\r\nl: 0\r\n\r\n"
        )
        r = parse_request(data)
        assert r.call_id == "abc" and r.cseq == (1, "OPTIONS")
        assert r.headers.get("subject") == "one\ttwo"
        validate_request(r)

    def test_unknown_headers_pass_through_untouched(self) -> None:
        extra = b'X-Weird:   a;;b,,"c, d" <e>  \r\nP-Asserted-Identity: <sip:x@y>, <tel:+1>\r\n'
        r = parse_request(invite(extra=extra))
        assert r.headers.get("x-weird") == 'a;;b,,"c, d" <e>'
        assert b'X-Weird: a;;b,,"c, d" <e>\r\n' in bytes(r)
        assert r.headers.get_all("p-asserted-identity") == ["<sip:x@y>", "<tel:+1>"]

    def test_caches_follow_header_changes(self) -> None:
        r = parse_request(invite())
        assert r.cseq == (314159, "INVITE")
        r.headers.set("CSeq", "2 INVITE")
        assert r.cseq == (2, "INVITE")

    def test_missing_header_accessors_raise(self) -> None:
        r = Request("OPTIONS", "sip:a@b")
        for attr in ("call_id", "cseq", "from_", "to", "top_via"):
            with pytest.raises(SipParseError):
                getattr(r, attr)
        assert r.via == [] and r.contact == [] and r.max_forwards is None

    @pytest.mark.parametrize(
        ("header", "value", "expected"),
        [
            # 1*DIGIT (RFC 3261 §25.1): leading zeros are digits like any other
            ("Max-Forwards", "0068", 68),
            # the range is 0-255 (§20.22); above it counts as 255, the most hops a request
            # can have been granted (RFC 4475 §3.1.2.4 also allows treating it as absent)
            ("Max-Forwards", "256", 255),
            ("Max-Forwards", "9" * 5000, 255),
            # §10.2.1: values larger than 2**32-1 MAY be treated as 2**32-1
            ("Expires", "9" * 5000, 2**32 - 1),
            # CSeq = 1*DIGIT LWS Method (§20.16): 5, below the 2**31 limit (§8.1.1.5)
            ("CSeq", "0" * 20 + "5 OPTIONS", (5, "OPTIONS")),
        ],
    )
    def test_scalar_edges(self, header: str, value: str, expected: object) -> None:
        r = Request("OPTIONS", "sip:a@b", [(header, value)])
        got = {
            "Max-Forwards": lambda: r.max_forwards,
            "Expires": lambda: r.expires,
            "CSeq": lambda: r.cseq,
        }[header]()
        assert got == expected

    @pytest.mark.parametrize(
        ("header", "value"),
        [
            ("Max-Forwards", "-1"),
            ("Expires", "soon"),
            ("CSeq", "1"),
            ("CSeq", "x INVITE"),
            ("CSeq", "9" * 5000 + " OPTIONS"),
            ("CSeq", "2147483648 OPTIONS"),
            ("Call-ID", "a b"),
            ("Content-Length", "x"),
        ],
    )
    def test_bad_scalars(self, header: str, value: str) -> None:
        r = Request("OPTIONS", "sip:a@b", [(header, value)])
        with pytest.raises(SipParseError) as info:
            {
                "Max-Forwards": lambda: r.max_forwards,
                "Expires": lambda: r.expires,
                "CSeq": lambda: r.cseq,
                "Call-ID": lambda: r.call_id,
                "Content-Length": lambda: r.content_length,
            }[header]()
        assert info.value.status == 400


class TestFraming:
    def test_datagram_ignores_octets_beyond_content_length(self) -> None:
        r = parse_request(invite() + b"garbage")
        assert r.body == SDP

    def test_datagram_without_content_length_takes_the_rest(self) -> None:
        data = invite().replace(b"Content-Length: %d\r\n" % len(SDP), b"")
        assert parse_request(data).body == SDP

    def test_datagram_shorter_than_content_length(self) -> None:
        assert error_of(invite(length=b"9999")).status == 400

    def test_stream_requires_content_length(self) -> None:
        data = invite().replace(b"Content-Length: %d\r\n" % len(SDP), b"")
        assert error_of(data, stream=True).status == 400
        assert parse_request(invite(), stream=True).body == SDP
        assert error_of(invite() + b"x", stream=True).status == 400

    @pytest.mark.parametrize("value", [b"-1", b"+5", b"1.0", b"0x10", b"", b"99999999999"])
    def test_bad_content_length(self, value: bytes) -> None:
        err = error_of(invite(length=value))
        assert err.status in (400, 513)

    def test_duplicate_content_length(self) -> None:
        assert error_of(invite(extra=b"l: 5\r\n")).status == 400

    def test_message_length(self) -> None:
        data = invite()
        assert message_length(data) == len(data)
        assert message_length(data + REGISTER) == len(data)
        assert message_length(b"\r\n\r\n" + data) == len(data) + 4
        assert message_length(data[:-1]) is None
        assert message_length(data[:40]) is None
        assert message_length(bytearray(data)) == len(data)
        with pytest.raises(SipParseError):
            message_length(data.replace(b"Content-Length: ", b"X-Length: "))
        with pytest.raises(SipParseError):
            message_length(invite(length=b"-1"))
        with pytest.raises(SipParseError) as info:
            message_length(invite(length=b"70000"))
        assert info.value.status == 513
        with pytest.raises(SipParseError) as info:
            message_length(b"X" * 70000)
        assert info.value.status == 513

    def test_stream_of_messages(self) -> None:
        buffer = invite() + REGISTER + invite()[:50]
        seen = []
        while (n := message_length(buffer)) is not None:
            seen.append(parse_message(buffer[:n], stream=True))
            buffer = buffer[n:]
        assert [m.method for m in seen if isinstance(m, Request)] == ["INVITE", "REGISTER"]
        assert buffer == invite()[:50]


class TestMalformed:
    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"\r\n\r\n",
            b"INVITE sip:a@b SIP/2.0\r\n",
            b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n",
            b"INVITE sip:a@b SIP/2.0\r\nVia x\r\n\r\n",
            b"INVITE sip:a@b SIP/2.0\r\n: x\r\n\r\n",
            b"INVITE sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
            b"INVITE sip:a@b SIP/2.0\r\n continued: x\r\n\r\n",
            b"INVITE sip:a@b SIP/2.0\r\nA: b\nC: d\r\n\r\n",
            b"INVITE sip:a@b SIP/2.0\r\nA: b\rC: d\r\n\r\n",
            b"INVITE  sip:a@b SIP/2.0\r\n\r\n",
            b"INVITE sip:a@b SIP/2.0 \r\n\r\n",
            b"INVITE sip:a@b\r\n\r\n",
            b"INV(TE sip:a@b SIP/2.0\r\n\r\n",
            b"INVITE <sip:a@b> SIP/2.0\r\n\r\n",
            b"INVITE sip:a@b HTTP/1.1\r\n\r\n",
            b"INVITE sip:a@b SIP/2\r\n\r\n",
        ],
    )
    def test_bad_request_framing(self, data: bytes) -> None:
        err = error_of(data)
        assert err.status in (400, None)
        assert err.reason

    def test_unsupported_version(self) -> None:
        assert error_of(b"OPTIONS sip:a@b SIP/3.0\r\n\r\n").status == 505

    @pytest.mark.parametrize(
        "line",
        [
            b"SIP/2.0 99 Low",
            b"SIP/2.0 700 High",
            b"SIP/2.0 2000 OK",
            b"SIP/2.0 20x OK",
            b"SIP/2.0 200",
            b"SIP/3.0 200 OK",
        ],
    )
    def test_bad_responses_are_dropped(self, line: bytes) -> None:
        assert error_of(line + RESPONSE[RESPONSE.index(b"\r\n") :]).status is None

    def test_non_bytes(self) -> None:
        with pytest.raises(SipParseError):
            parse_message("INVITE sip:a@b SIP/2.0\r\n\r\n")  # type: ignore[arg-type]

    def test_bytearray_and_memoryview_are_accepted(self) -> None:
        assert parse_message(bytearray(invite())) == parse_message(memoryview(invite()))


class TestLimits:
    def test_message_size(self) -> None:
        err = error_of(invite(), limits=ParseLimits(max_message_size=100))
        assert err.status == 513 and "limit" in err.reason

    def test_header_count(self) -> None:
        extra = b"".join(b"X-%d: y\r\n" % i for i in range(300))
        err = error_of(invite(extra=extra))
        assert err.status == 400 and "header field lines" in err.reason
        assert parse_request(invite(extra=extra), limits=ParseLimits(max_headers=400))

    def test_line_length(self) -> None:
        extra = b"X-Long: " + b"a" * 9000 + b"\r\n"
        err = error_of(invite(extra=extra))
        assert err.status == 400 and "characters" in err.reason
        ok = parse_request(invite(extra=extra), limits=ParseLimits(max_line_length=10000))
        assert len(ok.headers.get("x-long") or "") == 9000

    def test_header_flood_is_refused_before_the_lines_are_parsed(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # the hostile peer: 7,638 header lines in one 60 kB datagram / stream message
        flood = b"X: y\r\n" * 7638
        assert 45_000 < len(invite(extra=flood)) < DEFAULT_LIMITS.max_message_size
        assert message_mod.MAX_HEADER_LINES == DEFAULT_LIMITS.max_headers == 256
        looked_up: list[str] = []

        class CountingKeys(dict[str, str]):
            def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
                looked_up.append(key)
                return super().get(key, default)

        def counting_header_key(name: str) -> str:
            looked_up.append(name)
            return header_key(name)

        monkeypatch.setattr(message_mod, "_NAME_KEYS", CountingKeys())
        monkeypatch.setattr(message_mod, "header_key", counting_header_key)
        err = error_of(invite(extra=flood))
        assert err.status == 400 and "more than 256 header field lines" in err.reason
        # unterminated, with garbage past the limit: the count decides before anything else
        head = invite(extra=flood).split(b"\r\n\r\n")[0]
        lines = head.split(b"\r\n")
        garbage = b"\r\n".join([*lines[:300], b"bare\nLF", b"\xff\xfe: x", b"no colon"])
        err = error_of(garbage + b"\r\n")
        assert err.status == 400 and "header field lines" in err.reason
        # the stream framer refuses it too, without waiting for the end of the block
        with pytest.raises(SipParseError, match="header field lines"):
            message_length(garbage + b"\r\n")
        with pytest.raises(SipParseError, match="header field lines"):
            message_length(invite(extra=flood))
        assert looked_up == []  # not one header line was looked at
        # exactly at the limit: parsed (the start line does not count, the limit is inclusive)
        at_limit = b"\r\n".join(lines[: 1 + 256]) + b"\r\n"
        assert message_length(at_limit) is None
        one_more = b"\r\n".join(lines[: 2 + 256]) + b"\r\n"
        with pytest.raises(SipParseError, match="header field lines"):
            message_length(one_more)

    def test_shortest_message_over_the_header_line_limit(self) -> None:
        # parse_message skips the line count for messages too short to hold 257 header
        # lines: the shortest that can (one-octet lines, one octet after them) is refused
        shortest = b"A\r\n" + b"x\r\n" * 256 + b"x"
        assert len(shortest) == 3 * (DEFAULT_LIMITS.max_headers + 1) + 1
        assert "more than 256 header field lines" in error_of(shortest).reason
        assert "more than" not in error_of(shortest[:-1]).reason
        err = error_of(b"A\r\n" + b"x\r\n" * 3, limits=ParseLimits(max_headers=2))
        assert "more than 2 header field lines" in err.reason

    def test_limits_apply_to_responses_as_drops(self) -> None:
        err = error_of(RESPONSE, limits=ParseLimits(max_headers=2))
        assert err.status is None


class TestResponse:
    def test_parse(self) -> None:
        r = parse_message(RESPONSE)
        assert isinstance(r, Response)
        assert (r.status, r.reason) == (180, "Ringing")
        assert r.top_via.received == "192.0.2.1"
        assert r.to.tag == "a6c85cf"
        validate_response(r)
        assert repr(r) == "<Response 180 Ringing>"

    def test_reason_with_spaces_and_default(self) -> None:
        r = parse_message(RESPONSE.replace(b"180 Ringing", b"486 Busy  Here "))
        assert isinstance(r, Response) and r.reason == "Busy  Here "
        assert Response(404).reason == "Not Found"
        assert Response(499).reason == ""
        with pytest.raises(ValueError):
            Response(700)
        with pytest.raises(ValueError):
            Response(200, "OK\r\nX: injected")

    def test_validate_response_drops(self) -> None:
        r = parse_message(RESPONSE.replace(b"CSeq: 314159 INVITE", b"CSeq: 99999999999 INVITE"))
        assert isinstance(r, Response)
        with pytest.raises(SipParseError) as info:
            validate_response(r)
        assert info.value.status is None
        r = parse_message(RESPONSE.replace(b"Call-ID: a84b4c76e66710\r\n", b""))
        assert isinstance(r, Response)
        with pytest.raises(SipParseError) as info:
            validate_response(r)
        assert info.value.status is None


class TestValidateRequest:
    def check(self, data: bytes, status: int | None, **kw: object) -> SipParseError:
        r = parse_request(data)
        with pytest.raises(SipParseError) as info:
            validate_request(r, **kw)  # type: ignore[arg-type]
        assert info.value.status == status, info.value
        return info.value

    @pytest.mark.parametrize("header", [b"Via", b"To", b"From", b"Call-ID", b"CSeq"])
    def test_missing_required(self, header: bytes) -> None:
        data = invite()
        start = data.index(b"\r\n" + header + b":") + 2
        end = data.index(b"\r\n", start) + 2
        err = self.check(data[:start] + data[end:], 400)
        assert "missing" in err.reason

    def test_missing_max_forwards_is_tolerated(self) -> None:
        validate_request(parse_request(invite().replace(b"Max-Forwards: 70\r\n", b"")))

    @pytest.mark.parametrize(
        "extra",
        [b"To: <sip:x@y>\r\n", b"i: other\r\n", b"CSeq: 1 INVITE\r\n", b"Max-Forwards: 1\r\n"],
    )
    def test_repeated_single_valued(self, extra: bytes) -> None:
        assert "multiple" in self.check(invite(extra=extra), 400).reason

    def test_cseq_method_mismatch(self) -> None:
        self.check(invite().replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"), 400)

    def test_cseq_overflow(self) -> None:
        self.check(invite().replace(b"CSeq: 314159", b"CSeq: 2147483648"), 400)
        data = invite().replace(b"CSeq: 314159", b"CSeq: 2147483647")
        validate_request(parse_request(data))

    def test_bad_via_from_contact(self) -> None:
        self.check(invite().replace(b"branch=z9hG4bK776asdhds;", b";;"), 400)
        self.check(invite().replace(b'"Alice" <sip', b'"Alice <sip'), 400)
        self.check(invite(extra=b"Route: <sip:a@b\r\n"), 400)

    def test_unknown_scheme(self) -> None:
        data = invite().replace(b"sip:bob@biloxi.example.com SIP", b"mailto:bob@example.com SIP")
        self.check(data, 416)
        self.check(
            invite().replace(b"INVITE sip:bob", b"INVITE tel:+1234;x=y SIP/2.0\r\nX: sip:bob"),
            416,
            schemes=("sip",),
        )

    def test_bad_request_uri(self) -> None:
        self.check(
            invite()
            .replace(b"sip:bob@biloxi.example.com SIP", b"sip:bob@bil oxi SIP")
            .replace(b"@bil oxi", b"@[bad"),
            400,
        )
        self.check(
            invite().replace(b"sip:bob@biloxi.example.com SIP", b"sip:bob@h?Route=x SIP"), 400
        )

    def test_require(self) -> None:
        data = invite(extra=b"Require: 100rel, timer\r\nProxy-Require: sec-agree\r\n")
        err = self.check(data, 420)
        assert err.unsupported == ("100rel", "timer")
        err = self.check(data, 420, supported={"100rel"})
        assert err.unsupported == ("timer",)
        validate_request(parse_request(data), supported={"100rel", "timer"})
        err = self.check(data, 420, supported={"100rel", "timer"}, proxy=True)
        assert err.unsupported == ("sec-agree",)

    def test_require_never_rejects_ack_or_cancel(self) -> None:
        data = invite(extra=b"Require: 100rel\r\n").replace(b"INVITE", b"ACK")
        validate_request(parse_request(data))


class TestSerialization:
    def test_round_trip_keeps_bytes(self) -> None:
        data = invite()
        assert bytes(parse_message(data)) == data
        assert bytes(parse_message(REGISTER)) == REGISTER
        assert bytes(parse_message(RESPONSE)) == RESPONSE

    def test_content_length_always_matches_the_body(self) -> None:
        r = parse_request(invite())
        r.body = b"v=0\r\n"
        data = bytes(r)
        assert b"Content-Length: 5\r\n" in data and data.count(b"Content-Length") == 1
        built = Request("OPTIONS", "sip:a@b", [("l", "99"), ("Via", "x")], b"hi")
        assert b"l: 2\r\n" in bytes(built)
        assert bytes(Request("OPTIONS", Uri.parse("sip:a@b"))).endswith(
            b"Content-Length: 0\r\n\r\n"
        )

    def test_uri_changes_are_serialized(self) -> None:
        r = parse_request(invite().replace(b"INVITE sip:bob", b"INVITE SIP:%62ob"))
        assert r.uri.user_unescaped == "bob"
        assert bytes(r).startswith(b"INVITE SIP:%62ob@")  # unchanged: the wire text stays
        r.uri.host = "example.org"
        assert bytes(r).startswith(b"INVITE sip:%62ob@example.org SIP/2.0\r\n")
        r.uri = Uri.parse("sip:carol@example.net")
        assert r.uri_text == "sip:carol@example.net"
        assert repr(r) == "<Request INVITE sip:carol@example.net>"

    @pytest.mark.parametrize(("method", "uri"), [("BAD METHOD", "sip:a@b"), ("OPTIONS", "sip:a b")])
    def test_constructor_refuses_what_cannot_be_sent(self, method: str, uri: str) -> None:
        with pytest.raises(ValueError):
            Request(method, uri)

    def test_equality(self) -> None:
        a = parse_request(invite())
        b = parse_request(invite().replace(b"Content-Length", b"l"))
        assert a == b
        b.headers.add("X", "y")
        assert a != b
        assert a != parse_message(RESPONSE) and a != "x"
        c = parse_request(invite())
        c.body = b""
        assert a != c


class TestMakeResponse:
    def test_copies_the_rfc_3261_headers(self) -> None:
        req = parse_request(
            invite(extra=b"Via: SIP/2.0/TCP proxy;branch=z9hG4bKp\r\nRecord-Route: <sip:p;lr>\r\n")
        )
        resp = make_response(req, 200, to_tag="a6c85cf", headers=[("Contact", "<sip:bob@h>")])
        assert (resp.status, resp.reason) == (200, "OK")
        assert resp.headers.get_all("via") == req.headers.get_all("via")
        assert resp.from_ == req.from_ and resp.call_id == req.call_id and resp.cseq == req.cseq
        assert resp.to.tag == "a6c85cf" and resp.to.uri == req.to.uri
        assert resp.headers.get_all("record-route") == ["<sip:p;lr>"]
        assert resp.headers.get("contact") == "<sip:bob@h>"
        assert b"Content-Length: 0\r\n\r\n" in bytes(resp)
        assert parse_message(bytes(resp)) == resp
        validate_response(resp)

    def test_keeps_an_existing_to_tag_and_skips_tag_on_100(self) -> None:
        req = parse_request(
            invite().replace(b'"Bob" <sip:bob@biloxi.example.com>', b"<sip:b@h>;tag=x")
        )
        assert make_response(req, 486, to_tag="y").to.tag == "x"
        fresh = parse_request(invite())
        trying = make_response(fresh, 100, to_tag="y")
        assert trying.to.tag is None and trying.reason == "Trying"
        stamped = parse_request(invite(extra=b"Timestamp: 54\r\n"))
        assert make_response(stamped, 100).headers.get("timestamp") == "54"
        assert "timestamp" not in make_response(stamped, 180).headers
        assert "record-route" not in make_response(fresh, 404, "Nobody Here").headers

    def test_mapping_headers_and_body(self) -> None:
        req = parse_request(REGISTER)
        resp = make_response(
            req,
            401,
            headers={"WWW-Authenticate": 'Digest realm="example.com", nonce="n"'},
            body=b"x",
        )
        assert resp.headers.get("www-authenticate") == 'Digest realm="example.com", nonce="n"'
        assert b"Content-Length: 1\r\n\r\nx" in bytes(resp)


# --- properties ---------------------------------------------------------------------------

_token = st.text(alphabet="abcXYZ019-.!%*_+`'~", min_size=1, max_size=12)
_value = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=30
).map(lambda s: s.strip(" \t"))
_headers = st.lists(
    st.tuples(st.one_of(_token, st.sampled_from(["Via", "v", "To", "l", "Contact"])), _value),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(
    _token,
    st.sampled_from(["sip:a@b", "sips:[::1]:5061;lr", "tel:+1", "x-unknown:opaque;stuff"]),
    _headers,
    st.binary(max_size=40),
    st.booleans(),
)
def test_generated_request_round_trips(
    method: str, uri: str, headers: list[tuple[str, str]], body: bytes, stream: bool
) -> None:
    m = Request(method, uri, headers, body)
    again = parse_message(bytes(m), stream=stream)
    assert again == m
    assert bytes(again) == bytes(m)


@settings(max_examples=200, deadline=None)
@given(st.integers(100, 699), _value, _headers, st.binary(max_size=40))
def test_generated_response_round_trips(
    status: int, reason: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    m = Response(status, reason, headers, body)
    again = parse_message(bytes(m))
    assert again == m


def exercise(message: Request | Response) -> None:
    """Everything a server might touch: only SipParseError may come out."""
    for attr in (
        "call_id",
        "cseq",
        "from_",
        "to",
        "via",
        "top_via",
        "contact",
        "contact_is_wildcard",
        "route",
        "record_route",
        "max_forwards",
        "expires",
        "content_length",
        "require",
    ):
        with contextlib.suppress(SipParseError):
            getattr(message, attr)
    with contextlib.suppress(SipParseError):
        if isinstance(message, Request):
            message.uri  # noqa: B018
            validate_request(message)
        else:
            validate_response(message)
    assert parse_message(bytes(message)) == message
    if isinstance(message, Request):
        response = make_response(message, 500, to_tag="x", headers=[("Retry-After", "5")])
        assert parse_message(bytes(response)) == response


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_sip_parse_error(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError:
        return
    exercise(message)


def _seeds() -> list[bytes]:
    seeds = [invite(), REGISTER, RESPONSE]
    for folder in ("rfc4475", "rfc5118"):
        seeds.extend(p.read_bytes() for p in sorted((TESTDATA / folder / "messages").iterdir()))
    return seeds


SEEDS = _seeds()
_PIECES = [
    b"\r\n",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"\\",
    b"%",
    b"@",
    b"[",
    b"]",
    b"=",
    b"/",
    b"0",
    b"9" * 12,
    b"\r\n ",
    b"\x00",
    b"\xff",
    b"SIP/2.0",
    b"sip:",
    b"\r\n\r\n",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.integers(0, 3))
        if op == 0:
            data[pos:pos] = draw(st.sampled_from(_PIECES))
        elif op == 1:
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == 2 and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        else:
            data[pos:pos] = draw(st.binary(max_size=6))
    return bytes(data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.booleans())
def test_mutated_messages_raise_only_sip_parse_error(data: bytes, stream: bool) -> None:
    try:
        message = parse_message(data, stream=stream)
    except SipParseError:
        return
    exercise(message)
    with contextlib.suppress(SipParseError):
        n = message_length(data)
        assert n is None or n <= len(data)


def test_headers_object_can_be_shared_by_a_built_request() -> None:
    h = Headers([("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")])
    r = Request("OPTIONS", "sip:a@b", h)
    assert r.headers is h and r.top_via == Via.parse("SIP/2.0/UDP h;branch=z9hG4bK1")


class TestSetters:
    def test_setters_write_the_headers(self) -> None:
        r = parse_request(invite())
        r.call_id = "new-call"
        r.cseq = (2, "INVITE")
        r.from_ = Address.parse("<sip:carol@example.com>;tag=9")
        to = r.to.copy()
        to.params["tag"] = "t1"
        r.to = to
        r.max_forwards = 69
        r.expires = 30
        r.contact = [Address.parse("<sip:a@1.2.3.4>"), Address.parse("<sip:b@[::1]>;q=0.1")]
        via = r.top_via.copy()
        via.params["received"] = "192.0.2.9"
        r.top_via = via
        again = parse_request(bytes(r))
        assert again.call_id == "new-call" and again.cseq == (2, "INVITE")
        assert again.from_.tag == "9" and again.to.tag == "t1" and again.to.display_name == "Bob"
        assert again.max_forwards == 69 and again.expires == 30
        assert [c.uri.host for c in again.contact] == ["1.2.3.4", "::1"]
        assert again.top_via.received == "192.0.2.9"
        assert len(again.via) == 1
        with pytest.raises(ValueError):
            r.call_id = "a\r\nInjected: yes"


def _cseq_by_grammar(value: str) -> tuple[int, str] | None:
    # CSeq = 1*DIGIT LWS Method (RFC 3261 §20.16), number at most 2**31-1
    m = message_mod._CSEQ_RE.match(value)
    if m is None or int(m.group(1)) > 2**31 - 1:
        return None
    return int(m.group(1)), m.group(2)


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet="0129 \t", max_size=12),
    st.sampled_from(["INVITE", "REGISTER", "invite", "FOO", "", " ACK", "BYE ", "a b"]),
)
def test_cseq_fast_path_agrees_with_the_grammar(number: str, method: str) -> None:
    value = f"{number} {method}"
    try:
        got: tuple[int, str] | None = message_mod._parse_cseq(value)
    except SipParseError:
        got = None
    assert got == _cseq_by_grammar(value)
