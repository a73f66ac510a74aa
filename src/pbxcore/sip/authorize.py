"""One digest-authorization rule set for every request pbxcore authenticates.

The registrar (REGISTER, ``Authorization`` / 401) and the B2BUA (INVITE and other
requests from phones, ``Proxy-Authorization`` / 407) ask :func:`authorize` the same
question: who is this, and if nobody yet, what to answer. The brute-force guard sees every
attempt; the answers are those of RFC 3261 §22 and RFC 7616: a challenge when no
credentials for the realm came (or the nonce is stale), 400 for malformed credentials or a
digest ``uri`` that is not the Request-URI, 403 for a wrong password or unknown user (the
two are not told apart), and nothing at all when the guard says drop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pbxcore.sip.auth import AuthOutcome, DigestAuthenticator
from pbxcore.sip.guard import BruteForceGuard, GuardVerdict
from pbxcore.sip.message import Request

__all__ = ["Authorized", "Refused", "authorize", "challenge"]

log = logging.getLogger("pbxcore.sip.authorize")


@dataclass(frozen=True, slots=True)
class Authorized:
    username: str
    realm: str


@dataclass(frozen=True, slots=True)
class Refused:
    """What to answer instead (``drop``: answer nothing, the guard banned the source)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False


def challenge(
    authenticator: DigestAuthenticator, realm: str, *, proxy: bool, stale: bool = False
) -> Refused:
    """A 401 (``WWW-Authenticate``) or, for a proxy, 407 (``Proxy-Authenticate``)."""
    name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
    values = authenticator.challenges(realm, stale=stale)
    if proxy:
        return Refused(407, "Proxy Authentication Required", tuple((name, v) for v in values))
    return Refused(401, "Unauthorized", tuple((name, v) for v in values))


def authorize(
    request: Request,
    realm: str,
    *,
    authenticator: DigestAuthenticator,
    guard: BruteForceGuard,
    source_ip: str,
    proxy: bool = False,
) -> Authorized | Refused:
    """Check the request's digest credentials for ``realm`` (``proxy``: the
    ``Proxy-Authorization`` header and 407 challenges)."""
    verdict = guard.check(source_ip)
    if verdict is not GuardVerdict.ALLOW:
        return _banned(verdict)
    header = "proxy-authorization" if proxy else "authorization"
    try:
        credentials = authenticator.pick(request.headers.get_all(header), realm)
    except ValueError:
        return Refused(400, "Malformed Authorization")
    if credentials is None:
        return challenge(authenticator, realm, proxy=proxy)
    user_key = f"{credentials.username}@{realm}"
    verdict = guard.check(source_ip, user_key)
    if verdict is not GuardVerdict.ALLOW:
        return _banned(verdict)
    outcome = authenticator.verify(
        request.method, credentials, realm, request_uri=request.uri_text or request.uri
    )
    if outcome is AuthOutcome.OK:
        guard.record_success(source_ip, user_key)
        return Authorized(credentials.username, realm)
    if outcome.is_failure:
        guard.record_failure(source_ip, user_key)
        log.info(
            "%s auth failed for %s from %s: %s", request.method, user_key, source_ip, outcome.value
        )
        return Refused(403, "Forbidden")
    if outcome is AuthOutcome.MALFORMED:
        return Refused(400, "Malformed Authorization")
    if outcome is AuthOutcome.URI_MISMATCH:
        return Refused(400, "Digest URI Is Not The Request-URI")
    return challenge(authenticator, realm, proxy=proxy, stale=outcome is AuthOutcome.STALE)


def _banned(verdict: GuardVerdict) -> Refused:
    return Refused(403, "Forbidden", drop=verdict is GuardVerdict.DROP)
