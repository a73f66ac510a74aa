"""Prompts: audio that pbxcore plays into a call (IVR menus, voicemail greetings).

A :class:`Prompt` is native-order PCM16 at 8 kHz, mono, read from a WAV file through
:mod:`pbxcore.wavfile` (the one WAV reader) or from raw G.711/PCM bytes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from pbxcore import g711
from pbxcore.wavfile import WavAudio, parse_wav

__all__ = ["SAMPLE_RATE", "Prompt"]

SAMPLE_RATE = 8000


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
    def from_audio(cls, audio: WavAudio) -> Prompt:
        """Parsed WAV audio: mono 8 kHz PCM16, μ-law or A-law (else ValueError)."""
        audio.require_telephony()
        return cls(_native(audio.pcm16()))

    @classmethod
    def from_wav(cls, path: str | Path) -> Prompt:
        """A RIFF/WAVE file: mono 8 kHz, PCM 16-bit, A-law or μ-law."""
        return cls.from_wav_bytes(Path(path).read_bytes(), name=str(path))

    @classmethod
    def from_wav_bytes(cls, data: bytes, name: str = "WAV data") -> Prompt:
        """WAV file contents; a ValueError names ``name`` and what is wrong."""
        try:
            return cls.from_audio(parse_wav(data))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
