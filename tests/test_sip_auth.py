"""Digest authentication: RFC 7616/8760 math, nonces, replay protection."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxcore.sip.auth import (
    AuthOutcome,
    DigestAlgorithm,
    DigestAuthenticator,
    DigestCredentials,
    NonceStore,
    compute_ha1,
    compute_response,
    digest_uri_matches,
    parse_authorization,
)
from pbxcore.sip.credentials import FileCredentialStore, RealmPolicy
from tests.helpers import digest_response

URI = "sip:pbx.test"  # the Request-URI of the REGISTERs answered here


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rfc2617_md5_vector() -> None:
    # RFC 2617 §3.5 example (the same formula RFC 3261 uses with qop=auth)
    ha1 = compute_ha1(DigestAlgorithm.MD5, "Mufasa", "testrealm@host.com", "Circle Of Life")
    assert ha1 == hashlib.md5(b"Mufasa:testrealm@host.com:Circle Of Life").hexdigest()
    response = compute_response(
        DigestAlgorithm.MD5,
        ha1,
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "GET",
        "/dir/index.html",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_rfc7616_sha256_vector() -> None:
    # RFC 7616 §3.9.1 example with SHA-256
    ha1 = compute_ha1(DigestAlgorithm.SHA256, "Mufasa", "http-auth@example.org", "Circle of Life")
    response = compute_response(
        DigestAlgorithm.SHA256,
        ha1,
        "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        "GET",
        "/dir/index.html",
        nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert response == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_parse_authorization_quoted_and_tokens() -> None:
    creds = parse_authorization(
        'Digest username="al\\"ice", realm="pbx.test",nonce="abc", uri="sip:pbx.test",'
        ' response="0123ABCD", algorithm=SHA-256, qop=auth, nc=00000001, cnonce="xyz",'
        ' opaque=""'
    )
    assert creds == DigestCredentials(
        username='al"ice',
        realm="pbx.test",
        nonce="abc",
        uri="sip:pbx.test",
        response="0123abcd",
        algorithm="SHA-256",
        qop="auth",
        nc="00000001",
        cnonce="xyz",
        opaque="",
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Basic dXNlcjpwYXNz", "not Digest"),
        ('Digest username="a", realm="r"', "lack nonce"),
        ('Digest username="a" realm="r"', "malformed"),
        (
            'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="x"',
            "repeated",
        ),
        ('Digest username="a, realm="r"', "malformed"),
    ],
)
def test_parse_authorization_errors(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_authorization(value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_authorization_only_raises_value_error(value: str) -> None:
    with contextlib.suppress(ValueError):
        parse_authorization("Digest " + value)


def test_nonce_roundtrip_expiry_and_realm_binding() -> None:
    clock = Clock()
    store = NonceStore(ttl=30.0, secret=b"k" * 32, clock=clock)
    nonce = store.issue("a.test")
    assert store.check(nonce, "a.test") is AuthOutcome.OK
    assert store.check(nonce, "b.test") is AuthOutcome.INVALID_NONCE
    assert store.issue("a.test") != nonce
    other = NonceStore(ttl=30.0, secret=b"x" * 32, clock=clock)
    assert other.check(nonce, "a.test") is AuthOutcome.INVALID_NONCE
    assert store.check("garbage!!", "a.test") is AuthOutcome.INVALID_NONCE
    assert store.check(nonce[:-4] + "AAAA", "a.test") is AuthOutcome.INVALID_NONCE
    clock.now += 31
    assert store.check(nonce, "a.test") is AuthOutcome.STALE


def test_nonce_count_tracking_and_pruning() -> None:
    clock = Clock()
    store = NonceStore(ttl=10.0, clock=clock)
    assert store.use("n1", 1)
    assert not store.use("n1", 1)
    assert store.use("n1", 2)
    assert not store.use("n1", 2)
    assert store.use("n2", 5)
    assert len(store) == 2
    clock.now += 13  # ttl plus the bucket width (ttl/4)
    assert store.use("n3", 1)
    assert len(store) == 1  # n1 and n2 expired and were forgotten


def test_nonce_store_bound_makes_forgotten_nonces_stale() -> None:
    clock = Clock()
    store = NonceStore(ttl=100.0, clock=clock, max_tracked=3)
    early = store.issue("a.test")
    assert store.use(early, 1)
    clock.now += 30  # next bucket
    assert store.use("x", 1) and store.use("y", 1)
    clock.now += 1
    later = store.issue("a.test")
    assert store.use("z", 1)  # over the bound: the first bucket goes
    assert len(store) == 3
    # the forgotten nonce cannot be replayed: it is stale now; newer ones still work
    assert store.check(early, "a.test") is AuthOutcome.STALE
    assert store.check(later, "a.test") is AuthOutcome.OK
    with pytest.raises(ValueError, match="max_tracked"):
        NonceStore(max_tracked=0)


def test_nonce_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        NonceStore(ttl=0)


def _store() -> FileCredentialStore:
    store = FileCredentialStore()
    store.add_user("pbx.test", "alice", "secret")
    store.add_user("sha.test", "bob", "hunter2")
    store.set_policy("sha.test", RealmPolicy(allow_md5=False))
    return store


def _answer(
    challenge: str,
    username: str,
    password: str,
    *,
    method: str = "REGISTER",
    uri: str = "sip:pbx.test",
    nc: str = "00000001",
    response: str | None = None,
) -> DigestCredentials:
    params = dict(
        part.strip().split("=", 1) for part in challenge.removeprefix("Digest ").split(",")
    )
    realm = params["realm"].strip('"')
    nonce = params["nonce"].strip('"')
    algorithm = params["algorithm"]
    return DigestCredentials(
        username=username,
        realm=realm,
        nonce=nonce,
        uri=uri,
        response=response
        or digest_response(
            algorithm, username, realm, password, method, uri, nonce, nc=nc, cnonce="c0ffee"
        ),
        algorithm=algorithm,
        qop="auth",
        nc=nc,
        cnonce="c0ffee",
    )


def test_challenges_offer_sha256_then_md5_and_md5_can_be_disabled() -> None:
    auth = DigestAuthenticator(_store())
    both = auth.challenges("pbx.test")
    assert [c.split("algorithm=")[1].split(",")[0] for c in both] == ["SHA-256", "MD5"]
    assert all('qop="auth"' in c and 'realm="pbx.test"' in c for c in both)
    only = auth.challenges("sha.test", stale=True)
    assert len(only) == 1 and "algorithm=SHA-256" in only[0] and only[0].endswith("stale=true")
    assert auth.challenges("unknown.test") == []


@pytest.mark.parametrize("index", [0, 1])
def test_verify_ok_both_algorithms(index: int) -> None:
    auth = DigestAuthenticator(_store())
    creds = _answer(auth.challenges("pbx.test")[index], "alice", "secret")
    assert auth.verify("REGISTER", creds, "pbx.test", request_uri=URI) is AuthOutcome.OK


def test_verify_rejects_replay_but_accepts_next_nc() -> None:
    auth = DigestAuthenticator(_store())
    challenge = auth.challenges("pbx.test")[0]
    first = _answer(challenge, "alice", "secret")
    assert auth.verify("REGISTER", first, "pbx.test", request_uri=URI) is AuthOutcome.OK
    assert auth.verify("REGISTER", first, "pbx.test", request_uri=URI) is AuthOutcome.REPLAY
    second = _answer(challenge, "alice", "secret", nc="00000002")
    assert auth.verify("REGISTER", second, "pbx.test", request_uri=URI) is AuthOutcome.OK


def test_verify_failures() -> None:
    auth = DigestAuthenticator(_store())
    challenge = auth.challenges("pbx.test")[1]
    wrong = _answer(challenge, "alice", "wrong")
    assert auth.verify("REGISTER", wrong, "pbx.test", request_uri=URI) is AuthOutcome.WRONG_RESPONSE
    assert AuthOutcome.WRONG_RESPONSE.is_failure
    nobody = _answer(challenge, "mallory", "secret")
    assert auth.verify("REGISTER", nobody, "pbx.test", request_uri=URI) is AuthOutcome.UNKNOWN_USER
    # answer computed for another method does not match
    other_method = _answer(challenge, "alice", "secret", method="INVITE")
    assert (
        auth.verify("REGISTER", other_method, "pbx.test", request_uri=URI)
        is AuthOutcome.WRONG_RESPONSE
    )
    # a wrong answer does not burn the nonce-count: the right one still passes
    right = _answer(challenge, "alice", "secret")
    assert auth.verify("REGISTER", right, "pbx.test", request_uri=URI) is AuthOutcome.OK


def test_verify_policy_and_malformed() -> None:
    auth = DigestAuthenticator(_store())
    md5_challenge = auth.challenges("pbx.test")[1].replace("pbx.test", "sha.test")
    creds = _answer(md5_challenge, "bob", "hunter2")
    assert auth.verify("REGISTER", creds, "sha.test", request_uri=URI) is AuthOutcome.UNSUPPORTED
    good = _answer(auth.challenges("pbx.test")[0], "alice", "secret")
    no_qop = replace(good, qop=None)
    assert auth.verify("REGISTER", no_qop, "pbx.test", request_uri=URI) is AuthOutcome.UNSUPPORTED
    bad_nc = replace(good, nc="1")
    assert auth.verify("REGISTER", bad_nc, "pbx.test", request_uri=URI) is AuthOutcome.MALFORMED
    foreign = replace(good, nonce="Zm9yZ2Vk")
    assert (
        auth.verify("REGISTER", foreign, "pbx.test", request_uri=URI) is AuthOutcome.INVALID_NONCE
    )
    alg = replace(good, algorithm="MD5-sess")
    assert auth.verify("REGISTER", alg, "pbx.test", request_uri=URI) is AuthOutcome.UNSUPPORTED


def test_verify_stale_nonce() -> None:
    clock = Clock()
    auth = DigestAuthenticator(_store(), NonceStore(ttl=60, clock=clock))
    creds = _answer(auth.challenges("pbx.test")[0], "alice", "secret")
    clock.now += 61
    assert auth.verify("REGISTER", creds, "pbx.test", request_uri=URI) is AuthOutcome.STALE
    assert not AuthOutcome.STALE.is_failure


def test_pick_by_realm() -> None:
    auth = DigestAuthenticator(_store())
    values = [
        'Digest username="x", realm="other", nonce="n", uri="u", response="r"',
        'Digest username="alice", realm="pbx.test", nonce="n", uri="u", response="r"',
    ]
    picked = auth.pick(values, "pbx.test")
    assert picked is not None and picked.username == "alice"
    assert auth.pick(values[:1], "pbx.test") is None


def test_verify_refuses_bad_bytes_as_malformed() -> None:
    # the message layer keeps undecodable bytes as lone surrogates (surrogateescape)
    auth = DigestAuthenticator(_store())
    good = _answer(auth.challenges("pbx.test")[0], "alice", "secret")
    for field in ("cnonce", "uri", "username", "response"):
        bad = replace(good, **{field: getattr(good, field)[:3] + "\udcff"})
        assert auth.verify("REGISTER", bad, "pbx.test", request_uri=URI) is AuthOutcome.MALFORMED
    non_ascii_response = replace(good, response="\u00e9" * 64)
    verdict = auth.verify("REGISTER", non_ascii_response, "pbx.test", request_uri=URI)
    assert verdict is AuthOutcome.MALFORMED
    assert auth.verify("REGISTER", good, "pbx.test", request_uri=URI) is AuthOutcome.OK


# any text, lone surrogates (undecodable bytes) included
_FIELD_TEXT = st.text(st.characters(exclude_categories=()), max_size=40) | st.just("c0\udcffee")
_FIELDS = ["username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc", "cnonce"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_FIELDS), _FIELD_TEXT)
def test_verify_any_field_text_gives_an_outcome(field: str, text: str) -> None:
    auth = DigestAuthenticator(_store(), NonceStore(secret=b"s" * 32))
    good = _answer(auth.challenges("pbx.test")[0], "alice", "secret")
    outcome = auth.verify("REGISTER", replace(good, **{field: text}), "pbx.test", request_uri=URI)
    assert isinstance(outcome, AuthOutcome)


def test_digest_uri_must_designate_the_request_uri() -> None:
    auth = DigestAuthenticator(_store())
    challenge = auth.challenges("pbx.test")[0]
    # a response computed (correctly) for another URI: RFC 7616 §3.4.6 says 400
    other = _answer(challenge, "alice", "secret", uri="sip:other.test")
    assert auth.verify("REGISTER", other, "pbx.test", request_uri=URI) is AuthOutcome.URI_MISMATCH
    junk = _answer(challenge, "alice", "secret", uri="not a uri")
    assert auth.verify("REGISTER", junk, "pbx.test", request_uri=URI) is AuthOutcome.URI_MISMATCH
    assert not AuthOutcome.URI_MISMATCH.is_failure
    # equal as SIP URIs (RFC 3261 §19.1.4) though not as text: accepted
    cased = _answer(challenge, "alice", "secret", uri="sip:PBX.test;transport=TCP")
    verdict = auth.verify("REGISTER", cased, "pbx.test", request_uri="sip:pbx.test;transport=tcp")
    assert verdict is AuthOutcome.OK
    # the refused answers did not use up the nonce-count: the right one passes
    right = _answer(challenge, "alice", "secret", nc="00000002")
    assert auth.verify("REGISTER", right, "pbx.test", request_uri=URI) is AuthOutcome.OK


@pytest.mark.parametrize(
    ("digest_uri", "request_uri", "same"),
    [
        ("sip:pbx.test", "sip:pbx.test", True),
        ("sip:PBX.Test:5060", "sip:pbx.test:5060", True),
        ("sip:%61lice@pbx.test", "sip:alice@pbx.test", True),
        ("sip:pbx.test", "sip:pbx.test:5060", False),
        ("sip:pbx.test", "sips:pbx.test", False),
        ("sip:pbx.test;transport=udp", "sip:pbx.test", False),
        ("sip:pbx.test", "sip:pbx.test;lr", True),
        ("", "sip:pbx.test", False),
        ("sip:", "sip:pbx.test", False),
    ],
)
def test_digest_uri_matches(digest_uri: str, request_uri: str, same: bool) -> None:
    assert digest_uri_matches(digest_uri, request_uri) is same
