"""G.711 μ-law and A-law, bit-exact with ITU-T G.191.

The function names and signatures are those of the standard library's ``audioop`` (removed
in Python 3.13), so code leaving ``audioop`` can switch by changing an import::

    from pbxcore import g711 as audioop

Inputs are any bytes-like object (bytes, bytearray, memoryview, numpy arrays); PCM16 is
little-endian. Outputs are ``bytes``; the ``*_into(src, dst)`` variants write into the
caller's buffer and return the number of bytes written. ``width`` is accepted for drop-in
use and must be 2.

μ-law ↔ A-law uses 256-entry tables built decode-then-encode with the G.191 algorithms
(as ``audioop.ulaw2alaw`` does), not G.711's Tables 3/4.
"""

from pbxcore._g711 import (
    alaw2lin,
    alaw2lin_into,
    alaw2ulaw,
    alaw2ulaw_into,
    lin2alaw,
    lin2alaw_into,
    lin2ulaw,
    lin2ulaw_into,
    ulaw2alaw,
    ulaw2alaw_into,
    ulaw2lin,
    ulaw2lin_into,
)

__all__ = [
    "alaw2lin",
    "alaw2lin_into",
    "alaw2ulaw",
    "alaw2ulaw_into",
    "lin2alaw",
    "lin2alaw_into",
    "lin2ulaw",
    "lin2ulaw_into",
    "ulaw2alaw",
    "ulaw2alaw_into",
    "ulaw2lin",
    "ulaw2lin_into",
]
