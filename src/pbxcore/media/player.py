"""Prompts for the relay's native player: WAV files or raw 8 kHz PCM16, μ-law or A-law.

The relay's worker thread paces the prompt as 20 ms RTP in the leg's G.711 law; this module
only loads audio into native-order PCM16 once, up front. WAV files are read by
:mod:`pbxcore.wavfile`, the package's one WAV reader.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pbxcore import g711
from pbxcore.wavfile import WavAudio, parse_wav

if TYPE_CHECKING:
    from pbxcore.media.relay import RelayLeg

__all__ = ["Player", "Prompt"]

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
