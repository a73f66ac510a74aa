"""Routing: least-cost route tables, dial plans, number formats and caller-ID rules.

Pure logic over immutable objects: the tenancy layer compiles the stored configuration into
these, and a call decision reads them without locks.
"""

from pbxcore._lcr import RouteTrie
from pbxcore.routing.dialplan import DialPlan, DialRule, Kind, Normalized
from pbxcore.routing.lcr import RouteEntry, RouteTable, TieBreak
from pbxcore.routing.numbers import (
    RUSSIA,
    CallerId,
    CallerIdMode,
    CallerIdRule,
    Country,
    NumberFormat,
    calling_code,
    format_number,
    is_e164,
)

__all__ = [
    "RUSSIA",
    "CallerId",
    "CallerIdMode",
    "CallerIdRule",
    "Country",
    "DialPlan",
    "DialRule",
    "Kind",
    "Normalized",
    "NumberFormat",
    "RouteEntry",
    "RouteTable",
    "RouteTrie",
    "TieBreak",
    "calling_code",
    "format_number",
    "is_e164",
]
