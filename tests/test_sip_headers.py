"""pbxcore.sip.headers: Headers (ordered, case-insensitive, compact forms, lists), Address, Via."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxcore.sip import (
    BRANCH_MAGIC,
    Address,
    Headers,
    SipParseError,
    Uri,
    Via,
    header_key,
    new_branch,
    new_tag,
    split_list,
)
from pbxcore.sip.headers import parse_params, parse_params_general, unquote_value


class TestHeaderKey:
    @pytest.mark.parametrize(
        ("name", "key"),
        [
            ("Via", "via"),
            ("v", "via"),
            ("V", "via"),
            ("i", "call-id"),
            ("m", "contact"),
            ("f", "from"),
            ("t", "to"),
            ("l", "content-length"),
            ("c", "content-type"),
            ("k", "supported"),
            ("s", "subject"),
            ("e", "content-encoding"),
            ("o", "event"),
            ("X-Custom", "x-custom"),
        ],
    )
    def test_compact_and_case(self, name: str, key: str) -> None:
        assert header_key(name) == key


class TestSplitList:
    def test_plain(self) -> None:
        assert split_list("INVITE, ACK,BYE") == ["INVITE", "ACK", "BYE"]

    def test_no_split_inside_quotes_or_angle_brackets(self) -> None:
        value = '"Doe, John" <sip:a@b;x=1,2>;q=0.5, <sip:c@d>'
        assert split_list(value) == ['"Doe, John" <sip:a@b;x=1,2>;q=0.5', "<sip:c@d>"]

    def test_escaped_quote_inside_quotes(self) -> None:
        assert split_list(r'"a \", b" <sip:a@b>, <sip:c@d>') == [
            r'"a \", b" <sip:a@b>',
            "<sip:c@d>",
        ]

    def test_empty_elements_are_kept_for_the_validators(self) -> None:
        assert split_list("a,,b,") == ["a", "", "b", ""]


class TestHeaders:
    def make(self) -> Headers:
        return Headers(
            [
                ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"),
                ("v", "SIP/2.0/TCP c;branch=z9hG4bK3"),
                ("To", "<sip:bob@example.com>"),
                ("X-Unknown", '  odd ,, value; "quoted, text"'),
                ("Authorization", 'Digest username="a", realm="b"'),
            ]
        )

    def test_get_is_case_insensitive_and_knows_compact_forms(self) -> None:
        h = self.make()
        assert h.get("TO") == h.get("t") == "<sip:bob@example.com>"
        assert h.get("missing") is None and h.get("missing", "d") == "d"
        assert "to" in h and "T" in h and "Route" not in h and 5 not in h

    def test_lists_are_split_across_comma_and_repeated_lines(self) -> None:
        h = self.make()
        assert h.get_all("via") == [
            "SIP/2.0/UDP a;branch=z9hG4bK1",
            "SIP/2.0/UDP b;branch=z9hG4bK2",
            "SIP/2.0/TCP c;branch=z9hG4bK3",
        ]
        assert h.get("Via") == "SIP/2.0/UDP a;branch=z9hG4bK1"
        assert h.count("via") == 2
        assert len(h.lines("v")) == 2

    def test_non_list_headers_are_never_split(self) -> None:
        h = self.make()
        assert h.get_all("Authorization") == ['Digest username="a", realm="b"']
        assert h.get_all("x-unknown") == ['  odd ,, value; "quoted, text"']

    def test_construction_keeps_the_given_order(self) -> None:
        h = Headers([("Via", "a"), ("To", "b"), ("Via", "c")])
        assert h.items() == [("Via", "a"), ("To", "b"), ("Via", "c")]
        h.extend([("Route", "<sip:r;lr>")])
        assert h.items()[-1] == ("Route", "<sip:r;lr>")
        assert h.keys() == ["via", "to", "via", "route"]

    def test_order_and_names_as_written(self) -> None:
        h = self.make()
        assert [name for name, _ in h] == ["Via", "v", "To", "X-Unknown", "Authorization"]
        assert h.items()[1] == ("v", "SIP/2.0/TCP c;branch=z9hG4bK3")
        assert len(h) == 5

    def test_set_replaces_all_lines_in_place(self) -> None:
        h = self.make()
        h.set("VIA", "SIP/2.0/UDP z")
        assert h.items()[0] == ("VIA", "SIP/2.0/UDP z")
        assert h.get_all("via") == ["SIP/2.0/UDP z"]
        h.set("Expires", "60")
        assert h.items()[-1] == ("Expires", "60")

    def test_add_after_same_header_or_first(self) -> None:
        h = self.make()
        h.add("Via", "SIP/2.0/UDP last")
        assert h.items()[2] == ("Via", "SIP/2.0/UDP last")
        h.add("Via", "SIP/2.0/UDP top", first=True)
        assert h.get("via") == "SIP/2.0/UDP top"
        h.add("Record-Route", "<sip:p;lr>", first=True)
        assert h.items()[0] == ("Record-Route", "<sip:p;lr>")
        h.add("Max-Forwards", "70")
        assert h.items()[-1] == ("Max-Forwards", "70")

    def test_remove_and_remove_first(self) -> None:
        h = self.make()
        assert h.remove_first("via") == "SIP/2.0/UDP a;branch=z9hG4bK1"
        assert h.get_all("via")[0] == "SIP/2.0/UDP b;branch=z9hG4bK2"
        assert h.remove_first("via") == "SIP/2.0/UDP b;branch=z9hG4bK2"
        assert h.count("via") == 1
        assert h.remove("V") == 1
        assert h.remove("via") == 0
        assert h.remove_first("via") is None

    def test_replace_first(self) -> None:
        h = self.make()
        h.replace_first("via", "SIP/2.0/UDP a;branch=z9hG4bK1;received=10.0.0.1")
        assert h.get_all("via")[:2] == [
            "SIP/2.0/UDP a;branch=z9hG4bK1;received=10.0.0.1",
            "SIP/2.0/UDP b;branch=z9hG4bK2",
        ]
        h.replace_first("To", "<sip:carol@example.com>")
        assert h.get("to") == "<sip:carol@example.com>"
        h.replace_first("Subject", "new")
        assert h.get("subject") == "new"

    @pytest.mark.parametrize(
        ("name", "value"), [("Bad Name", "x"), ("", "x"), ("X", "a\r\nInjected: 1"), ("X", "a\n")]
    )
    def test_rejects_injection(self, name: str, value: str) -> None:
        h = Headers()
        with pytest.raises(ValueError):
            h.add(name, value)
        with pytest.raises(ValueError):
            h.set(name, value)

    def test_equality_ignores_name_spelling(self) -> None:
        assert Headers([("v", "x"), ("To", "y")]) == Headers([("Via", "x"), ("TO", "y")])
        assert Headers([("To", "y"), ("v", "x")]) != Headers([("Via", "x"), ("TO", "y")])
        assert Headers() != "x"

    def test_copy_is_independent(self) -> None:
        h = self.make()
        dup = h.copy()
        dup.remove("via")
        assert h.count("via") == 2
        assert "Headers(" in repr(h)

    def test_memo_is_forgotten_on_change(self) -> None:
        h = self.make()
        calls: list[int] = []

        def compute() -> int:
            calls.append(1)
            return len(calls)

        assert h.memo("x", compute) == 1
        assert h.memo("x", compute) == 1
        h.add("Subject", "s")
        assert h.memo("x", compute) == 2


class TestParams:
    def test_lws_and_quoted_values(self) -> None:
        text = ' ;  tag = abc ; lr ;x="a;b\\" c"; received=[2001:db8::1]'
        assert parse_params(text, 0, "t") == {
            "tag": "abc",
            "lr": None,
            "x": '"a;b\\" c"',
            "received": "[2001:db8::1]",
        }
        assert unquote_value('"a;b\\" c"') == 'a;b" c'
        assert unquote_value("plain") == "plain"

    @pytest.mark.parametrize("text", [";", ";;", "; =x", ";a=", ";a=b c", "junk", ";a=<x>"])
    def test_malformed(self, text: str) -> None:
        with pytest.raises(SipParseError):
            parse_params(text, 0, "t")


class TestAddress:
    def test_name_addr(self) -> None:
        a = Address.parse('"Alice \\"A\\"" <sip:alice@example.com;lr>;tag=1928;expires=60')
        assert a.display_name == 'Alice "A"'
        assert a.uri == Uri.parse("sip:alice@example.com;lr")
        assert a.tag == "1928" and a.expires == 60
        assert str(a) == '"Alice \\"A\\"" <sip:alice@example.com;lr>;tag=1928;expires=60'

    def test_token_display_name(self) -> None:
        a = Address.parse("Alice  Smith <sip:alice@example.com>")
        assert a.display_name == "Alice Smith"
        assert Address.parse("caller<sip:c@example.com>").display_name == "caller"

    def test_addr_spec_params_belong_to_the_header(self) -> None:
        a = Address.parse("sip:alice@example.com;tag=x;q=0.7")
        assert a.display_name is None
        assert a.uri.params == {}
        assert a.params == {"tag": "x", "q": "0.7"}
        assert a.q == 0.7
        assert str(a) == "<sip:alice@example.com>;tag=x;q=0.7"

    def test_quoted_param_with_angle_brackets_in_addr_spec(self) -> None:
        a = Address.parse('sip:a@b;+sip.instance="<urn:uuid:1>"')
        assert a.params == {"+sip.instance": '"<urn:uuid:1>"'}

    def test_empty_quoted_display_name(self) -> None:
        a = Address.parse('"" <sip:a@b>')
        assert a.display_name == ""
        assert str(a) == '"" <sip:a@b>'

    def test_numeric_accessors(self) -> None:
        a = Address.parse("<sip:a@b>;expires=99999999999999999999;q=1")
        assert a.expires == 2**32 - 1 and a.q == 1.0
        assert Address.parse("<sip:a@b>").expires is None
        assert Address.parse("<sip:a@b>").q is None
        for bad in ("<sip:a@b>;expires=-1", "<sip:a@b>;q=2", "<sip:a@b>;q=x"):
            with pytest.raises(SipParseError):
                (Address.parse(bad).expires, Address.parse(bad).q)

    def test_param_lookup_and_copy(self) -> None:
        a = Address.parse("<sip:a@b>;TAG=x")
        assert a.param("tag") == "x" and a.tag == "x"
        dup = a.copy()
        dup.params["x"] = None
        assert "x" not in a.params
        assert a == Address.parse("<sip:a@b>;tag=x")
        assert a != Address.parse("<sip:a@b>;tag=y")
        assert a != "x"
        assert hash(a) == hash(dup)
        assert repr(a) == "Address('<sip:a@b>;TAG=x')"

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "   ",
            '"unterminated <sip:a@b>',
            '"name" sip:a@b',
            "Bell, Alexander <sip:a@b>",
            "< sip:a@b >",
            "<sip:a@b",
            "sip:a@b?Route=x",
            "<sip:a@b>;;",
            "<sip:a@b> junk",
            "<>",
        ],
    )
    def test_malformed(self, text: str) -> None:
        with pytest.raises(SipParseError) as info:
            Address.parse(text)
        assert info.value.status == 400


class TestVia:
    def test_parse_with_lws(self) -> None:
        v = Via.parse("SIP  /   2.0 /UDP    192.0.2.2 : 5070 ;branch=z9hG4bK77;rport")
        assert (v.protocol, v.version, v.transport) == ("SIP", "2.0", "UDP")
        assert v.sent_by == ("192.0.2.2", 5070)
        assert v.branch == "z9hG4bK77" and v.has_rfc3261_branch
        assert v.rport_requested and v.rport is None
        assert str(v) == "SIP/2.0/UDP 192.0.2.2:5070;branch=z9hG4bK77;rport"

    def test_ipv6_received_and_rport(self) -> None:
        v = Via.parse("SIP/2.0/tcp [2001:db8::9:1];received=[2001:db8::9:255];rport=5071")
        assert v.transport == "TCP" and v.host == "2001:db8::9:1" and v.port is None
        assert v.received == "2001:db8::9:255"
        assert v.rport == 5071
        assert str(v) == "SIP/2.0/TCP [2001:db8::9:1];received=[2001:db8::9:255];rport=5071"

    def test_build_and_copy(self) -> None:
        v = Via("udp", "10.0.0.1", 5060, {"branch": new_branch()})
        assert v.branch is not None and v.branch.startswith(BRANCH_MAGIC) and len(v.branch) > 7
        dup = v.copy()
        dup.params["received"] = "1.2.3.4"
        assert v.received is None and v != dup and v == v.copy()
        assert hash(v) == hash(v.copy())
        assert v.param("BRANCH") == v.branch
        assert repr(v).startswith("Via('SIP/2.0/UDP 10.0.0.1:5060;branch=")
        assert not Via("UDP", "h", params={"branch": "z9hG4bK"}).has_rfc3261_branch
        assert not Via("UDP", "h").has_rfc3261_branch

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0 UDP host",
            "SIP/2.0/UDP host;;",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP host:123456789012345678901234567890",
            "SIP/2.0/UDP [zz]",
            "SIP/2.0/UDP host junk",
        ],
    )
    def test_malformed(self, text: str) -> None:
        with pytest.raises(SipParseError):
            Via.parse(text)

    def test_bad_rport(self) -> None:
        with pytest.raises(SipParseError):
            Via.parse("SIP/2.0/UDP h;rport=x").rport  # noqa: B018
        with pytest.raises(SipParseError):
            Via.parse("SIP/2.0/UDP h;rport=" + "9" * 5000).rport  # noqa: B018


def test_tags_and_branches_are_unique() -> None:
    assert len({new_tag() for _ in range(100)}) == 100
    assert len({new_branch() for _ in range(100)}) == 100


# --- properties ---------------------------------------------------------------------------

_token = st.text(alphabet="abcXYZ019-.!%*_+`'~", min_size=1, max_size=10)
_params = st.dictionaries(
    _token,
    st.one_of(
        st.none(),
        _token,
        st.text(alphabet='ab c;,<>\\"é', max_size=8).map(
            lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
        ),
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.none(), st.text(alphabet='abc XYZ,;<>"\\é\x01', max_size=12)),
    st.sampled_from(["sip:alice@example.com", "sips:[2001:db8::1]:5061;lr", "tel:+123", "urn:x:y"]),
    _params,
)
def test_address_round_trip(display: str | None, uri: str, params: dict[str, str | None]) -> None:
    a = Address(Uri.parse(uri), display, params)
    again = Address.parse(str(a))
    assert again == a
    assert str(again) == str(a)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["UDP", "TCP", "TLS", "WS", "X-NEW"]),
    st.one_of(st.ip_addresses().map(str), st.just("host.example.com")),
    st.one_of(st.none(), st.integers(0, 65535)),
    _params,
)
def test_via_round_trip(
    transport: str, host: str, port: int | None, params: dict[str, str | None]
) -> None:
    v = Via(transport, host, port, params)
    assert Via.parse(str(v)) == v


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=' \t"<>;,=:@[]\\abcsip/2.0UDP', max_size=50))
def test_arbitrary_values_raise_only_sip_parse_error(text: str) -> None:
    for parse in (Address.parse, Via.parse):
        with contextlib.suppress(SipParseError):
            parse(text)
    split_list(text)


def _address_outcome(parse: object, text: str) -> tuple[str, object]:
    try:
        a = parse(text)  # type: ignore[operator]
    except SipParseError as exc:
        return ("error", exc.status)
    return ("ok", (a.display_name, str(a.uri), a.params, str(a)))


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=' \t"<>;=\\abc:@sip,', max_size=40))
def test_address_fast_path_agrees_with_the_general_parser(text: str) -> None:
    assert _address_outcome(Address.parse, text) == _address_outcome(Address.parse_general, text)


@pytest.mark.parametrize(
    "text",
    [
        '"Alice" <sip:a@b>;tag=1',
        ' "A"<sip:a@b>',
        "<sip:a@b>",
        '"A\\"B" <sip:a@b>',
        "A <sip:a@b>",
        "<sip:a@b",
        "< sip:a@b>",
        '"A" <sip:a@b> ;tag = 1 ; lr',
        "<sip:a@b>junk",
    ],
)
def test_address_fast_path_examples(text: str) -> None:
    assert _address_outcome(Address.parse, text) == _address_outcome(Address.parse_general, text)


def _via_outcome(parse: object, text: str) -> tuple[str, object]:
    try:
        v = parse(text)  # type: ignore[operator]
    except SipParseError as exc:
        return ("error", exc.status)
    return ("ok", (v.protocol, v.version, v.transport, v.host, v.port, v.params, str(v)))


_VIA_ALPHABET = ' \t;=:.[]"SIP/2.0UDPTCPudpbranchz9hG4bK1rport05'


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet=_VIA_ALPHABET, max_size=40)
    | st.text(alphabet=_VIA_ALPHABET, max_size=30).map(lambda t: "SIP/2.0/UDP h" + t)
)
def test_via_fast_path_agrees_with_the_general_parser(text: str) -> None:
    assert _via_outcome(Via.parse, text) == _via_outcome(Via.parse_general, text)


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP pc33.example.com:5060;branch=z9hG4bK776;rport",
        "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;received=[2001:db8::1];rport=5060",
        "SIP/2.0/udp h;branch=z9hG4bK1",
        "SIP/2.0/TCP h:65536;branch=z9hG4bK1",
        "SIP/2.0/TCP h:99999",
        "SIP/2.0/TCP h:123456",
        "SIP/2.0/TCP h:05060",
        "SIP/2.0/TCP -h",
        "SIP/2.0/TCP h;branch=",
        "SIP/2.0/TCP h;branch=a;branch=b",
        "SIP/2.0/TCP h;;x",
        "SIP/2.0/TCP [::1]:5060;x",
        "sip/2.0/TCP h",
        "SIP/2.0/TCP h ; branch = x",
    ],
)
def test_via_fast_path_examples(text: str) -> None:
    assert _via_outcome(Via.parse, text) == _via_outcome(Via.parse_general, text)


def _params_outcome(parse: object, text: str) -> tuple[str, object]:
    try:
        return ("ok", parse(text, 0, "test"))  # type: ignore[operator]
    except SipParseError as exc:
        return ("error", exc.status)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=' \t";=\\abc:[]%.', max_size=40))
def test_params_fast_path_agrees_with_the_general_parser(text: str) -> None:
    assert _params_outcome(parse_params, text) == _params_outcome(parse_params_general, text)
    assert _params_outcome(parse_params, ";" + text) == _params_outcome(
        parse_params_general, ";" + text
    )


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(["", '"A" ', ' "" ', "\t"]),
    st.text(alphabet="ab1:@.;=[]%>", max_size=25),
    st.text(alphabet='ab1;=> \t"', max_size=12),
)
def test_name_addr_fast_path_agrees_with_the_general_parser(
    display: str, uri: str, params: str
) -> None:
    # the one-match path for ["name"] <sip:...>;params (ports, IPv6, URI parameters)
    text = f"{display}<sip:{uri}>{params}"
    assert _address_outcome(Address.parse, text) == _address_outcome(Address.parse_general, text)


@pytest.mark.parametrize(
    "text",
    [
        "<sip:a@b:65536>",
        "<sip:a@b:99999>;tag=1",
        "<sip:a@[::1]:5060;lr>;tag=x;tag=y",
        '"B" <sips:a:pw@b;transport=tcp>;expires=0;q=0.5',
        "<sip:a@b;x=>;y",
    ],
)
def test_name_addr_fast_path_examples(text: str) -> None:
    assert _address_outcome(Address.parse, text) == _address_outcome(Address.parse_general, text)
