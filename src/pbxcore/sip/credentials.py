"""Credential stores: where the registrar finds realms and HA1 values.

:class:`CredentialStore` is the interface (the tenancy layer backs it with the
database later); :class:`FileCredentialStore` keeps users loaded from a TOML
file. Passwords are hashed to HA1 when they are loaded and then forgotten.

Users file::

    [[users]]
    domain = "tenant.example"     # the realm (the tenant's domain)
    username = "101"
    password = "secret"           # or ha1_md5 / ha1_sha256 instead of password

    [[domains]]                   # optional per-realm policy
    name = "tenant.example"
    md5 = false                   # offer SHA-256 only
    # algorithms = ["MD5", "SHA-256"]   # challenge order, most preferred first
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pbxcore.sip.auth import DigestAlgorithm, compute_ha1

__all__ = ["CredentialStore", "FileCredentialStore", "RealmPolicy", "UserCredentials"]

_ALL_ALGORITHMS = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5)
_HEX = {
    DigestAlgorithm.MD5: re.compile(r"[0-9a-f]{32}"),
    DigestAlgorithm.SHA256: re.compile(r"[0-9a-f]{64}"),
}


@runtime_checkable
class CredentialStore(Protocol):
    """Realms (tenant domains) and the HA1 values of their users."""

    def realm_algorithms(self, realm: str) -> tuple[DigestAlgorithm, ...]:
        """Algorithms offered in ``realm``, strongest first; empty if the realm is not served."""
        ...

    def lookup_ha1(self, realm: str, username: str, algorithm: DigestAlgorithm) -> str | None:
        """HA1 of ``username`` in ``realm`` for ``algorithm``, or None."""
        ...


@dataclass(frozen=True, slots=True)
class UserCredentials:
    """One user's HA1 per algorithm (never the password)."""

    realm: str
    username: str
    ha1: Mapping[DigestAlgorithm, str]

    def __repr__(self) -> str:  # never print secrets into logs
        algs = ",".join(a.value for a in self.ha1)
        return f"UserCredentials(realm={self.realm!r}, username={self.username!r}, ha1=<{algs}>)"


@dataclass(frozen=True, slots=True)
class RealmPolicy:
    """Per-realm authentication policy: the algorithms challenged, most preferred first.

    The default offers SHA-256 then MD5 (RFC 8760 §2.4). ``allow_md5=False`` offers
    SHA-256 only. Some clients (SIPp 3.6) answer only the first challenge and know
    only MD5: a realm serving them can list MD5 first.
    """

    allow_md5: bool = True
    algorithms: tuple[DigestAlgorithm, ...] = _ALL_ALGORITHMS

    def __post_init__(self) -> None:
        if not self.algorithms or len(set(self.algorithms)) != len(self.algorithms):
            raise ValueError("a realm needs distinct algorithms")
        if not self.allow_md5:
            object.__setattr__(
                self,
                "algorithms",
                tuple(a for a in self.algorithms if a is not DigestAlgorithm.MD5),
            )
            if not self.algorithms:
                raise ValueError("MD5 disabled but no other algorithm listed")


