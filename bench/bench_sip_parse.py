"""SIP message benchmark: pbxcore.sip against a naive split-on-CRLF dict parser, same run.

    python bench/bench_sip_parse.py       # prints a table with the ratios
    pytest bench/bench_sip_parse.py --benchmark-only --benchmark-group-by=param:case

Cases (all on one message each call, bytes in and bytes out):
- ``invite``: parse + serialize a typical INVITE with SDP (the issue's figure).
- ``invite-fields``: the same, also reading what a transaction/dialog layer reads
  (top Via branch, CSeq, Call-ID, From tag, To tag, Contact).
- ``register``: what the registrar does per REGISTER: parse, ``validate_request``, read the
  contacts and expires, build the 200 with ``make_response`` and serialize it.

The naive baseline splits the header block on CRLF into a dict (no folding, no compact forms,
no multi-valued headers, no validation) and joins it back: a floor, not a competitor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from _common import machine, time_per_call
from pbxcore.sip import make_response, parse_message, validate_request

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@biloxi.example.com>\r\n'
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: Example-Phone/1.2.3\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 238\r\n\r\n"
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)
assert len(INVITE.split(b"\r\n\r\n", 1)[1]) == 238

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKnashds7;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:100@example.com>\r\n"
    b"From: <sip:100@example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b"Contact: <sip:100@192.0.2.4:5060;transport=udp>;expires=300\r\n"
    b'Authorization: Digest username="100", realm="example.com", nonce="ea9c8e88df84f1cec4341a'
    b'e6cbe5a359", uri="sip:example.com", response="dfe56131d1958046689d83306477ecc",'
    b' algorithm=MD5, qop=auth, nc=00000001, cnonce="0a4f113b"\r\n'
    b"User-Agent: Example-Phone/1.2.3\r\n"
    b"Expires: 300\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def naive_round_trip(data: bytes) -> bytes:
    """Split on CRLF into a dict, join back: the floor any real parser is compared with."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    start = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    out = [" ".join(start)]
    out.extend(f"{name}: {value}" for name, value in headers.items())
    out.append("")
    out.append("")
    return "\r\n".join(out).encode("utf-8", "surrogateescape") + body


def naive_fields(data: bytes) -> bytes:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    start = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    # the fields, read as naively: substring searches
    headers["via"].split("branch=", 1)[1].split(";", 1)[0]
    int(headers["cseq"].split()[0])
    headers["call-id"]
    headers["from"].split("tag=", 1)[1]
    headers["to"].partition("tag=")
    headers["contact"].strip("<>")
    out = [" ".join(start)]
    out.extend(f"{name}: {value}" for name, value in headers.items())
    out.append("")
    out.append("")
    return "\r\n".join(out).encode("utf-8", "surrogateescape") + body


def naive_register(data: bytes) -> bytes:
    head, _, _ = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    int(headers["cseq"].split()[0])
    headers["contact"].split(";expires=")
    int(headers["expires"])
    out = ["SIP/2.0 200 OK"]
    for name in ("via", "from", "to", "call-id", "cseq"):
        value = headers[name] + (";tag=abc" if name == "to" else "")
        out.append(f"{name}: {value}")
    out.append(f"contact: {headers['contact']}")
    out.append("content-length: 0")
    out.append("")
    out.append("")
    return "\r\n".join(out).encode()


def pbx_round_trip(data: bytes) -> bytes:
    return bytes(parse_message(data))


def pbx_fields(data: bytes) -> bytes:
    m = parse_message(data)
    m.top_via.branch  # noqa: B018
    m.cseq  # noqa: B018
    m.call_id  # noqa: B018
    m.from_.tag  # noqa: B018
    m.to.tag  # noqa: B018
    m.contact  # noqa: B018
    return bytes(m)


def pbx_register(data: bytes) -> bytes:
    m = parse_message(data)
    assert m.__class__.__name__ == "Request"
    validate_request(m, schemes=("sip", "sips"))  # type: ignore[arg-type]
    for contact in m.contact:
        contact.expires  # noqa: B018
    m.expires  # noqa: B018
    response = make_response(
        m,  # type: ignore[arg-type]
        200,
        to_tag="abc",
        headers=[("Contact", str(m.contact[0])), ("Expires", "300")],
    )
    return bytes(response)


Fn = Callable[[bytes], bytes]
CASES: dict[str, tuple[bytes, Fn, Fn]] = {
    "invite": (INVITE, pbx_round_trip, naive_round_trip),
    "invite-fields": (INVITE, pbx_fields, naive_fields),
    "register": (REGISTER, pbx_register, naive_register),
}


def main() -> None:
    print(f"SIP parse benchmark on {machine()}")
    print(f"INVITE {len(INVITE)} octets (SDP 238), REGISTER {len(REGISTER)} octets")
    header = f"{'case':15} {'pbxcore':>12} {'naive':>12} {'pbxcore':>12} {'naive':>12} {'ratio':>7}"
    print(header)
    print(f"{'':15} {'us/msg':>12} {'us/msg':>12} {'msg/s':>12} {'msg/s':>12} {'':>7}")
    print("-" * len(header))
    for case, (data, pbx, naive) in CASES.items():
        assert parse_message(pbx(data)) is not None and naive(data)
        t_pbx = time_per_call(pbx, [data], 0.3)
        t_naive = time_per_call(naive, [data], 0.3)
        print(
            f"{case:15} {t_pbx * 1e6:12.2f} {t_naive * 1e6:12.2f} {1 / t_pbx:12,.0f}"
            f" {1 / t_naive:12,.0f} {t_naive / t_pbx:6.2f}x"
        )
    print("ratio = pbxcore throughput / naive throughput (below 1: pbxcore is slower)")


# -- pytest-benchmark --------------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - the script does not need pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.mark.parametrize("impl", ["pbxcore", "naive"])
    @pytest.mark.parametrize("case", list(CASES))
    def test_sip_parse(benchmark: Any, case: str, impl: str) -> None:
        data, pbx, naive = CASES[case]
        fn = pbx if impl == "pbxcore" else naive
        benchmark.group = case
        result = benchmark(fn, data)
        assert parse_message(result) is not None


if __name__ == "__main__":
    main()
