"""Concurrent calls with G.711 media both ways through `pbxcore serve`, against a plain C relay.

    python bench/bench_concurrent_calls.py                  # 500, 1000, 2000, 3000, 4000 calls
    python bench/bench_concurrent_calls.py --quick          # < 60 s: 100 and 300 calls
    python bench/bench_concurrent_calls.py --calls 2000 --seconds 10 --setup-rate 150

The same call as bench_calls.py (a SIPp uac extension authenticating with 407, out through
the tenant's route table and trunk to a SIPp uas carrier, set up through the admin API),
but held: SIPp sets up ``--calls`` calls at ``--setup-rate`` per second and holds each one.
Both SDPs (the caller's offer and the carrier's answer) name one UDP port, that of
bench/rtp_gen.c; SIPp logs the relay port of each leg (the 200's SDP to the caller, the
INVITE's to the carrier). Once every call is up, rtp_gen sends G.711-sized RTP (200-byte
packets, 50 per second) into both legs of every call for ``--seconds`` seconds and counts
what the relay forwards back to it: 2 streams per call, the audio of both parties. The loss
is 1 - received/sent; the steps go up until it passes 0.1 % (or a call fails to set up).

Memory per call: the RSS of the pbxcore process with every call up, minus its RSS before
the first call, divided by the number of calls (signalling state, relay sessions, the CDR
row in memory ...).

Baseline, same run, same generator and packet rate: bench/c_relay.c (one epoll loop, one
recvfrom and one sendto a packet, no parsing) with the same number of sessions, through
bench_relay.py's harness. pbxcore's whole process (signalling and relay threads) and the C
relay each run pinned to CPU 1; SIPp and rtp_gen to CPU 0. Printed: loss and relay
CPU-seconds for both, the ratio of packets forwarded per CPU-second, and memory per call.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from _common import free_udp_port, print_run_header, uvloop_wanted
from bench_calls import DIALED, UAC, pbxcore_b2bua, sipp_uas
from bench_relay import CRelay, build, measure, raise_nofile, run_case

FAILURE_LIMIT = 0.001  # RTP loss (and failed call setups) beyond which the steps stop


@dataclass
class Held:
    """Calls held through pbxcore with RTP through both legs, and the C relay beside it."""

    calls: int
    up: int
    loss: float
    cpu: float  # pbxcore's CPU seconds during the RTP run
    wall: float
    received: int
    rss_per_call: float  # bytes
    c_loss: float | None
    c_cpu: float | None
    c_received: int | None

    @property
    def per_cpu(self) -> float:
        return self.received / self.cpu if self.cpu > 0 else 0.0

    @property
    def c_per_cpu(self) -> float | None:
        if self.c_cpu is None or self.c_received is None or self.c_cpu <= 0:
            return None
        return self.c_received / self.c_cpu


class _Legs:
    """What bench_relay.measure needs of a relay: the ports to send to, the generator's
    port (the peer of every leg) and the pid whose CPU time counts."""

    def __init__(self, ports: list[int], peer_port: int, pid: int) -> None:
        self.ports, self.peer_port, self.pid = ports, peer_port, pid


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def logged_ports(folder: Path, pattern: str, prefix: str) -> list[int]:
    ports = []
    for path in folder.glob(pattern):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                ports.append(int(line.split()[-1]))
    return ports


@contextmanager
def held_calls(
    folder: Path,
    port: int,
    csv: Path,
    domain: str,
    gen_port: int,
    calls: int,
    rate: int,
    hold_ms: int,
    cpu: str,
) -> Iterator[subprocess.Popen[bytes]]:
    """SIPp uac setting up ``calls`` calls at ``rate``/s, each held ``hold_ms``."""
    command = [
        "taskset", "-c", cpu, "sipp", f"127.0.0.1:{port}", "-sf", str(UAC), "-inf", str(csv),
        "-s", DIALED, "-i", "127.0.0.1", "-p", str(free_udp_port()), "-set", "mport",
        str(gen_port), "-r", str(rate), "-m", str(calls), "-l", str(calls + 10),
        "-d", str(hold_ms), "-nostdin", "-timeout", f"{hold_ms // 1000 + 60}s",
        "-recv_timeout", "10000", "-trace_logs", "-trace_stat", "-stf",
        str(folder / f"uac_{calls}.csv"), "-fd", "1", "-buff_size", str(4 * 1024 * 1024),
        "-auth_uri", f"{DIALED}@{domain}",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        try:
            process.wait(timeout=hold_ms / 1000 + 90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_step(
    served_pid: int,
    port: int,
    csv: Path,
    domain: str,
    folder: Path,
    calls: int,
    args: argparse.Namespace,
    tools: dict[str, Path],
) -> Held:
    step = folder / f"calls_{calls}"
    step.mkdir(exist_ok=True)
    seen = len(logged_ports(folder, "*_logs.log", "b-leg"))  # the uas's earlier steps
    gen_port = args.gen_port
    setup = calls / args.setup_rate
    hold_ms = int((setup + args.seconds + 8) * 1000)
    rss0 = rss_bytes(served_pid)
    with held_calls(
        step, port, csv, domain, gen_port, calls, args.setup_rate, hold_ms, args.sipp_cpu
    ):
        deadline = time.monotonic() + setup + 30
        a_ports: list[int] = []
        while time.monotonic() < deadline:
            time.sleep(1)
            a_ports = logged_ports(step, "*_logs.log", "a-leg")
            if len(a_ports) >= calls:
                break
        time.sleep(0.5)
        b_ports = logged_ports(folder, "*_logs.log", "b-leg")[seen:]
        rss1 = rss_bytes(served_pid)
        up = min(len(a_ports), len(b_ports))
        legs = _Legs(a_ports + b_ports, gen_port, served_pid)
        result = measure(legs, tools["rtp_gen"], "paced", args.seconds)  # type: ignore[arg-type]
    c = run_case(CRelay, calls, "paced", args.seconds, tools) if args.baseline else None
    return Held(
        calls,
        up,
        result["loss"],
        result["cpu"],
        result["wall"],
        int(result["received"]),
        (rss1 - rss0) / max(1, up),
        None if c is None else c["loss"],
        None if c is None else c["cpu"],
        None if c is None else int(c["received"]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="500,1000,2000,3000,4000")
    parser.add_argument("--seconds", type=float, default=10.0, help="RTP run per step")
    parser.add_argument("--setup-rate", type=int, default=100, help="calls set up per second")
    parser.add_argument("--quick", action="store_true", help="100 and 300 calls, 4 s of RTP")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep logs and SIPp files in this folder")
    parser.add_argument("--server-cpu", default="1")
    parser.add_argument("--sipp-cpu", default="0")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.seconds = "100,300", 4.0
    steps = [int(n) for n in args.calls.split(",")]
    raise_nofile()
    has_uvloop = uvloop_wanted(args.no_uvloop)
    print_run_header()
    print(
        f"pbxcore event loop: {'uvloop' if has_uvloop else 'asyncio'}; calls set up at "
        f"{args.setup_rate}/s and held; RTP 200-byte packets at 50/s into both legs of every "
        f"call for {args.seconds:g} s; pbxcore and the C relay on CPU {args.server_cpu}, SIPp "
        f"and rtp_gen on CPU {args.sipp_cpu}"
    )
    rows: list[Held] = []
    with tempfile.TemporaryDirectory(prefix="bench_concurrent_") as tmp:
        folder = Path(tmp) if args.keep is None else args.keep
        folder.mkdir(parents=True, exist_ok=True)
        tools = build(folder)
        args.gen_port = free_udp_port()
        # 4 ports a call (RTP and RTCP on two legs), below the ephemeral range
        top = max(steps)
        rtp_ports = f"10000-{min(32000, 10000 + 4 * top + 2000)}"
        with (
            sipp_uas(folder, args.sipp_cpu, "-trace_logs", media_port=args.gen_port) as uas,
            pbxcore_b2bua(
                folder, uas, 20, cpu=args.server_cpu, uvloop=has_uvloop, rtp_ports=rtp_ports
            ) as (served, port, domain, csv),
        ):
            print(
                f"\n{'calls':>6} {'up':>6} {'loss':>7} {'cpu s':>6} {'pkt/cpu-s':>10} "
                f"{'KiB/call':>9} | {'C loss':>7} {'C cpu s':>7} {'C pkt/cpu-s':>11} {'ratio':>6}"
            )
            for calls in steps:
                row = run_step(served.pid, port, csv, domain, folder, calls, args, tools)
                rows.append(row)
                c = row.c_per_cpu
                base = (
                    f"{100 * (row.c_loss or 0):>6.3f}% {row.c_cpu or 0:>7.2f} {c or 0:>11,.0f} "
                    f"{row.per_cpu / c if c else float('nan'):>5.2f}x"
                    if row.c_loss is not None
                    else "-"
                )
                print(
                    f"{row.calls:>6} {row.up:>6} {100 * row.loss:>6.3f}% {row.cpu:>6.2f} "
                    f"{row.per_cpu:>10,.0f} {row.rss_per_call / 1024:>9.1f} | {base}",
                    flush=True,
                )
                if row.up < row.calls or row.loss > FAILURE_LIMIT:
                    break
    ok = [r for r in rows if r.up == r.calls and r.loss <= FAILURE_LIMIT]
    best = max(ok, key=lambda r: r.calls) if ok else None
    if best is None:
        print("\nno step held all its calls under 0.1 % loss")
        return
    print(
        f"\nlargest step held under 0.1 % RTP loss: {best.calls} calls "
        f"({2 * best.calls} streams, {best.calls * 100:,} packets/s relayed); "
        f"memory {best.rss_per_call / 1024:.1f} KiB per call"
    )
    if best.c_per_cpu:
        print(
            f"ratio pbxcore/C relay at {best.calls} calls: {best.per_cpu / best.c_per_cpu:.2f}x "
            "packets per CPU-second"
        )


if __name__ == "__main__":
    main()
