"""Media: the native RTP relay's Python face, prompts and recordings, SDP, the engine facade."""

from pbxcore.media.player import Player, Prompt
from pbxcore.media.recorder import Recorder
from pbxcore.media.relay import (
    DtmfDigit,
    LegLatched,
    LegStats,
    LegTimeout,
    MediaEvent,
    PlayerDone,
    PortRangeExhaustedError,
    RelayLeg,
    RelaySession,
    RtpRelay,
    SessionStats,
    SsrcChanged,
)

__all__ = [
    "DtmfDigit",
    "LegLatched",
    "LegStats",
    "LegTimeout",
    "MediaEvent",
    "Player",
    "PlayerDone",
    "PortRangeExhaustedError",
    "Prompt",
    "Recorder",
    "RelayLeg",
    "RelaySession",
    "RtpRelay",
    "SessionStats",
    "SsrcChanged",
]
