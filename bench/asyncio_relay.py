"""Baseline for bench_relay.py: a pure-Python RTP relay on the stdlib asyncio loop.

    python bench/asyncio_relay.py PORT_LO SESSIONS PEER_PORT

As c_relay.c: legs take even ports upward from PORT_LO (skipping ports in use), two per
session; a packet on one leg goes out of the other to 127.0.0.1:PEER_PORT. Prints the
ports, one a line, then "ready"; runs until killed.
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
    port = lo
    for _ in range(sessions):
        legs = []
        while len(legs) < 2:
            try:
                _, leg = await loop.create_datagram_endpoint(
                    lambda: Leg(peer), local_addr=("127.0.0.1", port)
                )
            except OSError:
                port += 2
                continue
            print(port)
            port += 2
            legs.append(leg)
        legs[0].other, legs[1].other = legs[1], legs[0]
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
