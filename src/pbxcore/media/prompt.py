"""Prompts: audio that pbxcore plays into a call (IVR menus, voicemail greetings).

A :class:`Prompt` is native-order PCM16 at 8 kHz, mono, read from a WAV file through
:mod:`pbxcore.wavfile` (the one WAV reader) or from raw G.711/PCM bytes.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pbxcore import g711
from pbxcore.wavfile import WavAudio, parse_wav

__all__ = ["DEFAULT_PROMPTS", "SAMPLE_RATE", "Prompt", "default_prompt", "tone"]

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

    @property
    def pcm16le(self) -> bytes:
        """The samples as little-endian PCM16 (what WAV files hold)."""
        return _native(self.pcm16)

    @property
    def ulaw(self) -> bytes:
        """The samples as G.711 μ-law (how the store keeps prompts)."""
        return g711.lin2ulaw(self.pcm16le)

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


def tone(freq: float, seconds: float, level: float = -10.0) -> Prompt:
    """A sine of ``freq`` Hz for ``seconds`` at ``level`` dBFS (a ValueError for a
    frequency outside 0-4000 Hz, a duration outside 0-3600 s or a level above 0)."""
    if not 0 < freq < SAMPLE_RATE / 2:
        raise ValueError(f"frequency {freq:g} Hz is outside 0-4000 Hz (8 kHz sampling)")
    if not 0 < seconds <= 3600:
        raise ValueError(f"duration {seconds:g} s is outside 0-3600 s")
    if level > 0:
        raise ValueError(f"level {level:g} dBFS is above full scale")
    amplitude = 32767 * 10 ** (level / 20)
    step = 2 * math.pi * freq / SAMPLE_RATE
    samples = (round(amplitude * math.sin(step * i)) for i in range(round(seconds * SAMPLE_RATE)))
    return Prompt.from_pcm16(b"".join(v.to_bytes(2, "little", signed=True) for v in samples))


def _silence(seconds: float) -> Prompt:
    return Prompt(bytes(2 * round(seconds * SAMPLE_RATE)))


def _cadence(*parts: tuple[float, float]) -> Prompt:
    """Tone/silence pieces: (Hz, seconds), 0 Hz for silence."""
    pcm = b"".join((tone(f, s) if f else _silence(s)).pcm16 for f, s in parts)
    return Prompt(pcm)


# the prompts every tenant has without uploading anything: made by the tone generator
# (no recorded speech); 425 Hz is the ringback and busy tone of Russia and most of Europe
DEFAULT_PROMPTS: dict[str, Callable[[], Prompt]] = {
    "beep": lambda: tone(1000, 0.25),
    "ringback": lambda: _cadence((425, 1.0), (0, 4.0)),
    "busy": lambda: _cadence(*[(425, 0.35), (0, 0.35)] * 4),
    "error": lambda: _cadence((950, 0.33), (1400, 0.33), (1800, 0.33), (0, 1.0)),
    "silence": lambda: _silence(1.0),
}
_made: dict[str, Prompt] = {}


def default_prompt(name: str) -> Prompt:
    """One of :data:`DEFAULT_PROMPTS`, made once (a KeyError names the ones there are)."""
    if name not in DEFAULT_PROMPTS:
        raise KeyError(f"no default prompt {name!r}; there are {', '.join(DEFAULT_PROMPTS)}")
    if name not in _made:
        _made[name] = DEFAULT_PROMPTS[name]()
    return _made[name]
