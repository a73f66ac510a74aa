"""SDP parse/serialize (RFC 4566) and offer/answer (RFC 3264) for G.711 + telephone-event."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxcore.media.sdp import (
    DIRECTIONS,
    PCMA,
    PCMU,
    Connection,
    MediaDescription,
    Origin,
    RtpMap,
    SessionDescription,
    create_answer,
    create_offer,
    negotiated_audio,
    rewrite_audio,
)

AUDIO = (
    "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"
    "m=audio 7000 RTP/AVP 0\r\n"
)

# a real offer, as a Linphone/baresip-style UA sends it
OFFER = (
    "v=0\r\n"
    "o=alice 2890844526 2890844526 IN IP4 198.51.100.7\r\n"
    "s=-\r\n"
    "c=IN IP4 198.51.100.7\r\n"
    "t=0 0\r\n"
    "m=audio 49170 RTP/AVP 9 8 0 101\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
    "m=video 51372 RTP/AVP 99\r\n"
    "a=rtpmap:99 h263-1998/90000\r\n"
)


class TestParse:
    def test_parse_offer(self) -> None:
        sdp = SessionDescription.parse(OFFER)
        assert sdp.origin == Origin("alice", 2890844526, 2890844526, "IN", "IP4", "198.51.100.7")
        assert sdp.connection == Connection("198.51.100.7")
        audio, video = sdp.media
        assert (audio.media, audio.port, audio.proto, audio.formats) == (
            "audio",
            49170,
            "RTP/AVP",
            ["9", "8", "0", "101"],
        )
        assert audio.rtpmap(101) == RtpMap(101, "telephone-event", 8000)
        assert audio.fmtp(101) == "0-15"
        assert audio.ptime == 20.0
        assert audio.direction_or("x") == "sendrecv"
        assert video.rtpmap(99) == RtpMap(99, "h263-1998", 90000)
        assert str(sdp) == OFFER
        assert bytes(sdp) == OFFER.encode()

    def test_static_payload_types_need_no_rtpmap(self) -> None:
        m = MediaDescription.parse_m_line("audio 4000 RTP/AVP 0 8")
        assert m.rtpmap(0) == RtpMap(0, "PCMU", 8000)
        assert m.rtpmap(8) == RtpMap(8, "PCMA", 8000)
        assert m.rtpmap(96) is None

    def test_lf_line_ends_and_ipv6(self) -> None:
        text = (
            "v=0\no=- 1 1 IN IP6 ::1\ns=x\nc=IN IP6 2001:db8::5\nt=0 0\n"
            "m=audio 5000/2 RTP/AVP 0\na=rtcp-mux\na=rtcp:5001 IN IP6 2001:db8::6\na=recvonly\n"
        )
        sdp = SessionDescription.parse(text)
        m = sdp.media[0]
        assert sdp.connection == Connection("2001:db8::5", "IP6")
        assert m.port_count == 2
        assert m.rtcp_mux
        assert m.rtcp == (5001, "2001:db8::6")
        assert m.direction_or("sendrecv") == "recvonly"
        assert SessionDescription.parse(str(sdp)) == sdp

    def test_all_session_lines(self) -> None:
        text = (
            "v=0\r\no=jdoe 1 2 IN IP4 h.example.com\r\ns=SDP Seminar\r\ni=A Seminar\r\n"
            "u=http://www.example.com/seminars/sdp.pdf\r\ne=j.doe@example.com (Jane Doe)\r\n"
            "p=+1 617 555-6011\r\nc=IN IP4 224.2.17.12/127\r\nb=AS:128\r\n"
            "t=2873397496 2873404696\r\nr=7d 1h 0 25h\r\nt=0 0\r\nz=2882844526 -1h\r\n"
            "k=prompt\r\na=recvonly\r\n"
            "m=audio 49170 RTP/AVP 0\r\ni=voice\r\nb=CT:64\r\nk=prompt\r\n"
            "m=application 9 udp wb\r\na=orient:portrait\r\n"
        )
        sdp = SessionDescription.parse(text)
        assert sdp.times == [(2873397496, 2873404696), (0, 0)]
        assert sdp.direction == "recvonly"
        assert sdp.media[1].formats == ["wb"]
        assert sdp.media[1].attributes == [("orient", "portrait")]
        # r= lines are kept after the last t=; everything else is kept as written
        assert SessionDescription.parse(str(sdp)) == sdp

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("", "empty"),
            ("o=- 1 1 IN IP4 1.2.3.4\r\n", "start with a v= line"),
            ("v=1\r\n", "version must be 0"),
            ("v=0\r\ns=-\r\nt=0 0\r\n", "before a o= line"),
            ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n", "no t= line"),
            ("v=0\r\no=- 1 1 IN IP4\r\n", "6 fields"),
            ("v=0\r\no=- x 1 IN IP4 1.2.3.4\r\n", "session id is not a number"),
            ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=\r\n", "s= line is empty"),
            ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 ::1\r\n", "'::1' is not IP4"),
            ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP6 10.0.0.1\r\n", "is not IP6"),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP5 10.0.0.1\r\n",
                "unknown address type",
            ),
            ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 bad_host!\r\n", "invalid address"),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 70000 RTP/AVP 0\r\n",
                "m= port is out of range",
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 7000 RTP/AVP\r\n",
                "at least 4 fields",
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 7000 RTP/AVP 200\r\n",
                "payload type is out of range",
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n",
                "no c= line",
            ),
            (
                AUDIO + "a=rtpmap:0 PCMU\r\n",
                "rtpmap is malformed",
            ),
            (
                AUDIO + "a=ptime:x\r\n",
                "ptime is not a positive number",
            ),
            (
                AUDIO + "a=rtcp:99999\r\n",
                "a=rtcp port is out of range",
            ),
            (
                AUDIO + "a=sendrecv:1\r\n",
                "takes no value",
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nc=IN IP4 1.2.3.4\r\n",
                "out of order",
            ),
            ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nx=1\r\n", "unknown type 'x'"),
            (
                AUDIO + "o=x\r\n",
                "not allowed in a media section",
            ),
            (
                AUDIO + "a=x\r\nc=IN IP4 1.2.3.4\r\n",
                "out of order",
            ),
            ("v=0\r\nbad\r\n", "not <type>=<value>"),
            ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=a\x00b\r\n", "control character"),
            (b"v=0\r\ns=\xff\r\n", "not valid UTF-8"),
        ],
    )
    def test_malformed(self, text: str | bytes, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            SessionDescription.parse(text)

    @settings(max_examples=300, deadline=None)
    @given(text=st.text(max_size=200) | st.binary(max_size=200))
    def test_random_input_raises_only_value_error(self, text: str | bytes) -> None:
        try:
            sdp = SessionDescription.parse(text)
        except ValueError:
            return
        assert SessionDescription.parse(str(sdp)) == sdp

    @settings(max_examples=300, deadline=None)
    @given(
        lines=st.lists(
            st.sampled_from(
                [
                    "v=0",
                    "o=- 1 1 IN IP4 10.0.0.1",
                    "s=-",
                    "c=IN IP4 10.0.0.1",
                    "t=0 0",
                    "b=AS:64",
                    "m=audio 4000 RTP/AVP 0 8 101",
                    "a=rtpmap:101 telephone-event/8000",
                    "a=sendonly",
                    "a=rtcp-mux",
                    "a=ptime:20",
                    "r=1 2 3",
                    "i=info",
                    "k=clear:x",
                    "m=video 0 RTP/AVP 31",
                ]
            ),
            max_size=14,
        )
    )
    def test_shuffled_valid_lines_raise_only_value_error(self, lines: list[str]) -> None:
        text = "\r\n".join(["v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", *lines]) + "\r\n"
        try:
            sdp = SessionDescription.parse(text)
        except ValueError:
            return
        assert SessionDescription.parse(str(sdp)) == sdp


tokens = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=10)
free_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
    min_size=1,
    max_size=20,
)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
connections = st.one_of(ipv4, ipv6).map(Connection.for_address)
attributes = st.one_of(
    st.sampled_from(
        [
            ("sendrecv", None),
            ("sendonly", None),
            ("recvonly", None),
            ("inactive", None),
            ("rtcp-mux", None),
        ]
    ),
    st.builds(
        lambda pt, enc, rate: ("rtpmap", f"{pt} {enc}/{rate}"),
        st.integers(0, 127),
        tokens,
        st.integers(1, 96000),
    ),
    st.builds(lambda p: ("ptime", str(p)), st.integers(1, 200)),
    st.builds(lambda p: ("rtcp", str(p)), st.integers(0, 65535)),
    st.builds(lambda pt, v: ("fmtp", f"{pt} {v}"), st.integers(0, 127), tokens),
    st.tuples(
        tokens.filter(
            lambda t: (
                t not in {"rtpmap", "fmtp", "ptime", "maxptime", "rtcp", "rtcp-mux"}
                and t not in DIRECTIONS
            )
        ),
        st.none() | free_text,
    ),
)
media = st.builds(
    MediaDescription,
    media=st.sampled_from(["audio", "video"]),
    port=st.integers(1, 65535),
    proto=st.sampled_from(["RTP/AVP", "RTP/AVPF"]),
    formats=st.lists(st.integers(0, 127).map(str), min_size=1, max_size=5),
    port_count=st.none() | st.integers(1, 4),
    title=st.none() | free_text,
    connections=st.lists(connections, min_size=1, max_size=2),
    bandwidths=st.lists(
        st.builds(
            lambda t, n: f"{t}:{n}", st.sampled_from(["AS", "CT", "TIAS"]), st.integers(0, 10**6)
        ),
        max_size=2,
    ),
    attributes=st.lists(attributes, max_size=6),
)
sessions = st.builds(
    SessionDescription,
    origin=st.builds(
        Origin,
        tokens,
        st.integers(0, 2**63),
        st.integers(0, 2**63),
        st.just("IN"),
        st.just("IP4"),
        ipv4,
    ),
    session_name=free_text,
    info=st.none() | free_text,
    emails=st.lists(free_text, max_size=2),
    connection=st.none() | connections,
    times=st.lists(st.tuples(st.integers(0, 2**32), st.integers(0, 2**32)), min_size=1, max_size=2),
    attributes=st.lists(attributes, max_size=4),
    media=st.lists(media, max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(sdp=sessions)
def test_round_trip(sdp: SessionDescription) -> None:
    assert SessionDescription.parse(str(sdp)) == sdp


class TestOfferAnswer:
    def test_answer_picks_common_codecs_in_offer_order(self) -> None:
        offer = SessionDescription.parse(OFFER)
        answer = create_answer(
            offer, "203.0.113.1", 30000, origin=Origin(session_id=7, session_version=7)
        )
        audio, video = answer.media
        assert audio.port == 30000
        assert audio.formats == ["8", "0", "101"]
        assert audio.rtpmap(101) == RtpMap(101, "telephone-event", 8000)
        assert audio.fmtp(101) == "0-16"
        assert audio.direction_or("") == "sendrecv"
        assert not audio.rtcp_mux  # not offered
        assert (video.port, video.formats) == (0, ["99"])  # declined, formats kept
        assert answer.connection == Connection("203.0.113.1")
        # the answer parses back, and reads as what was agreed
        agreed = negotiated_audio(SessionDescription.parse(str(answer)))
        assert agreed is not None
        assert (agreed.address, agreed.port, agreed.rtcp_port) == ("203.0.113.1", 30000, 30001)
        assert agreed.codec == PCMA
        assert agreed.telephone_event == 101

    def test_answer_limited_to_our_codecs(self) -> None:
        offer = SessionDescription.parse(OFFER)
        answer = create_answer(offer, "203.0.113.1", 30000, codecs=["PCMU"], telephone_event=False)
        assert answer.media[0].formats == ["0"]

    def test_dynamic_payload_type_numbers_are_kept(self) -> None:
        offer = create_offer("10.0.0.1", 4000, codecs=["PCMA"], telephone_event=96)
        offer.media[0].formats.insert(0, "97")
        offer.media[0].attributes.insert(0, ("rtpmap", "97 pcmu/8000"))
        answer = create_answer(offer, "10.0.0.2", 5000)
        assert answer.media[0].formats == ["97", "8", "96"]
        agreed = negotiated_audio(answer)
        assert agreed is not None and agreed.payload_type == 97 and agreed.codec == PCMU

    @pytest.mark.parametrize(
        ("offered", "ours", "expected"),
        [
            ("sendrecv", "sendrecv", "sendrecv"),
            ("sendonly", "sendrecv", "recvonly"),
            ("recvonly", "sendrecv", "sendonly"),
            ("inactive", "sendrecv", "inactive"),
            ("sendrecv", "recvonly", "recvonly"),
            ("sendonly", "sendonly", "inactive"),
        ],
    )
    def test_direction(self, offered: str, ours: str, expected: str) -> None:
        offer = create_offer("10.0.0.1", 4000, direction=offered)
        answer = create_answer(offer, "10.0.0.2", 5000, direction=ours)
        assert answer.media[0].direction_or("") == expected

    def test_session_level_direction_applies(self) -> None:
        offer = create_offer("10.0.0.1", 4000)
        offer.media[0].attributes.remove(("sendrecv", None))
        offer.attributes.append(("sendonly", None))
        assert create_answer(offer, "10.0.0.2", 5000).media[0].direction_or("") == "recvonly"

    def test_rtcp_mux_and_ipv6(self) -> None:
        offer = create_offer("2001:db8::1", 4000, rtcp_mux=True, ptime=30)
        assert str(offer).count("c=IN IP6 2001:db8::1") == 1
        assert offer.media[0].ptime == 30
        answer = create_answer(offer, "2001:db8::2", 6000)
        assert answer.media[0].rtcp_mux
        agreed = negotiated_audio(answer)
        assert agreed is not None and agreed.rtcp_port == 6000 and agreed.rtcp_mux
        no_mux = create_answer(offer, "2001:db8::2", 6000, rtcp_mux=False, rtcp_port=7001)
        assert not no_mux.media[0].rtcp_mux
        agreed = negotiated_audio(no_mux)
        assert agreed is not None and agreed.rtcp_port == 7001

    def test_no_common_codec_is_an_error(self) -> None:
        offer = SessionDescription.parse(OFFER.replace("9 8 0 101", "9 101"))
        with pytest.raises(ValueError, match="no audio stream with PCMU or PCMA"):
            create_answer(offer, "10.0.0.2", 5000)

    def test_only_the_first_audio_stream_is_accepted(self) -> None:
        offer = create_offer("10.0.0.1", 4000)
        offer.media.append(offer.media[0])
        answer = create_answer(offer, "10.0.0.2", 5000)
        assert [m.port for m in answer.media] == [5000, 0]

    def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="unsupported codec 'G729'"):
            create_offer("10.0.0.1", 4000, codecs=["G729"])
        with pytest.raises(ValueError, match="direction must be one of"):
            create_offer("10.0.0.1", 4000, direction="both")
        with pytest.raises(ValueError, match="dynamic payload type"):
            create_offer("10.0.0.1", 4000, telephone_event=13)
        with pytest.raises(ValueError, match="at least one codec"):
            create_offer("10.0.0.1", 4000, codecs=[])

    def test_declined_audio_is_not_negotiated(self) -> None:
        answer = SessionDescription.parse(OFFER.replace("m=audio 49170", "m=audio 0"))
        assert negotiated_audio(answer) is None

    def test_rewrite_points_audio_at_the_relay(self) -> None:
        sdp = SessionDescription.parse(OFFER.replace("a=ptime:20", "a=rtcp:49999"))
        out = rewrite_audio(sdp, "192.0.2.10", 20000, rtcp_port=20001)
        assert out.connection == Connection("192.0.2.10")
        assert out.media[0].port == 20000
        assert out.media[0].rtcp is None  # port + 1 needs no a=rtcp
        assert out.media[0].formats == sdp.media[0].formats
        assert out.media[1] == sdp.media[1]
        assert out.origin == sdp.origin
        assert negotiated_audio(out) is not None
        assert rewrite_audio(sdp, "::1", 20000, rtcp_port=20005).media[0].rtcp == (20005, None)
