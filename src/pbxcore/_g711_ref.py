"""Pure-Python reference G.711, bit-exact with ITU-T G.191 (``g711.c``).

The same API as the native :mod:`pbxcore._g711`; the test suite runs one test class against
both. It is slow and meant for checking, not for carrying calls.

μ-law ↔ A-law conversion follows *decode-then-encode* with the G.191 algorithms: a code is
expanded to its linear value and compressed in the other law (this is also what
``audioop.ulaw2alaw`` does). It is not G.711's Tables 3/4, which differ on a few codes.
"""

from __future__ import annotations

import array
import sys
from typing import Any

__all__ = [
    "alaw2lin",
    "alaw2lin_into",
    "alaw2ulaw",
    "alaw2ulaw_into",
    "alaw_compress",
    "alaw_expand",
    "lin2alaw",
    "lin2alaw_into",
    "lin2ulaw",
    "lin2ulaw_into",
    "ulaw2alaw",
    "ulaw2alaw_into",
    "ulaw2lin",
    "ulaw2lin_into",
    "ulaw_compress",
    "ulaw_expand",
]


def _to_short(v: int) -> int:
    v &= 0xFFFF
    return v - 0x10000 if v & 0x8000 else v


def ulaw_compress(x: int) -> int:
    """G.191 ``ulaw_compress`` for one int16 sample."""
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    absno = min(absno, 0x1FFF)
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high_nibble = 0x0008 - segno
    low_nibble = 0x000F - ((absno >> segno) & 0x000F)
    code = (high_nibble << 4) | low_nibble
    if x >= 0:
        code |= 0x0080
    return code & 0xFF


def ulaw_expand(code: int) -> int:
    """G.191 ``ulaw_expand`` for one code."""
    sign = -1 if code < 0x80 else 1
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x0007
    segment = exponent + 1
    mantissa &= 0x000F
    step = 4 << segment
    return _to_short(sign * ((0x0080 << exponent) + step * mantissa + step // 2 - 4 * 33))


def alaw_compress(x: int) -> int:
    """G.191 ``alaw_compress`` for one int16 sample."""
    ix = (~x) >> 4 if x < 0 else x >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x0080
    return (ix ^ 0x0055) & 0xFF


def alaw_expand(code: int) -> int:
    """G.191 ``alaw_expand`` for one code."""
    ix = (code ^ 0x0055) & 0x007F
    iexp = ix >> 4
    mant = ix & 0x000F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x0008
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


_ULAW_DEC = [ulaw_expand(c) for c in range(256)]
_ALAW_DEC = [alaw_expand(c) for c in range(256)]
_U2A = bytes(alaw_compress(_ULAW_DEC[c]) for c in range(256))
_A2U = bytes(ulaw_compress(_ALAW_DEC[c]) for c in range(256))


def _check_width(width: int) -> None:
    if width != 2:
        raise ValueError(f"only 16-bit PCM is supported (width=2), got width={width}")


def _view(data: Any) -> memoryview:
    if isinstance(data, str):
        raise TypeError("a bytes-like object is required, not 'str'")
    return memoryview(data).cast("B")


def _pcm_samples(fragment: Any) -> list[int]:
    raw = _view(fragment)
    if len(raw) % 2:
        raise ValueError(f"PCM16 data has an odd length of {len(raw)} bytes")
    samples = array.array("h", bytes(raw))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tolist()


def _pcm_bytes(samples: list[int]) -> bytes:
    return b"".join(s.to_bytes(2, "little", signed=True) for s in samples)


def _write(dst: Any, data: bytes) -> int:
    out = memoryview(dst).cast("B")
    if out.readonly:
        raise TypeError("dst must be a writable buffer")
    if len(out) < len(data):
        raise ValueError(f"dst too small: needs {len(data)} bytes, has {len(out)}")
    out[: len(data)] = data
    return len(data)


def lin2ulaw(fragment: Any, width: int = 2) -> bytes:
    _check_width(width)
    return bytes(ulaw_compress(s) for s in _pcm_samples(fragment))


def lin2alaw(fragment: Any, width: int = 2) -> bytes:
    _check_width(width)
    return bytes(alaw_compress(s) for s in _pcm_samples(fragment))


def ulaw2lin(fragment: Any, width: int = 2) -> bytes:
    _check_width(width)
    return _pcm_bytes([_ULAW_DEC[c] for c in _view(fragment)])


def alaw2lin(fragment: Any, width: int = 2) -> bytes:
    _check_width(width)
    return _pcm_bytes([_ALAW_DEC[c] for c in _view(fragment)])


def ulaw2alaw(fragment: Any) -> bytes:
    return bytes(_view(fragment)).translate(_U2A)


def alaw2ulaw(fragment: Any) -> bytes:
    return bytes(_view(fragment)).translate(_A2U)


def lin2ulaw_into(src: Any, dst: Any) -> int:
    return _write(dst, lin2ulaw(src))


def lin2alaw_into(src: Any, dst: Any) -> int:
    return _write(dst, lin2alaw(src))


def ulaw2lin_into(src: Any, dst: Any) -> int:
    return _write(dst, ulaw2lin(src))


def alaw2lin_into(src: Any, dst: Any) -> int:
    return _write(dst, alaw2lin(src))


def ulaw2alaw_into(src: Any, dst: Any) -> int:
    return _write(dst, ulaw2alaw(src))


def alaw2ulaw_into(src: Any, dst: Any) -> int:
    return _write(dst, alaw2ulaw(src))
