"""RTP relay benchmark: pbxcore's RtpRelay beside a plain C loop, asyncio and rtpengine.

    python bench/bench_relay.py [--seconds 5] [--repeat 3] [--skip rtpengine] [--capacity]
                                [--sessions]

Each relay runs in its own process pinned to CPU 1; the generator (bench/rtp_gen.c, built
here with bench/c_relay.c) runs on CPU 0, sends 200-byte RTP packets and counts what comes
back. The figure is packets forwarded per CPU-second of the relay process (utime + stime
from /proc, all threads). Modes:

- paced N: N streams (N/2 sessions, both directions) at 50 packets/s each;
- burst: 500 calls (1,000 streams), 32 packets at a time, each burst waited for (the mode
  in which rtpengine 10.5 keeps reading its sockets).

--capacity searches the largest number of G.711 sessions (2 x 50 pps) RtpRelay holds on one
core under 0.1 % loss. --sessions measures memory per session and setup+teardown rate.
Nothing is asserted: the ratios are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pbxcore.media import RtpRelay

HERE = Path(__file__).resolve().parent
RELAY_CPU = "1"
GEN_CPU = "0"
TICK = os.sysconf("SC_CLK_TCK")


def raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 70000
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, hard), max(want, hard)))
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (all threads)


def free_port() -> int:
    """A free port below the relays' ranges (which start at 10000)."""
    for _ in range(100):
        port = random.randrange(5000, 10000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def free_range(count: int, top: int = 32000) -> int:
    """An even base port with `count` ports above it that are free right now (below the
    ephemeral range when they fit there, else up to 65534)."""
    if count > top - 10000:
        top = 65534
    if count > top - 10000:
        raise ValueError(f"{count} ports do not fit in 10000-{top}")
    for _ in range(50):
        lo = random.randrange(10000, top - count) & ~1
        socks = []
        try:
            for p in range(lo, lo + count, 97):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return lo
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def build(tmp: Path) -> dict[str, Path]:
    out = {}
    for name in ("rtp_gen", "c_relay"):
        exe = tmp / name
        subprocess.run(["cc", "-O2", "-o", str(exe), str(HERE / f"{name}.c")], check=True)
        out[name] = exe
    return out


# ---------------------------------------------------------------- relays under test


class Relay:
    name = "?"

    def __init__(self, sessions: int, peer_port: int, tools: dict[str, Path]) -> None:
        self.sessions = sessions
        self.peer_port = peer_port
        self.tools = tools
        self.proc: subprocess.Popen[str] | None = None
        self.ports: list[int] = []

    def _spawn(self, argv: list[str]) -> subprocess.Popen[str]:
        self.proc = subprocess.Popen(
            ["taskset", "-c", RELAY_CPU, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        return self.proc

    def _wait_ready(self) -> list[str]:
        assert self.proc is not None and self.proc.stdout is not None
        lines = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} exited before it was ready")
            if line.strip() == "ready":
                return lines
            lines.append(line)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class PbxRelay(Relay):
    name = "pbxcore RtpRelay"

    def start(self) -> None:
        lo = free_range(self.sessions * 4 + 4)
        self._spawn(
            [sys.executable, str(Path(__file__)), "--serve", str(self.sessions),
             str(self.peer_port), str(lo)]
        )  # fmt: skip
        self.ports = json.loads(self._wait_ready()[-1])


class CRelay(Relay):
    name = "C recvfrom/sendto loop"

    def start(self) -> None:
        lo = free_range(self.sessions * 4 + 4)
        self._spawn([str(self.tools["c_relay"]), str(lo), str(self.sessions), str(self.peer_port)])
        self.ports = [int(p) for p in self._wait_ready()]


class AsyncioRelay(Relay):
    name = "Python asyncio relay"

    def start(self) -> None:
        lo = free_range(self.sessions * 4 + 4)
        self._spawn(
            [sys.executable, str(HERE / "asyncio_relay.py"), str(lo), str(self.sessions),
             str(self.peer_port)]
        )  # fmt: skip
        self.ports = [int(p) for p in self._wait_ready()]


def bencode(v: object) -> bytes:
    if isinstance(v, bytes):
        return str(len(v)).encode() + b":" + v
    if isinstance(v, str):
        return bencode(v.encode())
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        return b"d" + b"".join(bencode(k) + bencode(x) for k, x in sorted(v.items())) + b"e"
    raise TypeError(type(v))


def bdecode(data: bytes, i: int = 0) -> tuple[object, int]:
    c = data[i : i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1 : end]), end + 1
    if c in (b"l", b"d"):
        i += 1
        items = []
        while data[i : i + 1] != b"e":
            item, i = bdecode(data, i)
            items.append(item)
        if c == b"l":
            return items, i + 1
        return {items[k]: items[k + 1] for k in range(0, len(items), 2)}, i + 1
    colon = data.index(b":", i)
    n = int(data[i:colon])
    return data[colon + 1 : colon + 1 + n], colon + 1 + n


class RtpEngine(Relay):
    name = "rtpengine 10.5 (userspace)"

    def start(self) -> None:
        exe = shutil.which("rtpengine")
        if exe is None:
            raise RuntimeError("rtpengine is not installed (Debian rtpengine-daemon)")
        ng = free_port()
        lo = free_range(self.sessions * 4 + 200, top=65000)
        self._spawn(
            [exe, "--config-file=none", "--table=-1", "--interface=127.0.0.1",
             f"--listen-ng=127.0.0.1:{ng}", "--num-threads=1", "--foreground",
             "--log-stderr", "--log-level=2", f"--port-min={lo}",
             f"--port-max={lo + self.sessions * 4 + 199}"]
        )  # fmt: skip
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(2)
        for _ in range(50):  # wait for the control socket
            try:
                self._ng(sock, ng, {"command": "ping"})
                break
            except OSError:
                time.sleep(0.1)
        sdp = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {self.peer_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n"
            "a=sendrecv\r\n"
        )
        for i in range(self.sessions):
            # rtcp-mux on both sides: one socket per leg, as the other relays here
            call = {"call-id": f"bench-{i}", "from-tag": f"f{i}", "sdp": sdp,
                    "rtcp-mux": ["require"]}  # fmt: skip
            offer = self._ng(sock, ng, {"command": "offer", **call})
            answer = self._ng(sock, ng, {"command": "answer", "to-tag": f"t{i}", **call})
            self.ports += [_m_port(answer["sdp"]), _m_port(offer["sdp"])]
        sock.close()

    @staticmethod
    def _ng(sock: socket.socket, port: int, msg: dict[str, object]) -> dict[str, bytes]:
        cookie = os.urandom(6).hex().encode()
        sock.sendto(cookie + b" " + bencode(msg), ("127.0.0.1", port))
        while True:
            data = sock.recv(65536)
            if data.startswith(cookie + b" "):
                reply, _ = bdecode(data, len(cookie) + 1)
                assert isinstance(reply, dict)
                if reply.get(b"result") != b"ok" and msg["command"] != "ping":
                    raise RuntimeError(f"rtpengine: {reply}")
                return {k.decode(): v for k, v in reply.items()}


def _m_port(sdp: bytes) -> int:
    for line in sdp.decode().splitlines():
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise RuntimeError("no m=audio in rtpengine's SDP")


# ---------------------------------------------------------------- measurement


def measure(relay: Relay, gen: Path, mode: str, seconds: float) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".ports", delete=False) as f:
        f.write("\n".join(map(str, relay.ports)) + "\n")
        ports_file = f.name
    try:
        # warm-up: let every leg latch and every socket get its first packet
        subprocess.run(
            ["taskset", "-c", GEN_CPU, str(gen), str(relay.peer_port), ports_file, "burst",
             "0.5", "32"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        cpu0 = cpu_seconds(relay.pid)
        wall0 = time.monotonic()
        out = subprocess.run(
            ["taskset", "-c", GEN_CPU, str(gen), str(relay.peer_port), ports_file, mode,
             str(seconds)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        cpu = cpu_seconds(relay.pid) - cpu0
        wall = time.monotonic() - wall0
    finally:
        os.unlink(ports_file)
    vals = dict(kv.split("=") for kv in out.split())
    sent, received = int(vals["sent"]), int(vals["received"])
    return {
        "sent": sent,
        "received": received,
        "loss": 1 - received / sent if sent else 0.0,
        "cpu": cpu,
        "wall": wall,
        "pps_per_cpu": received / cpu if cpu > 0 else float("inf"),
    }


def run_case(kind: type[Relay], sessions: int, mode: str, seconds: float,
             tools: dict[str, Path]) -> dict[str, float] | None:  # fmt: skip
    relay = kind(sessions, free_port(), tools)
    try:
        relay.start()
        return measure(relay, tools["rtp_gen"], mode, seconds)
    except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
        print(f"  {kind.name}: failed: {exc}", flush=True)
        return None
    finally:
        relay.stop()


def throughput(args: argparse.Namespace, tools: dict[str, Path]) -> None:
    kinds: list[type[Relay]] = [PbxRelay, CRelay, AsyncioRelay, RtpEngine]
    kinds = [k for k in kinds if not any(s in k.name.lower() for s in args.skip)]
    cases = [("paced 1,000 streams", 500, "paced"), ("paced 10,000 streams", 5000, "paced"),
             ("burst x32, 500 calls", 500, "burst")]  # fmt: skip
    for title, sessions, mode in cases:
        print(f"\n## {title} ({sessions} sessions, 200-byte packets, {args.seconds:.0f} s, "
              f"median of {args.repeat})")  # fmt: skip
        print(f"{'relay':28} {'sent':>9} {'fwd':>9} {'loss':>7} {'cpu s':>6} {'pkt/cpu-s':>10}")
        runs: dict[str, list[dict[str, float]]] = {k.name: [] for k in kinds}
        for i in range(args.repeat):  # interleaved, so that machine noise hits all alike
            for kind in kinds if i % 2 == 0 else kinds[::-1]:
                r = run_case(kind, sessions, mode, args.seconds, tools)
                if r is not None:
                    runs[kind.name].append(r)
        results: dict[str, dict[str, float]] = {}
        for kind in kinds:
            got = sorted(runs[kind.name], key=lambda r: r["pps_per_cpu"])
            if not got:
                continue
            r = results[kind.name] = got[len(got) // 2]
            spread = ", ".join(f"{x['pps_per_cpu']:.0f}" for x in got)
            print(f"{kind.name:28} {r['sent']:>9.0f} {r['received']:>9.0f} "
                  f"{100 * r['loss']:>6.2f}% {r['cpu']:>6.2f} {r['pps_per_cpu']:>10.0f}"
                  f"   runs: {spread}", flush=True)  # fmt: skip
        ours = results.get(PbxRelay.name)
        if ours:
            for kind in kinds[1:]:
                base = results.get(kind.name)
                if base:
                    ratio = ours["pps_per_cpu"] / base["pps_per_cpu"]
                    print(f"  ratio RtpRelay / {kind.name}: {ratio:.2f}x")


def capacity(args: argparse.Namespace, tools: dict[str, Path]) -> None:
    print("\n## capacity: G.711 sessions (2 x 50 pps) on one core under 0.1 % loss")
    # 4 ports a session (RTP+RTCP on two legs) must fit in ports 10000-65534
    lo, hi, best = 250, (65534 - 10000) // 4 - 2, 0
    sessions, failed = 1000, False
    while lo <= hi:
        r = run_case(PbxRelay, sessions, "paced", args.seconds, tools)
        ok = r is not None and r["loss"] < 0.001
        print(f"  {sessions:6} sessions: loss {100 * r['loss'] if r else -1:.3f}% "
              f"relay cpu {r['cpu'] / r['wall'] if r else 0:.0%} -> {'ok' if ok else 'no'}",
              flush=True)  # fmt: skip
        if ok:
            best, lo = sessions, sessions + 1
        else:
            hi, failed = sessions - 1, True
        if hi - lo < max(100, best // 20):
            break
        sessions = (lo + hi) // 2 if failed else min(sessions * 2, hi)
    print(f"  capacity: about {best} sessions ({best * 100} packets/s relayed)")


def session_costs() -> None:
    print("\n## sessions: memory per session and setup+teardown rate")
    n = 4000  # 4 sockets each: stays under a 20,000 open-files limit

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    with RtpRelay(ports=(20000, 20000 + 4 * n + 3)) as relay:
        before = rss()
        t0 = time.perf_counter()
        sessions = [relay.create_session() for _ in range(n)]
        fresh = time.perf_counter() - t0
        for s in sessions:
            s.a.update(remote=("127.0.0.1", 9), law="ulaw")
        after = rss()
        print(
            f"  {n} sessions: {(after - before) / n:.0f} bytes of process memory per session "
            "(native session + Python handles; kernel socket buffers not included)"
        )
        print(f"  setup with new sockets (socket+bind x4): {n / fresh:,.0f} sessions/s")
        for s in sessions:
            relay.delete_session(s)
        rounds = 20000
        t0 = time.perf_counter()
        for _ in range(rounds):
            relay.delete_session(relay.create_session())
        dt = time.perf_counter() - t0
        print(
            f"  setup+teardown: {rounds / dt:,.0f} sessions/s (RTP+RTCP on both legs; the "
            "sockets of deleted sessions are pooled)"
        )
        t0 = time.perf_counter()
        for _ in range(rounds):
            relay.delete_session(relay.create_session(rtcp_mux=True))
        dt = time.perf_counter() - t0
        print(f"  setup+teardown, rtcp-mux: {rounds / dt:,.0f} sessions/s")


def serve(sessions: int, peer_port: int, lo: int) -> None:
    """The RtpRelay side of a benchmark run, in its own process."""
    raise_nofile()
    relay = RtpRelay(ports=(lo, lo + 4 * sessions + 3))
    relay.start()
    ports = []
    for _ in range(sessions):
        s = relay.create_session(rtcp_mux=True)  # one socket per leg, as the baselines
        s.a.update(remote=("127.0.0.1", peer_port))
        s.b.update(remote=("127.0.0.1", peer_port))
        ports += [s.a.local_port, s.b.local_port]
    print(json.dumps(ports))
    print("ready", flush=True)
    sys.stdin.read()  # until the benchmark kills us
    relay.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=1, help="runs per relay; the median is shown")
    ap.add_argument("--skip", nargs="*", default=[], help="relay names to skip (e.g. rtpengine)")
    ap.add_argument("--capacity", action="store_true")
    ap.add_argument("--sessions", action="store_true")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--serve", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    raise_nofile()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    print(
        f"# relay benchmark: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, {cpu}, Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tools = build(Path(tmp))
        if not args.no_throughput:
            throughput(args, tools)
        if args.capacity:
            capacity(args, tools)
    if args.sessions:
        session_costs()


if __name__ == "__main__":
    main()
