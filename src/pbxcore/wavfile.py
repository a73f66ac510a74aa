"""WAV (RIFF) reading and writing for telephony audio: PCM16, μ-law and A-law.

Written here rather than with the standard library's ``wave`` because prompts for IVR come
as G.711 WAVs too (format tags 6 and 7), which ``wave`` refuses, and because every way a
file can be wrong needs a precise message for the operator who uploaded it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pbxcore import g711

__all__ = ["Encoding", "WavAudio", "parse_wav", "read_wav", "wav_bytes", "write_wav"]

Encoding = Literal["pcm16", "ulaw", "alaw"]

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_ALAW = 0x0006
_WAVE_FORMAT_MULAW = 0x0007
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_TAGS: dict[Encoding, int] = {
    "pcm16": _WAVE_FORMAT_PCM,
    "alaw": _WAVE_FORMAT_ALAW,
    "ulaw": _WAVE_FORMAT_MULAW,
}


@dataclass(frozen=True)
class WavAudio:
    """Audio samples with their format; ``data`` is little-endian PCM16 or G.711 codes."""

    encoding: Encoding
    sample_rate: int
    channels: int
    data: bytes

    @property
    def frames(self) -> int:
        width = 2 if self.encoding == "pcm16" else 1
        return len(self.data) // (width * self.channels)

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    def pcm16(self) -> bytes:
        """The samples as little-endian PCM16 (G.711 is decoded; PCM16 is returned as is)."""
        if self.encoding == "ulaw":
            return g711.ulaw2lin(self.data)
        if self.encoding == "alaw":
            return g711.alaw2lin(self.data)
        return self.data

    def require_telephony(self) -> None:
        """Raise ValueError unless this is mono 8 kHz audio, as a phone call carries."""
        if self.channels != 1:
            raise ValueError(f"WAV has {self.channels} channels: mono audio is required")
        if self.sample_rate != 8000:
            raise ValueError(f"WAV sample rate is {self.sample_rate} Hz: 8000 Hz is required")


def parse_wav(data: bytes) -> WavAudio:
    """Parse a RIFF/WAVE file held in memory; raise ValueError saying what is wrong."""
    if len(data) < 12 or data[0:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV file: no RIFF/WAVE header")
    pos = 12
    fmt: tuple[int, int, int, int, int] | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + size > len(data):
                raise ValueError("WAV fmt chunk is truncated")
            tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from(
                "<HHIIHH", data, body
            )
            if tag == _WAVE_FORMAT_EXTENSIBLE:
                if size < 40:
                    raise ValueError("WAV extensible fmt chunk is truncated")
                (tag,) = struct.unpack_from("<H", data, body + 24)
            fmt = (tag, channels, rate, block_align, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise ValueError("WAV data chunk comes before the fmt chunk")
            available = len(data) - body
            if size > available:
                raise ValueError(
                    f"WAV file is truncated: data chunk declares {size} bytes, {available} present"
                )
            return _audio(fmt, data[body : body + size])
        pos = body + size + (size & 1)  # chunks are padded to even length
    if fmt is None:
        raise ValueError("WAV file has no fmt chunk")
    raise ValueError("WAV file has no data chunk")


def _audio(fmt: tuple[int, int, int, int, int], samples: bytes) -> WavAudio:
    tag, channels, rate, block_align, bits = fmt
    encoding: Encoding
    if tag == _WAVE_FORMAT_PCM:
        if bits != 16:
            raise ValueError(f"WAV is {bits}-bit PCM: 16-bit PCM is required")
        encoding = "pcm16"
    elif tag == _WAVE_FORMAT_MULAW and bits == 8:
        encoding = "ulaw"
    elif tag == _WAVE_FORMAT_ALAW and bits == 8:
        encoding = "alaw"
    else:
        raise ValueError(f"WAV format tag 0x{tag:04x} with {bits} bits is not supported")
    if channels < 1:
        raise ValueError("WAV declares 0 channels")
    if rate < 1:
        raise ValueError("WAV declares a sample rate of 0 Hz")
    width = 2 if encoding == "pcm16" else 1
    if block_align != width * channels:
        raise ValueError(
            f"WAV block align is {block_align}, "
            f"expected {width * channels} for {channels} channel(s)"
        )
    if len(samples) % block_align:
        raise ValueError("WAV data ends in the middle of a sample frame")
    return WavAudio(encoding, rate, channels, samples)


def read_wav(path: str | Path) -> WavAudio:
    """Read and parse a WAV file."""
    return parse_wav(Path(path).read_bytes())


def wav_bytes(audio: WavAudio) -> bytes:
    """Serialize to a canonical RIFF/WAVE file (a fact chunk is added for G.711, as RIFF asks)."""
    width = 2 if audio.encoding == "pcm16" else 1
    block_align = width * audio.channels
    tag = _TAGS[audio.encoding]
    if audio.encoding == "pcm16":
        fmt = struct.pack(
            "<HHIIHH", tag, audio.channels, audio.sample_rate,
            audio.sample_rate * block_align, block_align, 16,
        )  # fmt: skip
        extra = b""
    else:
        fmt = struct.pack(
            "<HHIIHHH", tag, audio.channels, audio.sample_rate,
            audio.sample_rate * block_align, block_align, 8, 0,
        )  # fmt: skip
        extra = b"fact" + struct.pack("<II", 4, audio.frames)
    pad = b"\x00" if len(audio.data) & 1 else b""
    chunks = (
        b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra
        + b"data" + struct.pack("<I", len(audio.data)) + audio.data + pad
    )  # fmt: skip
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def write_wav(path: str | Path, audio: WavAudio) -> None:
    """Write a WAV file."""
    Path(path).write_bytes(wav_bytes(audio))
