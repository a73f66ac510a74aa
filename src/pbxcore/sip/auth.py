"""HTTP digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760).

The server offers SHA-256 and MD5 challenges with ``qop=auth``; nonces are
stateless HMAC tokens (issue time, counter, realm) that expire, and every nonce
that has been answered correctly remembers its highest nonce-count so that a
captured request cannot be replayed. Only HA1 values are ever handled here,
never a password (except in :func:`compute_ha1`, which turns one into HA1).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import itertools
import os
import re
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from pbxcore.sip.errors import SipParseError
from pbxcore.sip.uri import Uri

__all__ = [
    "AuthOutcome",
    "DigestAlgorithm",
    "DigestAuthenticator",
    "DigestCredentials",
    "HA1Source",
    "NonceStore",
    "compute_ha1",
    "compute_response",
    "digest_uri_matches",
    "parse_authorization",
]


class DigestAlgorithm(enum.Enum):
    """Digest algorithms a realm may offer, strongest first (RFC 8760)."""

    SHA256 = "SHA-256"
    MD5 = "MD5"

    @classmethod
    def from_token(cls, token: str) -> DigestAlgorithm:
        """The algorithm named by an ``algorithm=`` token (case-insensitive)."""
        algorithm = _ALGORITHM_TOKENS.get(token.upper())
        if algorithm is None:
            raise ValueError(f"unsupported digest algorithm {token!r}")
        return algorithm

    def hexdigest(self, data: str) -> str:
        """H(data) as lowercase hex."""
        return _HASHES[self](data.encode("utf-8")).hexdigest()


_ALGORITHM_TOKENS = {"MD5": DigestAlgorithm.MD5, "SHA-256": DigestAlgorithm.SHA256}
_HASHES = {DigestAlgorithm.MD5: hashlib.md5, DigestAlgorithm.SHA256: hashlib.sha256}


def compute_ha1(algorithm: DigestAlgorithm, username: str, realm: str, password: str) -> str:
    """HA1 = H(username:realm:password), what a credential store keeps instead of a password."""
    return algorithm.hexdigest(f"{username}:{realm}:{password}")


def compute_response(
    algorithm: DigestAlgorithm,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    *,
    qop: str = "auth",
    nc: str = "00000001",
    cnonce: str = "",
) -> str:
    """The ``response=`` value of a digest answer with qop=auth (RFC 7616 §3.4.1)."""
    ha2 = algorithm.hexdigest(f"{method}:{uri}")
    return algorithm.hexdigest(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """The parameters of one ``Authorization``/``Proxy-Authorization`` Digest header."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None


_AUTH_PARAM = re.compile(r'\s*([A-Za-z0-9_.!%*+`\'~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(,|$)')
_QUOTED_PAIR = re.compile(r"\\(.)")


