"""pbxcore: the core of a white-label cloud PBX.

Native hot paths (G.711, RTP relay, jitter buffer, prefix-trie routing) under a typed Python
layer: SIP, media, routing and tenancy on one asyncio loop.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pbxcore")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
