"""Helpers shared by the test modules (import as `from tests.helpers import ...`)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parent.parent
# conformance data and vectors copied into the project (sources: tests/data/SOURCES.md)
TESTDATA = REPO / "tests" / "data"
PEERS = REPO / "tests" / "peers"


def peers_required() -> bool:
    """True under ``PBX_REQUIRE_PEERS=1`` (CI): a test that would skip fails instead
    (require_binary below, and the skip policy in tests/conftest.py for every other skip)."""
    return os.environ.get("PBX_REQUIRE_PEERS", "") not in ("", "0")


def require_binary(name: str) -> str:
    """Path of an external peer program; skip if absent, or fail when CI demands peers."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (apt-get install it: .ci/apt-packages.txt)"
        if peers_required():
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def require_testdata(*parts: str) -> Path:
    path = TESTDATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"conformance data missing: {path}")
    return path


def pbxcore_command() -> list[str]:
    """The installed ``pbxcore`` console script of the running interpreter's environment."""
    beside = Path(sys.executable).with_name("pbxcore")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("pbxcore")
    if found is None:
        pytest.fail("the pbxcore console script is not installed")
    return [found]


# ---------------------------------------------------------------- digest (RFC 7616)

# the tests' own digest math, independent of pbxcore.sip.auth (checked against RFC 7616 §3.9.1)
_DIGEST_HASHES = {"MD5": "md5", "SHA-256": "sha256"}


def _h(algorithm: str, data: str) -> str:
    return hashlib.new(_DIGEST_HASHES[algorithm.upper()], data.encode("utf-8")).hexdigest()


def digest_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """RFC 7616 §3.4.2: A1 = username:realm:passwd, HA1 = H(A1) ("MD5" or "SHA-256")."""
    return _h(algorithm, f"{username}:{realm}:{password}")


def digest_response(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    *,
    nc: str = "00000001",
    cnonce: str = "",
    qop: str = "auth",
) -> str:
    """RFC 7616 §3.4.1 with qop=auth: KD(H(A1), nonce:nc:cnonce:qop:H(method:uri))."""
    ha1 = digest_ha1(algorithm, username, realm, password)
    ha2 = _h(algorithm, f"{method}:{uri}")
    return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# ---------------------------------------------------------------- ports

T = TypeVar("T")


class PortTakenError(Exception):
    """A port a test needed was bound by someone else meanwhile: run the attempt again."""


def retry_on_taken_port(attempt: Callable[[], T], *, attempts: int = 5) -> T:
    """Run ``attempt`` again while it raises PortTakenError, each run on fresh ports it picks
    itself; fail after ``attempts`` runs. A busy port never skips a test."""
    last: PortTakenError | None = None
    for _ in range(attempts):
        try:
            return attempt()
        except PortTakenError as exc:
            last = exc
    pytest.fail(f"a port was taken on each of {attempts} attempts: {last}")
