"""pbxcore.sip.uri: SIP/SIPS/tel URIs, escaping, IPv6 references, RFC 3261 comparison."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxcore.sip import SipParseError, Uri, escape_user, unescape
from pbxcore.sip.uri import format_host, parse_hostport


class TestParse:
    def test_full_sip_uri(self) -> None:
        uri = Uri.parse("sip:alice:secret@example.com:5070;transport=tcp;lr?subject=hi&x=1")
        assert uri.scheme == "sip"
        assert (uri.user, uri.password) == ("alice", "secret")
        assert (uri.host, uri.port) == ("example.com", 5070)
        assert uri.params == {"transport": "tcp", "lr": None}
        assert uri.headers == {"subject": "hi", "x": "1"}
        assert uri.transport == "tcp"
        assert str(uri) == "sip:alice:secret@example.com:5070;transport=tcp;lr?subject=hi&x=1"

    def test_host_only(self) -> None:
        uri = Uri.parse("sips:proxy.example.com")
        assert uri.user is None and uri.host == "proxy.example.com" and uri.port is None
        assert uri.is_sip

    def test_scheme_is_case_insensitive(self) -> None:
        assert Uri.parse("SIP:a@b").scheme == "sip"

    def test_ipv6_reference(self) -> None:
        uri = Uri.parse("sip:bob@[2001:db8::1]:5061;transport=tls")
        assert (uri.host, uri.port) == ("2001:db8::1", 5061)
        assert str(uri) == "sip:bob@[2001:db8::1]:5061;transport=tls"

    def test_ipv6_with_no_port_keeps_all_colons_in_host(self) -> None:
        assert Uri.parse("sip:[2001:db8::10:5070]").host == "2001:db8::10:5070"

    def test_escapes_are_kept_as_written(self) -> None:
        uri = Uri.parse("sip:%61lice@example.com")
        assert uri.user == "%61lice"
        assert uri.user_unescaped == "alice"
        assert str(uri) == "sip:%61lice@example.com"

    def test_user_part_may_hold_semicolons_and_question_marks(self) -> None:
        uri = Uri.parse("sip:user;par=u%40example.net@example.com;lr")
        assert uri.user == "user;par=u%40example.net"
        assert uri.params == {"lr": None}

    def test_tel_uri(self) -> None:
        uri = Uri.parse("tel:+1-201-555-0123;phone-context=example.com")
        assert uri.scheme == "tel" and uri.user == "+1-201-555-0123"
        assert uri.params == {"phone-context": "example.com"}
        assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com"
        assert uri.aor == "tel:+1-201-555-0123"

    def test_other_scheme_is_opaque(self) -> None:
        uri = Uri.parse("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
        assert uri.scheme == "urn" and uri.opaque == "uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
        assert not uri.is_sip
        assert str(uri) == "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "example.com",
            ":foo",
            "1sip:a@b",
            "sip:",
            "sip:@host",
            "sip:a@",
            "sip:a b@host",
            "sip:<a@host>",
            "sip:a@host:",
            "sip:a@host:99999",
            "sip:a@host:5x",
            "sip:a@2001:db8::10",
            "sip:a@[2001:db8::10",
            "sip:a@[2001:db8::10]x",
            "sip:a@[zz::1]",
            "sip:a@host;;lr",
            "sip:a@host?=x",
            "sip:a@ho st",
            "tel:",
            "tel:;foo",
            "mailto:",
            'sip:"a"@host',
        ],
    )
    def test_malformed(self, text: str) -> None:
        with pytest.raises(SipParseError) as info:
            Uri.parse(text)
        assert info.value.status == 400


class TestHelpers:
    def test_unescape_keeps_nul_and_invalid_escapes(self) -> None:
        assert unescape("a%00b") == "a\x00b"
        assert unescape("%ZZ%4") == "%ZZ%4"
        assert unescape("plain") == "plain"

    def test_escape_user_round_trip(self) -> None:
        assert escape_user("I have spaces") == "I%20have%20spaces"
        assert escape_user("+1;x=y?z") == "+1;x=y?z"
        assert unescape(escape_user("a\x00@b")) == "a\x00@b"

    def test_hostport(self) -> None:
        assert parse_hostport("example.com:5060", "t") == ("example.com", 5060)
        assert parse_hostport("[::1]", "t") == ("::1", None)
        assert format_host("::1") == "[::1]" and format_host("10.0.0.1") == "10.0.0.1"


class TestAccessors:
    def test_param_lookup_is_case_insensitive(self) -> None:
        uri = Uri.parse("sip:a@b;Transport=UDP;LR")
        assert uri.param("transport") == "UDP"
        assert uri.transport == "udp"
        assert uri.has_param("lr") and not uri.has_param("maddr")
        assert uri.param("maddr", "x") == "x"

    def test_aor_canonicalises_user_and_host(self) -> None:
        assert (
            Uri.parse("sip:%61lice@EXAMPLE.com:5070;transport=tcp").aor == "sip:alice@example.com"
        )
        assert Uri.parse("sip:a%20b@h").aor == "sip:a%20b@h"
        assert Uri.parse("sip:[2001:DB8::1]").aor == "sip:[2001:db8::1]"

    def test_copy_is_independent(self) -> None:
        uri = Uri.parse("sip:a@b;lr")
        dup = uri.copy()
        dup.params["transport"] = "tcp"
        assert "transport" not in uri.params
        assert repr(uri) == "Uri('sip:a@b;lr')"


class TestEquality:
    """RFC 3261 §19.1.4 examples."""

    @pytest.mark.parametrize(
        ("a", "b"),
        [
            ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
            (
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ),
            (
                "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
                "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            ),
        ],
    )
    def test_equivalent(self, a: str, b: str) -> None:
        assert Uri.parse(a) == Uri.parse(b)
        assert hash(Uri.parse(a)) == hash(Uri.parse(b))

    @pytest.mark.parametrize(
        ("a", "b"),
        [
            ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            ("sip:bob@biloxi.com", "sips:bob@biloxi.com"),
            ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;newparam=6"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
            ("sip:%00@h", "sip:%00%00@h"),
            ("tel:+1;a=b", "tel:+1"),
        ],
    )
    def test_not_equivalent(self, a: str, b: str) -> None:
        assert Uri.parse(a) != Uri.parse(b)

    def test_other_types(self) -> None:
        assert Uri.parse("sip:a@b") != "sip:a@b"


# --- properties ---------------------------------------------------------------------------

_alnum = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    min_size=1,
    max_size=12,
)
_user = st.text(alphabet="abcXYZ019-_.!~*'()&=+$,;?/%", min_size=1, max_size=16)
_host = st.one_of(
    st.builds(lambda a, b: f"{a}.{b}".lower(), _alnum, _alnum),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
_pvalue = st.one_of(
    st.none(), st.text(alphabet="abcXYZ019-_.!~*'()%[]/:&+$", min_size=1, max_size=8)
)
_uris = st.builds(
    lambda scheme, user, password, host, port, params, headers: Uri(
        scheme,
        user=user,
        password=password if user else None,
        host=host,
        port=port,
        params=params,
        headers=headers,
    ),
    st.sampled_from(["sip", "sips"]),
    st.one_of(st.none(), _user.filter(lambda u: ":" not in u)),
    st.one_of(st.none(), _alnum),
    _host,
    st.one_of(st.none(), st.integers(0, 65535)),
    st.dictionaries(_alnum, _pvalue, max_size=3),
    st.dictionaries(_alnum, st.text(alphabet="abc019-_.%:/?+$[]", max_size=6), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(_uris)
def test_serialization_round_trip(uri: Uri) -> None:
    again = Uri.parse(str(uri))
    assert str(again) == str(uri)
    assert again == uri


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_text_parses_or_raises_sip_parse_error(text: str) -> None:
    try:
        uri = Uri.parse(text)
    except SipParseError:
        return
    # whatever parsed serializes to something that parses to an equal URI
    assert Uri.parse(str(uri)) == uri
    uri.aor  # noqa: B018


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"\Asips?:[a-z%0-9;?@:\[\]=&.]{0,30}\Z"))
def test_sip_like_text_parses_or_raises_sip_parse_error(text: str) -> None:
    try:
        uri = Uri.parse(text)
    except SipParseError:
        return
    assert Uri.parse(str(uri)) == uri


def _outcome(parse: object, text: str) -> tuple[str, object]:
    try:
        uri = parse(text)  # type: ignore[operator]
    except SipParseError as exc:
        return ("error", exc.status)
    return (
        "ok",
        (uri.scheme, uri.user, uri.password, uri.host, uri.port, uri.params, uri.headers,
         uri.opaque, str(uri)),
    )  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.from_regex(r"\A(sip|sips|SIP|tel):[a-z0-9%;?@:\[\]=&._\-\"< ]{0,30}\Z"),
        _uris.map(str),
    )
)
def test_fast_path_agrees_with_the_general_parser(text: str) -> None:
    assert _outcome(Uri.parse, text) == _outcome(Uri.parse_general, text)


@pytest.mark.parametrize(
    "text",
    [
        "sip:a@b",
        "sip:user;par=u%40example.net@example.com;lr",
        "sip:a:@b",
        "sip:a@b:65536",
        "sip:a@b;x=1=2",
        "sip:a@b;=x",
        "sip:a@b;x;;y",
        "sip:a@[::1]:5060;transport=tcp",
        "sip:a@[::1",
        "sips:b;maddr=[::1]",
        "sip:a@b?x=y",
    ],
)
def test_fast_path_examples(text: str) -> None:
    assert _outcome(Uri.parse, text) == _outcome(Uri.parse_general, text)