@dataclass(slots=True)
class FileCredentialStore:
    """An in-memory :class:`CredentialStore`, usually loaded from a TOML users file."""

    _users: dict[tuple[str, str], UserCredentials] = field(default_factory=dict)
    _realms: dict[str, RealmPolicy] = field(default_factory=dict)

    def add_user(
        self,
        realm: str,
        username: str,
        password: str | None = None,
        *,
        ha1: Mapping[DigestAlgorithm, str] | None = None,
    ) -> UserCredentials:
        """Add (or replace) a user from a password or from ready HA1 values."""
        realm = _check_realm(realm)
        if not username or any(c in username for c in '\r\n"\\'):
            raise ValueError(f"invalid username {username!r}")
        hashes: dict[DigestAlgorithm, str] = {}
        if password is not None:
            for algorithm in _ALL_ALGORITHMS:
                hashes[algorithm] = compute_ha1(algorithm, username, realm, password)
        for algorithm, given in (ha1 or {}).items():
            value = given.lower()
            if _HEX[algorithm].fullmatch(value) is None:
                raise ValueError(f"HA1 for {algorithm.value} of {username}@{realm} is not hex")
            hashes[algorithm] = value
        if not hashes:
            raise ValueError(f"user {username}@{realm} has neither password nor HA1")
        user = UserCredentials(realm, username, hashes)
        self._users[(realm, username)] = user
        self._realms.setdefault(realm, RealmPolicy())
        return user

    def set_policy(self, realm: str, policy: RealmPolicy) -> None:
        """Set the authentication policy of ``realm`` (which becomes served)."""
        self._realms[_check_realm(realm)] = policy

    def realm_algorithms(self, realm: str) -> tuple[DigestAlgorithm, ...]:
        policy = self._realms.get(realm.lower())
        return () if policy is None else policy.algorithms

    def lookup_ha1(self, realm: str, username: str, algorithm: DigestAlgorithm) -> str | None:
        user = self._users.get((realm.lower(), username))
        return None if user is None else user.ha1.get(algorithm)

    def __len__(self) -> int:
        return len(self._users)

    @property
    def realms(self) -> list[str]:
        return sorted(self._realms)

    @classmethod
    def from_toml(cls, path: str | Path) -> FileCredentialStore:
        """Load a users file; ValueError names the file and entry that is wrong."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        try:
            return cls.from_mapping(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FileCredentialStore:
        """Build a store from the parsed TOML document."""
        store = cls()
        unknown = set(data) - {"users", "domains"}
        if unknown:
            raise ValueError(f"unknown top-level keys {sorted(unknown)}")
        users = data.get("users", [])
        if not isinstance(users, list):
            raise ValueError("'users' must be an array of tables ([[users]])")
        for index, entry in enumerate(users):
            where = f"users[{index}]"
            if not isinstance(entry, dict):
                raise ValueError(f"{where} must be a table")
            extra = set(entry) - {"domain", "username", "password", "ha1_md5", "ha1_sha256"}
            if extra:
                raise ValueError(f"{where}: unknown keys {sorted(extra)}")
            domain, username = entry.get("domain"), entry.get("username")
            password = entry.get("password")
            if not isinstance(domain, str) or not isinstance(username, str):
                raise ValueError(f"{where}: 'domain' and 'username' must be strings")
            if password is not None and not isinstance(password, str):
                raise ValueError(f"{where}: 'password' must be a string")
            ha1: dict[DigestAlgorithm, str] = {}
            for key, algorithm in (
                ("ha1_md5", DigestAlgorithm.MD5),
                ("ha1_sha256", DigestAlgorithm.SHA256),
            ):
                if key in entry:
                    if not isinstance(entry[key], str):
                        raise ValueError(f"{where}: {key!r} must be a string")
                    ha1[algorithm] = entry[key]
            if (domain.lower(), username) in store._users:
                raise ValueError(f"{where}: duplicate user {username}@{domain}")
            try:
                store.add_user(domain, username, password, ha1=ha1)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from exc
        domains = data.get("domains", [])
        if not isinstance(domains, list):
            raise ValueError("'domains' must be an array of tables ([[domains]])")
        for index, entry in enumerate(domains):
            where = f"domains[{index}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise ValueError(f"{where} must be a table with a string 'name'")
            extra = set(entry) - {"name", "md5", "algorithms"}
            if extra:
                raise ValueError(f"{where}: unknown keys {sorted(extra)}")
            md5 = entry.get("md5", True)
            if not isinstance(md5, bool):
                raise ValueError(f"{where}: 'md5' must be true or false")
            names = entry.get("algorithms", [a.value for a in _ALL_ALGORITHMS])
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{where}: 'algorithms' must be a list of strings")
            try:
                algorithms = tuple(DigestAlgorithm.from_token(n) for n in names)
                store.set_policy(entry["name"], RealmPolicy(allow_md5=md5, algorithms=algorithms))
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from exc
        return store


_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]")


def _check_realm(realm: str) -> str:
    realm = realm.lower()
    if _DOMAIN.fullmatch(realm) is None:
        raise ValueError(f"invalid domain {realm!r}")
    return realm
