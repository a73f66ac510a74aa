"""Calls: the B2BUA, the routing decision, media anchoring, limits and CDRs."""
