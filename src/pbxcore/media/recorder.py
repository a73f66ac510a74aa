"""Recorder: what a leg receives, through the native jitter buffer, into a WAV file.

The relay's worker thread feeds the jitter buffer and writes a 20 ms frame per tick; this
object only starts and stops it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pbxcore.media.relay import RelayLeg

__all__ = ["Recorder"]


class Recorder:
    """Records one leg to ``path`` (PCM16 8 kHz mono WAV)."""

    def __init__(self, leg: RelayLeg, path: str | Path, *, jitter_buffer: bool = True) -> None:
        self.leg = leg
        self.path = Path(path)
        self.jitter_buffer = jitter_buffer
        self.samples: int | None = None

    def start(self) -> None:
        self.leg.record(self.path, jitter_buffer=self.jitter_buffer)

    def stop(self) -> int:
        """Finish the file; return the number of samples written."""
        self.samples = self.leg.stop_recording()
        return self.samples
