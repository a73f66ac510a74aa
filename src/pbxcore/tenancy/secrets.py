"""Secrets at rest: argon2 for admin passwords, HA1 for SIP, encryption for trunk passwords.

- Admin passwords are hashed with argon2id (argon2-cffi); only the hash is stored.
- An extension's SIP password becomes its digest HA1 for MD5 and SHA-256 of the tenant's
  realm (RFC 7616): the registrar needs nothing else, and the password is never stored.
- A trunk's password must be recoverable (pbxcore registers to the carrier with it), so it
  is encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under the node's secret key:
  ``PBXCORE_SECRET_KEY`` or a key file created on first start.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken

from pbxcore.sip.auth import DigestAlgorithm, compute_ha1

__all__ = [
    "SecretBox",
    "generate_password",
    "hash_password",
    "load_secret_key",
    "needs_rehash",
    "sip_ha1",
    "verify_password",
]

SECRET_KEY_ENV = "PBXCORE_SECRET_KEY"
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# a hash to verify against when the user does not exist, so that timing does not tell
_DUMMY_HASH = _hasher.hash("no such user")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; also spends the same time when there is no user."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def generate_password(length: int = 16) -> str:
    """A random password of letters and digits (no look-alike characters)."""
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def sip_ha1(username: str, realm: str, password: str) -> dict[DigestAlgorithm, str]:
    """The HA1 values stored for an extension (MD5 and SHA-256)."""
    return {
        algorithm: compute_ha1(algorithm, username, realm, password)
        for algorithm in (DigestAlgorithm.MD5, DigestAlgorithm.SHA256)
    }


class SecretBox:
    """Encrypts and decrypts recoverable secrets (trunk passwords) with the node's key."""

    def __init__(self, key: bytes) -> None:
        # any key material is accepted; Fernet wants 32 url-safe base64 bytes
        self._fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(key).digest()))

    def __repr__(self) -> str:
        return "SecretBox(<key>)"

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode("utf-8"))

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode("utf-8")
        except InvalidToken as exc:
            raise ValueError(
                "a stored secret does not decrypt with this node's key "
                f"(was {SECRET_KEY_ENV} or the key file changed?)"
            ) from exc


def load_secret_key(key_file: Path | None) -> bytes:
    """``PBXCORE_SECRET_KEY`` if set; else the key file, created (mode 0600) if absent."""
    env = os.environ.get(SECRET_KEY_ENV)
    if env:
        if len(env) < 16:
            raise ValueError(f"{SECRET_KEY_ENV} must be at least 16 characters")
        return env.encode("utf-8")
    if key_file is None:
        raise ValueError(f"no secret key: set {SECRET_KEY_ENV} or give a key file")
    try:
        return key_file.read_bytes().strip()
    except FileNotFoundError:
        pass
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = base64.urlsafe_b64encode(secrets.token_bytes(32))
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key + b"\n")
    return key
