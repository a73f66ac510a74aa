"""Baseline for bench_relay.py: a pure-Python RTP relay on the stdlib asyncio loop.

    python bench/asyncio_relay.py PORT_LO SESSIONS PEER_PORT

Same layout as c_relay.c: session i has legs on PORT_LO + 4i and PORT_LO + 4i + 2; a packet
on one leg goes out of the other to 127.0.0.1:PEER_PORT. Prints "ready"; runs until killed.
"""

from __future__ import annotations

import asyncio
import resource
import sys


class Leg(asyncio.DatagramProtocol):
    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.transport: asyncio.DatagramTransport | None = None
        self.other: Leg | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        other = self.other
        if other is not None and other.transport is not None:
            other.transport.sendto(data, self.peer)


async def main(lo: int, sessions: int, peer_port: int) -> None:
    loop = asyncio.get_running_loop()
    peer = ("127.0.0.1", peer_port)
    for i in range(sessions):
        legs = []
        for j in range(2):
            port = lo + 4 * i + 2 * j
            _, leg = await loop.create_datagram_endpoint(
                lambda: Leg(peer), local_addr=("127.0.0.1", port)
            )
            legs.append(leg)
        legs[0].other, legs[1].other = legs[1], legs[0]
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
