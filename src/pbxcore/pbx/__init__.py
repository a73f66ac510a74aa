"""Calls: the routing decision, the B2BUA that acts on it, the CDR writer, and the
registrations of trunks to their carriers (:mod:`pbxcore.pbx.b2bua`, :mod:`~.cdr`,
:mod:`~.trunks`).

:func:`decide` is a pure function over one config snapshot; see
:mod:`pbxcore.pbx.decision` for the rules.
"""

from pbxcore.pbx.decision import (
    DEFAULT_NO_ANSWER_SECONDS,
    MAX_FORWARD_HOPS,
    Caller,
    CallUsage,
    Decision,
    DecisionKind,
    Direction,
    ExtensionCaller,
    ExtensionTarget,
    ForwardCondition,
    Forwarding,
    Reject,
    TrunkCaller,
    TrunkCandidate,
    UsageCounts,
    decide,
    decide_forward,
    trunk_for_source,
)

__all__ = [
    "DEFAULT_NO_ANSWER_SECONDS",
    "MAX_FORWARD_HOPS",
    "CallUsage",
    "Caller",
    "Decision",
    "DecisionKind",
    "Direction",
    "ExtensionCaller",
    "ExtensionTarget",
    "ForwardCondition",
    "Forwarding",
    "Reject",
    "TrunkCaller",
    "TrunkCandidate",
    "UsageCounts",
    "decide",
    "decide_forward",
    "trunk_for_source",
]
