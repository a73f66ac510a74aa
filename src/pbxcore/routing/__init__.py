"""Routing: least-cost route tables, dial plans, number formats and caller-ID rules.

Pure logic over immutable objects: the tenancy layer compiles the stored configuration into
these, and a call decision reads them without locks.
"""

from pbxcore._lcr import RouteTrie
from pbxcore.routing.lcr import RouteEntry, RouteTable, TieBreak

__all__ = ["RouteEntry", "RouteTable", "RouteTrie", "TieBreak"]
