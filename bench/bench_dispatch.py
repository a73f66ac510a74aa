"""Cost of one OPTIONS through the stack's dispatch, against a trivial endpoint.

    python bench/bench_dispatch.py

Each OPTIONS datagram (a new branch every time, so each is a new transaction) goes into
the node's transport callback with a stand-in UDP channel that keeps the answer: parse,
stamp Via, validate, match transactions, dispatch, build the 200, serialize, send. The
baseline, measured in the same run, is a trivial endpoint with no dispatch at all: the
same parse_message and make_response calls in a straight line (what any SIP node must
do for an OPTIONS). The ratio is stack time / trivial time (lower is better).

It uses only what the pre-split ``SipServer`` also had (``SipServer(None, listen=[])``,
``on_message``), so the same script measures an older checkout of the project for a
before/after comparison: ``PYTHONPATH=<old checkout>/src python bench/bench_dispatch.py``
with that checkout built.
"""

from __future__ import annotations

import asyncio
import itertools

from _common import machine, time_per_call
from pbxcore.sip import Request, make_response, parse_message
from pbxcore.sip.server import SipServer
from pbxcore.sip.transport import Source


class Channel:
    """Stands in for the UDP endpoint: counts what the node sends."""

    transport = "udp"
    is_open = True

    def __init__(self) -> None:
        self.sent = 0

    def send(self, data: bytes, host: str, port: int) -> bool:
        self.sent += 1
        return True


def options(n: int) -> bytes:
    return (
        "OPTIONS sip:pbx.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-bench-{n};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:monitor@carrier.example>;tag=4711\r\n"
        "To: <sip:pbx.test>\r\n"
        f"Call-ID: options-{n}@carrier.example\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Accept: application/sdp\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def main() -> None:
    channel = Channel()
    server = SipServer(None, listen=[])
    await server.start()
    counter = itertools.count()
    messages = [options(i) for i in range(20_000)]
    source = Source("udp", "198.51.100.7", 5060, channel)  # type: ignore[arg-type]

    def through_stack(data: bytes) -> None:
        server.on_message(data.replace(b"bench-", b"b%d-" % next(counter), 1), source)

    def trivial(data: bytes) -> None:
        request = parse_message(data.replace(b"bench-", b"b%d-" % next(counter), 1))
        assert isinstance(request, Request)
        request.top_via  # noqa: B018 - a node must read the Via to answer
        response = make_response(request, 200, to_tag="x", headers=[("Allow", "OPTIONS")])
        channel.send(bytes(response), "198.51.100.7", 5060)

    rows = []
    for _ in range(3):
        stack_t = time_per_call(through_stack, messages[:2000], min_seconds=0.5)
        trivial_t = time_per_call(trivial, messages[:2000], min_seconds=0.5)
        rows.append((stack_t, trivial_t))
    await server.stop()
    stack_t = sorted(r[0] for r in rows)[1]
    trivial_t = sorted(r[1] for r in rows)[1]
    assert channel.sent > 0
    print(f"machine: {machine()}")
    print("OPTIONS -> 200, one new transaction each (median of 3 best-of-5 runs)")
    print(f"{'case':<28}{'us/msg':>10}{'ratio':>10}")
    print(f"{'stack dispatch':<28}{stack_t * 1e6:>10.2f}{stack_t / trivial_t:>10.2f}")
    print(f"{'trivial endpoint (baseline)':<28}{trivial_t * 1e6:>10.2f}{1.0:>10.2f}")


if __name__ == "__main__":
    asyncio.run(main())
