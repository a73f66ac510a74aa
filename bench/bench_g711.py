"""G.711 benchmark: pbxcore against CPython's audioop, in the same run.

    python bench/bench_g711.py            # prints a table with the ratios
    pytest bench/bench_g711.py --benchmark-only --benchmark-group-by=param:case

Bulk: 1 MiB of input per call. Per-packet: one 20 ms packet (160 samples) per call, cycling
through 1,000 distinct packets so that neither caches nor the branch predictor learn one.
audioop has no μ-law↔A-law function: its baseline there is what audioop users write,
``lin2alaw(ulaw2lin(x))``; it has no ``*_into`` either, so those rows compare against the
allocating audioop call. Rows ``lin2ulaw[sse2]`` etc. force each encode kernel this CPU can
run (the plain rows use the one chosen at import).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from _common import machine, time_per_call
from pbxcore import _g711, g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python 3.13+: the audioop-lts backport, if installed
        audioop = None  # type: ignore[assignment]

Fn = Callable[[bytes], bytes]
BULK_BYTES = 1 << 20
PACKETS = 1000
PACKET_SAMPLES = 160

rng = np.random.default_rng(711)
# speech-like amplitudes: mostly small, sometimes loud
_pcm = np.clip(rng.laplace(0, 3000, BULK_BYTES), -32768, 32767).astype("<i2").tobytes()
BULK_PCM = _pcm[:BULK_BYTES]
BULK_CODES = rng.integers(0, 256, BULK_BYTES, dtype=np.uint8).tobytes()
PACKET_PCM = [
    BULK_PCM[i * 2 * PACKET_SAMPLES : (i + 1) * 2 * PACKET_SAMPLES] for i in range(PACKETS)
]
PACKET_CODES = [BULK_CODES[i * PACKET_SAMPLES : (i + 1) * PACKET_SAMPLES] for i in range(PACKETS)]


def _baselines() -> dict[str, Fn]:
    if audioop is None:
        return {}
    a = audioop
    return {
        "lin2ulaw": lambda x: a.lin2ulaw(x, 2),
        "lin2alaw": lambda x: a.lin2alaw(x, 2),
        "ulaw2lin": lambda x: a.ulaw2lin(x, 2),
        "alaw2lin": lambda x: a.alaw2lin(x, 2),
        "ulaw2alaw": lambda x: a.lin2alaw(a.ulaw2lin(x, 2), 2),
        "alaw2ulaw": lambda x: a.lin2ulaw(a.alaw2lin(x, 2), 2),
    }


FUNCTIONS = ["lin2ulaw", "lin2alaw", "ulaw2lin", "alaw2lin", "ulaw2alaw", "alaw2ulaw"]


def _into(name: str, size: int) -> Fn:
    into = getattr(g711, f"{name}_into")
    dst = bytearray(size)

    def run(x: bytes) -> bytes:
        into(x, dst)
        return x

    return run


def _row(name: str, mode: str, ours: Fn, theirs: Fn | None, label: str | None = None) -> None:
    inputs = _inputs(name, mode)
    t_ours = time_per_call(ours, inputs)
    t_theirs = time_per_call(theirs, inputs) if theirs is not None else float("nan")
    samples = len(inputs[0]) // (2 if name.startswith("lin") else 1)
    print(
        f"{label or name:<18} {mode:<7} {_fmt(mode, samples, t_ours):>14} "
        f"{_fmt(mode, samples, t_theirs):>14} {t_theirs / t_ours:7.1f}x"
    )


def _inputs(name: str, mode: str) -> list[bytes]:
    encode = name.startswith("lin")
    if mode == "bulk":
        return [BULK_PCM if encode else BULK_CODES]
    return PACKET_PCM if encode else PACKET_CODES


def _fmt(mode: str, samples: int, seconds: float) -> str:
    if mode == "bulk":
        return f"{samples / seconds / 1e6:9.0f} MS/s"
    return f"{seconds * 1e9:10.0f} ns"


def main() -> None:
    baselines = _baselines()
    print(f"G.711 benchmark on {machine()}")
    print(f"bulk = {BULK_BYTES} input bytes per call; packet = {PACKET_SAMPLES} samples, "
          f"{PACKETS} distinct packets cycled; encode kernel: {_g711._encode_variant()}")  # fmt: skip
    header = f"{'function':<18} {'mode':<7} {'pbxcore':>14} {'audioop':>14} {'ratio':>8}"
    print(header)
    print("-" * len(header))
    for mode in ("bulk", "packet"):
        for name in FUNCTIONS:
            _row(name, mode, getattr(g711, name), baselines.get(name))
    for name in ("lin2ulaw", "lin2alaw"):
        _row(name, "bulk", _into(name, BULK_BYTES), baselines.get(name), f"{name}_into")
    default = _g711._encode_variant()
    try:
        for variant in _g711._encode_variants():
            _g711._set_encode_variant(variant)
            for name in ("lin2ulaw", "lin2alaw"):
                _row(name, "bulk", getattr(g711, name), baselines.get(name), f"{name}[{variant}]")
    finally:
        _g711._set_encode_variant(default)


# ---- pytest-benchmark face ----


def _cases() -> list[Any]:
    import pytest  # noqa: PLC0415

    return [
        pytest.param(impl, name, mode, id=f"{name}-{mode}-{impl}")
        for mode in ("bulk", "packet")
        for name in FUNCTIONS
        for impl in ("pbxcore", "audioop")
    ]


if "pytest" in sys.modules:
    import pytest

    @pytest.mark.parametrize(("impl", "name", "mode"), _cases())
    def test_g711(benchmark: Any, impl: str, name: str, mode: str) -> None:
        if impl == "audioop":
            if audioop is None:
                pytest.skip("audioop is not available")
            fn = _baselines()[name]
        else:
            fn = getattr(g711, name)
        inputs = _inputs(name, mode)
        benchmark.group = f"{name}-{mode}"

        def run() -> None:
            for x in inputs:
                fn(x)

        benchmark(run)


if __name__ == "__main__":
    main()
