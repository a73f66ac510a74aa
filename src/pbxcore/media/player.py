"""Prompts for the relay's native player: WAV files or raw 8 kHz PCM16, μ-law or A-law.

The relay's worker thread paces the prompt as 20 ms RTP in the leg's codec; this module only
loads audio into native-order PCM16 once, up front.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pbxcore import g711

if TYPE_CHECKING:
    from pbxcore.media.relay import RelayLeg

__all__ = ["Player", "Prompt"]

SAMPLE_RATE = 8000
_WAVE_PCM = 1
_WAVE_ALAW = 6
_WAVE_MULAW = 7
_WAVE_EXTENSIBLE = 0xFFFE


def _native(pcm16le: bytes) -> bytes:
    if sys.byteorder == "little":
        return pcm16le
    swapped = bytearray(pcm16le)
    swapped[0::2], swapped[1::2] = pcm16le[1::2], pcm16le[0::2]
    return bytes(swapped)


@dataclass(frozen=True, slots=True)
class Prompt:
    """Audio to play: native-order PCM16, 8 kHz, mono."""

    pcm16: bytes

    @property
    def duration(self) -> float:
        return len(self.pcm16) / 2 / SAMPLE_RATE

    @classmethod
    def from_pcm16(cls, data: bytes) -> Prompt:
        """Raw little-endian PCM16 at 8 kHz."""
        if len(data) % 2:
            raise ValueError(f"PCM16 prompt has an odd length of {len(data)} bytes")
        return cls(_native(bytes(data)))

    @classmethod
    def from_ulaw(cls, data: bytes) -> Prompt:
        return cls(_native(g711.ulaw2lin(data)))

    @classmethod
    def from_alaw(cls, data: bytes) -> Prompt:
        return cls(_native(g711.alaw2lin(data)))

    @classmethod
    def from_wav(cls, path: str | Path) -> Prompt:
        """A RIFF/WAVE file: mono 8 kHz, PCM 16-bit, A-law or μ-law."""
        return cls.from_wav_bytes(Path(path).read_bytes(), name=str(path))

    @classmethod
    def from_wav_bytes(cls, data: bytes, name: str = "WAV data") -> Prompt:
        if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
            raise ValueError(f"{name} is not a RIFF/WAVE file")
        fmt: tuple[int, int, int, int] | None = None
        pos = 12
        while pos + 8 <= len(data):
            cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
            body = data[pos + 8 : pos + 8 + size]
            if cid == b"fmt ":
                if len(body) < 16:
                    raise ValueError(f"{name} has a truncated fmt chunk")
                tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
                if tag == _WAVE_EXTENSIBLE and len(body) >= 26:
                    tag = struct.unpack_from("<H", body, 24)[0]
                fmt = (tag, channels, rate, bits)
            elif cid == b"data":
                if fmt is None:
                    raise ValueError(f"{name} has its data chunk before the fmt chunk")
                return cls._decode(fmt, body, name)
            pos += 8 + size + (size & 1)
        raise ValueError(f"{name} has no data chunk")

    @classmethod
    def _decode(cls, fmt: tuple[int, int, int, int], body: bytes, name: str) -> Prompt:
        tag, channels, rate, bits = fmt
        if channels != 1 or rate != SAMPLE_RATE:
            raise ValueError(f"{name}: need mono 8 kHz, got {channels} channel(s) at {rate} Hz")
        if tag == _WAVE_PCM and bits == 16:
            return cls.from_pcm16(body[: len(body) & ~1])
        if tag == _WAVE_MULAW and bits == 8:
            return cls.from_ulaw(body)
        if tag == _WAVE_ALAW and bits == 8:
            return cls.from_alaw(body)
        raise ValueError(f"{name}: unsupported WAV format tag {tag} with {bits} bits")


class Player:
    """Plays a prompt into a leg from the relay's worker thread."""

    def __init__(self, leg: RelayLeg, prompt: Prompt, *, loops: int = 1) -> None:
        self.leg = leg
        self.prompt = prompt
        self.loops = loops
        self.player_id: int | None = None

    def start(self) -> int:
        """Start sending; a PlayerDone event with this id reports the end."""
        self.player_id = self.leg.play(self.prompt, loops=self.loops)
        return self.player_id

    def stop(self) -> bool:
        return self.leg.stop_playing()