def parse_authorization(value: str) -> DigestCredentials:
    """Parse a Digest ``Authorization`` header value; ValueError says what is wrong."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ValueError(f"authorization scheme {scheme!r} is not Digest")
    params: dict[str, str] = {}
    rest = rest.strip()
    pos = 0
    for match in _AUTH_PARAM.finditer(rest):
        if match.start() != pos:
            break
        name, raw = match.group(1).lower(), match.group(2)
        if raw[:1] == '"':
            raw = raw[1:-1]
            if "\\" in raw:
                raw = _QUOTED_PAIR.sub(r"\1", raw)
        if name in params:
            raise ValueError(f"digest parameter {name!r} repeated")
        params[name] = raw
        pos = match.end()
        if pos == len(rest):
            break
    if pos != len(rest):
        raise ValueError(f"malformed digest parameter at {rest[pos : pos + 20]!r}")
    missing = [p for p in ("username", "realm", "nonce", "uri", "response") if p not in params]
    if missing:
        raise ValueError(f"digest credentials lack {', '.join(missing)}")
    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"].lower(),
        algorithm=params.get("algorithm", "MD5"),
        qop=params.get("qop"),
        nc=params.get("nc"),
        cnonce=params.get("cnonce"),
        opaque=params.get("opaque"),
    )


class NonceStore:
    """Issues HMAC-signed nonces and tracks nonce-counts of the ones in use.

    A nonce is ``base64url(issued_at, counter, HMAC(secret, issued_at|counter|realm))``:
    issuing one costs an HMAC and no memory. Only nonces answered with a correct
    response are remembered (with their highest nc), in dicts of str -> int (which the
    garbage collector does not track) bucketed by first use: a bucket is dropped whole
    once everything in it has expired. ``max_tracked`` bounds the memory: beyond it the
    oldest bucket is dropped early, and every nonce issued before that bucket closed is
    treated as stale from then on, so forgetting never opens a replay.
    """

    _PACK = struct.Struct(">dQ")
    _MAC_LEN = 12

    def __init__(
        self,
        *,
        ttl: float = 300.0,
        secret: bytes | None = None,
        clock: Callable[[], float] = time.time,
        max_tracked: int = 1_000_000,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"nonce ttl must be positive, got {ttl}")
        if max_tracked < 1:
            raise ValueError(f"max_tracked must be >= 1, got {max_tracked}")
        self.ttl = ttl
        self.max_tracked = max_tracked
        self._secret = secret if secret is not None else os.urandom(32)
        self._clock = clock
        self._counter = itertools.count(int.from_bytes(os.urandom(4), "big"))
        self._slice = ttl / 4
        # (first-use window start, nonce -> highest nc), oldest first
        self._buckets: deque[tuple[float, dict[str, int]]] = deque()
        self._tracked = 0
        self._horizon = float("-inf")  # nonces issued before this are stale

    def issue(self, realm: str) -> str:
        """A fresh nonce bound to ``realm``."""
        head = self._PACK.pack(self._clock(), next(self._counter) & 0xFFFFFFFFFFFFFFFF)
        mac = hmac.digest(self._secret, head + realm.encode(), "sha256")[: self._MAC_LEN]
        return base64.urlsafe_b64encode(head + mac).decode("ascii")

    def check(self, nonce: str, realm: str) -> AuthOutcome:
        """OK for an authentic, unexpired nonce of ``realm``; STALE or INVALID_NONCE otherwise."""
        try:
            raw = base64.urlsafe_b64decode(nonce)
        except (binascii.Error, ValueError):
            return AuthOutcome.INVALID_NONCE
        if len(raw) != self._PACK.size + self._MAC_LEN:
            return AuthOutcome.INVALID_NONCE
        head, mac = raw[: self._PACK.size], raw[self._PACK.size :]
        expected = hmac.digest(self._secret, head + realm.encode(), "sha256")[: self._MAC_LEN]
        if not hmac.compare_digest(mac, expected):
            return AuthOutcome.INVALID_NONCE
        issued_at = self._PACK.unpack(head)[0]
        age = self._clock() - issued_at
        if age > self.ttl or age < -5.0 or issued_at < self._horizon:
            return AuthOutcome.STALE  # (-5 s: allowance for clock steps between nodes)
        return AuthOutcome.OK

    def use(self, nonce: str, nc: int) -> bool:
        """Record nonce-count ``nc`` for a correctly answered nonce; False if it is a replay."""
        now = self._clock()
        buckets = self._buckets
        if not buckets or now >= buckets[-1][0] + self._slice:
            self._rotate(now)
        for _, bucket in reversed(buckets):
            last = bucket.get(nonce)
            if last is not None:
                if nc <= last:
                    return False
                bucket[nonce] = nc
                return True
        buckets[-1][1][nonce] = nc
        self._tracked += 1
        if self._tracked > self.max_tracked and len(buckets) > 1:
            start, dropped = buckets.popleft()
            self._tracked -= len(dropped)
            self._horizon = max(self._horizon, start + self._slice)
        return True

    def _rotate(self, now: float) -> None:
        buckets = self._buckets
        # a bucket's entries were first used before start + slice, and first use comes
        # after issue: past start + slice + ttl all of them have expired
        while buckets and buckets[0][0] + self._slice + self.ttl < now:
            self._tracked -= len(buckets.popleft()[1])
        buckets.append((now, {}))

    def __len__(self) -> int:
        return self._tracked


class AuthOutcome(enum.Enum):
    """The result of checking digest credentials."""

    OK = "ok"
    STALE = "stale"  # authentic but expired nonce: challenge again with stale=true
    INVALID_NONCE = "invalid-nonce"  # not ours (other secret, forged): challenge again
    REPLAY = "replay"  # nonce-count not above the last one seen
    UNSUPPORTED = "unsupported"  # algorithm or qop not offered for this realm
    UNKNOWN_USER = "unknown-user"
    WRONG_RESPONSE = "wrong-response"
    MALFORMED = "malformed"  # unreadable parameters (bad nc, bytes that are not UTF-8 ...)
    URI_MISMATCH = "uri-mismatch"  # digest uri is not the Request-URI: 400 (RFC 7616 §3.4.6)

    @property
    def is_failure(self) -> bool:
        """Whether this counts as a failed guess (for the brute-force guard)."""
        return self in (AuthOutcome.UNKNOWN_USER, AuthOutcome.WRONG_RESPONSE)


class HA1Source(Protocol):
    """Where the authenticator finds realms and HA1 values (a :class:`CredentialStore`)."""

    def realm_algorithms(self, realm: str) -> tuple[DigestAlgorithm, ...]:
        """Algorithms offered in ``realm``, strongest first; empty if the realm is unknown."""
        ...

    def lookup_ha1(self, realm: str, username: str, algorithm: DigestAlgorithm) -> str | None:
        """HA1 of ``username`` in ``realm`` for ``algorithm``, or None if there is none."""
        ...


_HEX_NC = re.compile(r"[0-9a-fA-F]{8}")
_HEX_RESPONSE = re.compile(r"[0-9a-f]{32}|[0-9a-f]{64}")  # MD5, SHA-256 (lowercased on parse)
# what the message layer makes of bytes that are not UTF-8 (surrogateescape): H() of such a
# parameter cannot be computed, so the request is malformed (400), never a server error
_UNDECODABLE = re.compile("[\ud800-\udfff]")


def digest_uri_matches(digest_uri: str, request_uri: str | Uri) -> bool:
    """Whether the ``uri`` of digest credentials designates ``request_uri``.

    RFC 7616 §3.4.6 (as RFC 2617 §3.2.2.5, which RFC 3261 §22.4 adopts): the server MUST
    make sure that the "uri" parameter designates the same resource as the Request-URI,
    and SHOULD answer 400 Bad Request if not. For SIP the resource is a URI, so "the same"
    is URI equivalence (RFC 3261 §19.1.4: host case, escapes and parameters present on one
    side only do not matter; user, ttl, method, maddr, transport do). An unparsable
    ``uri`` designates nothing.
    """
    if isinstance(request_uri, str):
        if digest_uri == request_uri:
            return True
        try:
            request_uri = Uri.parse(request_uri)
        except SipParseError:
            return False
    try:
        return Uri.parse(digest_uri) == request_uri
    except SipParseError:
        return False


class DigestAuthenticator:
    """Builds digest challenges and verifies answers against an :class:`HA1Source`."""

    def __init__(self, credentials: HA1Source, nonces: NonceStore | None = None) -> None:
        self.credentials = credentials
        self.nonces = nonces if nonces is not None else NonceStore()

    def challenges(self, realm: str, *, stale: bool = False) -> list[str]:
        """``WWW-Authenticate`` values, one per algorithm offered in ``realm``."""
        nonce = self.nonces.issue(realm)
        suffix = ", stale=true" if stale else ""
        return [
            f'Digest realm="{realm}", nonce="{nonce}", algorithm={alg.value}, qop="auth"{suffix}'
            for alg in self.credentials.realm_algorithms(realm)
        ]

    def verify(
        self,
        method: str,
        credentials: DigestCredentials,
        realm: str,
        *,
        request_uri: str | Uri,
    ) -> AuthOutcome:
        """Check an answer to one of our challenges for a request with ``method`` sent to
        ``request_uri`` (the Request-URI, which the digest ``uri`` must designate)."""
        try:
            algorithm = DigestAlgorithm.from_token(credentials.algorithm)
        except ValueError:
            return AuthOutcome.UNSUPPORTED
        if algorithm not in self.credentials.realm_algorithms(realm):
            return AuthOutcome.UNSUPPORTED
        if credentials.qop is None or credentials.qop.lower() != "auth":
            return AuthOutcome.UNSUPPORTED
        nc_text, cnonce = credentials.nc, credentials.cnonce
        if nc_text is None or cnonce is None or _HEX_NC.fullmatch(nc_text) is None:
            return AuthOutcome.MALFORMED
        if credentials.realm != realm:
            return AuthOutcome.MALFORMED
        if (
            _HEX_RESPONSE.fullmatch(credentials.response) is None
            or _UNDECODABLE.search(credentials.username) is not None
            or _UNDECODABLE.search(credentials.uri) is not None
            or _UNDECODABLE.search(cnonce) is not None
        ):
            return AuthOutcome.MALFORMED
        if not digest_uri_matches(credentials.uri, request_uri):
            return AuthOutcome.URI_MISMATCH
        nonce_state = self.nonces.check(credentials.nonce, realm)
        if nonce_state is not AuthOutcome.OK:
            return nonce_state
        ha1 = self.credentials.lookup_ha1(realm, credentials.username, algorithm)
        if ha1 is None:
            return AuthOutcome.UNKNOWN_USER
        expected = compute_response(
            algorithm,
            ha1,
            credentials.nonce,
            method,
            credentials.uri,
            qop="auth",
            nc=nc_text,
            cnonce=cnonce,
        )
        if not hmac.compare_digest(expected, credentials.response):
            return AuthOutcome.WRONG_RESPONSE
        if not self.nonces.use(credentials.nonce, int(nc_text, 16)):
            return AuthOutcome.REPLAY
        return AuthOutcome.OK

    def pick(self, values: Iterable[str], realm: str) -> DigestCredentials | None:
        """The credentials for ``realm`` among Authorization values (None if absent).

        Raises ValueError for a malformed value that names our realm or cannot be read.
        """
        for value in values:
            credentials = parse_authorization(value)
            if credentials.realm == realm:
                return credentials
        return None
