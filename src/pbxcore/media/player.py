"""The relay's native player driven from Python: a :class:`Player` sends a
:class:`~pbxcore.media.prompt.Prompt` into one relay leg.

The relay's worker thread paces the prompt as 20 ms RTP in the leg's G.711 law; prompts
are loaded into native-order PCM16 once, up front (:mod:`pbxcore.media.prompt`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pbxcore.media.prompt import Prompt

if TYPE_CHECKING:
    from pbxcore.media.relay import RelayLeg

__all__ = ["Player", "Prompt"]


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
