"""Registrar: RFC 3261 §10.3 binding rules and RFC 8760 digest authentication."""

from __future__ import annotations

import pytest

from pbxcore.sip import Address, Request, Response
from pbxcore.sip.auth import DigestAuthenticator, NonceStore
from pbxcore.sip.credentials import FileCredentialStore, RealmPolicy
from pbxcore.sip.guard import BruteForceGuard, GuardAction, GuardPolicy
from pbxcore.sip.location import Binding, MemoryLocationService
from pbxcore.sip.registrar import (
    DROP,
    ContactUpdate,
    Registrar,
    RegistrarError,
    RegistrarPolicy,
    apply_register,
)
from pbxcore.sip.uri import Uri
from tests.sip_helpers import RegisteringUA


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registrar(clock: Clock) -> Registrar:
    store = FileCredentialStore()
    store.add_user("pbx.test", "alice", "secret")
    store.add_user("pbx.test", "bob", "builder")
    store.add_user("sha.test", "carol", "pw")
    store.set_policy("sha.test", RealmPolicy(allow_md5=False))
    return Registrar(
        store,
        MemoryLocationService(clock=clock),
        authenticator=DigestAuthenticator(store, NonceStore(ttl=300, clock=clock)),
        guard=BruteForceGuard(GuardPolicy(max_failures=3, window=60, ban_time=120), clock=clock),
        policy=RegistrarPolicy(min_expires=60, max_expires=3600, default_expires=1800),
        clock=clock,
    )


async def _handle(registrar: Registrar, request: Request, ip: str = "192.0.2.10") -> Response:
    response = await registrar.handle(request, ip)
    assert response is not None
    return response


async def _register(
    registrar: Registrar, ua: RegisteringUA, algorithm: str = "MD5", **kwargs: object
) -> Response:
    challenge = await _handle(registrar, ua.register(**kwargs))  # type: ignore[arg-type]
    assert challenge.status == 401
    auth = ua.answer(challenge, algorithm=algorithm)
    return await _handle(registrar, ua.register(authorization=auth, **kwargs))  # type: ignore[arg-type]


def _contacts(response: Response) -> list[tuple[str, int | None, float | None]]:
    out = []
    for value in response.headers.get_all("contact"):
        address = Address.parse(value)
        out.append((str(address.uri), address.expires, address.q))
    return out


async def test_challenge_offers_sha256_and_md5(registrar: Registrar) -> None:
    ua = RegisteringUA("alice", "pbx.test", "secret")
    response = await _handle(registrar, ua.register())
    assert response.status == 401
    values = response.headers.get_all("www-authenticate")
    assert [v.split("algorithm=")[1].split(",")[0] for v in values] == ["SHA-256", "MD5"]
    assert response.to.tag is not None
    assert registrar.precheck(ua.register(), "192.0.2.10") is not None


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
async def test_register_with_digest_adds_binding(registrar: Registrar, algorithm: str) -> None:
    ua = RegisteringUA("alice", "pbx.test", "secret", contact="sip:alice@198.51.100.7:5070")
    response = await _register(registrar, ua, algorithm, expires=600)
    assert response.status == 200
    assert _contacts(response) == [("sip:alice@198.51.100.7:5070", 600, None)]
    assert response.headers.get("date") == "Tue, 14 Nov 2023 22:13:20 GMT"
    bindings = await registrar.location.lookup("sip:alice@pbx.test")
    assert [b.contact for b in bindings] == ["sip:alice@198.51.100.7:5070"]


async def test_md5_disabled_realm_only_accepts_sha256(registrar: Registrar) -> None:
    ua = RegisteringUA("carol", "sha.test", "pw")
    challenge = await _handle(registrar, ua.register())
    values = challenge.headers.get_all("www-authenticate")
    assert len(values) == 1 and "SHA-256" in values[0]
    md5 = ua.answer(values[0].replace("SHA-256", "MD5"))
    response = await _handle(registrar, ua.register(authorization=md5))
    assert response.status == 401  # MD5 answer refused: challenged again
    sha = ua.answer(values[0])
    assert (await _handle(registrar, ua.register(authorization=sha))).status == 200


async def test_wrong_password_is_403_and_guard_bans(registrar: Registrar, clock: Clock) -> None:
    ua = RegisteringUA("alice", "pbx.test", "nope")
    for _ in range(3):
        response = await _register(registrar, ua)
        assert response.status == 403
    good = RegisteringUA("alice", "pbx.test", "secret")
    # the IP is banned now: even the right password gets 403 before any challenge
    assert (await _handle(registrar, good.register())).status == 403
    clock.now += 121
    assert (await _register(registrar, good)).status == 200


async def test_guessing_from_one_address_does_not_lock_the_user_out(
    registrar: Registrar, clock: Clock
) -> None:
    guesser = RegisteringUA("alice", "pbx.test", "nope")
    for _ in range(10):
        challenge = await _handle(registrar, guesser.register(), ip="203.0.113.66")
        if challenge.status == 401:
            wrong = guesser.answer(challenge)
            answer = await _handle(registrar, guesser.register(authorization=wrong), "203.0.113.66")
            assert answer.status == 403
    # alice's own phone, from an address that never failed, still registers
    phone = RegisteringUA("alice", "pbx.test", "secret")
    assert (await _register(registrar, phone)).status == 200
    clock.now += 30
    assert (await _register(registrar, phone)).status == 200


async def test_guessing_from_many_addresses_throttles_only_the_guessers(
    registrar: Registrar,
) -> None:
    guesser = RegisteringUA("alice", "pbx.test", "nope")
    for n in range(3):  # one failure each: no address ban, but alice is under attack now
        challenge = await _handle(registrar, guesser.register(), ip=f"203.0.113.{n}")
        wrong = guesser.answer(challenge)
        answer = await _handle(registrar, guesser.register(authorization=wrong), f"203.0.113.{n}")
        assert answer.status == 403
    challenge = await _handle(registrar, guesser.register(), ip="203.0.113.0")
    assert challenge.status == 401  # the address itself is not banned ...
    right = RegisteringUA("alice", "pbx.test", "secret")
    answer = await _handle(
        registrar, right.register(authorization=right.answer(challenge)), "203.0.113.0"
    )
    assert answer.status == 403  # ... but it may not try alice again for a while
    assert (await _register(registrar, right)).status == 200  # a clean address may


async def test_guard_drop_action(clock: Clock) -> None:
    store = FileCredentialStore()
    store.add_user("pbx.test", "alice", "secret")
    guard = BruteForceGuard(
        GuardPolicy(max_failures=1, action=GuardAction.DROP, ban_time=60), clock=clock
    )
    registrar = Registrar(store, MemoryLocationService(clock=clock), guard=guard, clock=clock)
    ua = RegisteringUA("alice", "pbx.test", "bad")
    challenge = await _handle(registrar, ua.register())
    response = await registrar.handle(ua.register(authorization=ua.answer(challenge)), "10.1.1.1")
    assert response is not None and response.status == 403
    assert await registrar.handle(ua.register(), "10.1.1.1") is None
    assert registrar.precheck(ua.register(), "10.1.1.1") is DROP


async def test_unknown_user_counts_as_failure(registrar: Registrar) -> None:
    ua = RegisteringUA("mallory", "pbx.test", "x")
    assert (await _register(registrar, ua)).status == 403


async def test_user_may_only_register_own_aor(registrar: Registrar) -> None:
    ua = RegisteringUA("alice", "pbx.test", "builder", auth_user="bob")
    assert (await _register(registrar, ua)).status == 403
    assert await registrar.location.lookup("sip:alice@pbx.test") == []


async def test_unknown_domain_and_bad_aor(registrar: Registrar) -> None:
    ua = RegisteringUA("alice", "elsewhere.test", "secret")
    assert (await _handle(registrar, ua.register())).status == 404
    request = RegisteringUA("alice", "pbx.test", "secret").register()
    request.headers.set("To", "<sip:pbx.test>")
    assert (await _handle(registrar, request)).status == 404


async def test_interval_too_brief_and_clamp(registrar: Registrar) -> None:
    ua = RegisteringUA("alice", "pbx.test", "secret")
    response = await _register(registrar, ua, expires=30)
    assert response.status == 423
    assert response.headers.get("min-expires") == "60"
    response = await _register(registrar, ua, expires=99999)
    assert response.status == 200
    assert _contacts(response)[0][1] == 3600
    # contact parameter overrides the Expires header; no expiry at all: the default
    response = await _register(registrar, ua, expires=None, contacts=["<sip:a@10.0.0.1>"])
    assert ("sip:a@10.0.0.1", 1800, None) in _contacts(response)
    response = await _register(registrar, ua, expires=600, contacts=["<sip:b@10.0.0.1>;expires=20"])
    assert response.status == 423


async def test_multiple_contacts_q_refresh_remove_and_query(
    registrar: Registrar, clock: Clock
) -> None:
    ua = RegisteringUA("alice", "pbx.test", "secret")
    response = await _register(
        registrar,
        ua,
        expires=600,
        contacts=["<sip:a@10.0.0.1>;q=0.1", "<sip:a@10.0.0.2>;q=0.9", "<sip:a@10.0.0.3>"],
    )
    assert [c[0] for c in _contacts(response)] == [
        "sip:a@10.0.0.3",
        "sip:a@10.0.0.2",
        "sip:a@10.0.0.1",
    ]
    assert _contacts(response)[1][2] == 0.9
    clock.now += 100
    # refresh one (equal URI in another spelling), remove another
    response = await _register(
        registrar,
        ua,
        expires=600,
        contacts=["<sip:a@10.0.0.1;transport=udp>;expires=0", "<SIP:a@10.0.0.2>;q=0.5"],
    )
    # transport=udp on one side only means a different URI (RFC 3261 §19.1.4)
    assert response.status == 200
    got = {c[0]: c[1] for c in _contacts(response)}
    assert got == {"sip:a@10.0.0.3": 500, "sip:a@10.0.0.2": 600, "sip:a@10.0.0.1": 500}
    response = await _register(registrar, ua, expires=0, contacts=["<sip:a@10.0.0.1>"])
    assert {c[0] for c in _contacts(response)} == {"sip:a@10.0.0.3", "sip:a@10.0.0.2"}
    # a query: no Contact header, nothing changes
    response = await _register(registrar, ua, expires=None, contacts=[])
    assert response.status == 200 and len(_contacts(response)) == 2
    clock.now += 500
    response = await _register(registrar, ua, expires=None, contacts=[])
    assert _contacts(response) == [("sip:a@10.0.0.2", 100, 0.5)]


async def test_wildcard_removes_all_and_needs_expires_zero(registrar: Registrar) -> None:
    ua = RegisteringUA("alice", "pbx.test", "secret")
    await _register(registrar, ua, contacts=["<sip:a@10.0.0.1>", "<sip:a@10.0.0.2>"])
    response = await _register(registrar, ua, expires=600, contacts=["*"])
    assert response.status == 400
    response = await _register(registrar, ua, expires=0, contacts=["*"])
    assert response.status == 200 and response.headers.get_all("contact") == []
    assert await registrar.location.lookup("sip:alice@pbx.test") == []


async def test_stale_nonce_and_replay_are_rechallenged(registrar: Registrar, clock: Clock) -> None:
    ua = RegisteringUA("alice", "pbx.test", "secret")
    challenge = await _handle(registrar, ua.register())
    auth = ua.answer(challenge, nc=1)
    assert (await _handle(registrar, ua.register(authorization=auth))).status == 200
    replay = await _handle(registrar, ua.register(authorization=auth))
    assert replay.status == 401 and "stale" not in replay.headers.get_all("www-authenticate")[0]
    clock.now += 301
    stale = await _handle(registrar, ua.register(authorization=ua.answer(challenge, nc=2)))
    assert stale.status == 401
    assert stale.headers.get_all("www-authenticate")[0].endswith("stale=true")


async def test_malformed_authorization_is_400(registrar: Registrar) -> None:
    ua = RegisteringUA("alice", "pbx.test", "secret")
    bad = await _handle(registrar, ua.register(authorization='Digest username="alice'))
    assert bad.status == 400
    challenge = await _handle(registrar, ua.register())
    auth = ua.answer(challenge).replace("nc=00000001", "nc=1")
    assert (await _handle(registrar, ua.register(authorization=auth))).status == 400


async def test_undecodable_bytes_in_credentials_are_400(registrar: Registrar) -> None:
    ua = RegisteringUA("alice", "pbx.test", "secret")
    for good, bad in [('cnonce="0a4f113b"', 'cnonce="0a4f\udcff13b"'), ("alice", "al\udcffice")]:
        challenge = await _handle(registrar, ua.register())
        auth = ua.answer(challenge).replace(good, bad)
        request = ua.register(authorization=auth)
        wire = bytes(request)
        assert b"\xff" in wire  # the byte as it came off the wire
        response = await _handle(registrar, request)
        assert response.status == 400
    assert (await _register(registrar, ua)).status == 200  # no failure was counted


async def test_digest_uri_must_be_the_request_uri(registrar: Registrar) -> None:
    ua = RegisteringUA("alice", "pbx.test", "secret")
    for uri in ("sip:elsewhere.test", "sip:pbx.test:5070", "garbage"):
        for _ in range(3):  # not counted as failed guesses: no ban follows
            challenge = await _handle(registrar, ua.register())
            auth = ua.answer(challenge, uri=uri)
            response = await _handle(registrar, ua.register(authorization=auth))
            assert response.status == 400
    challenge = await _handle(registrar, ua.register())
    auth = ua.answer(challenge, uri="sip:PBX.TEST")  # the same URI (RFC 3261 §19.1.4)
    assert (await _handle(registrar, ua.register(authorization=auth))).status == 200


async def test_out_of_order_cseq_is_rejected(registrar: Registrar) -> None:
    ua = RegisteringUA("alice", "pbx.test", "secret")
    assert (await _register(registrar, ua, cseq=10)).status == 200
    assert (await _register(registrar, ua, cseq=5)).status == 400


async def test_too_many_contacts(clock: Clock) -> None:
    store = FileCredentialStore()
    store.add_user("pbx.test", "alice", "secret")
    registrar = Registrar(
        store,
        MemoryLocationService(clock=clock),
        policy=RegistrarPolicy(max_contacts=2),
        clock=clock,
    )
    ua = RegisteringUA("alice", "pbx.test", "secret")
    contacts = [f"<sip:a@10.0.0.{i}>" for i in range(3)]
    assert (await _register(registrar, ua, contacts=contacts)).status == 403


def _binding(contact: str, call_id: str = "c1", cseq: int = 1) -> Binding:
    return Binding(
        aor="sip:a@x", contact=contact, expires_at=2000.0, q=None, call_id=call_id, cseq=cseq
    )


def _update(text: str, expires: int) -> ContactUpdate:
    uri = Uri.parse(text)
    return ContactUpdate(str(uri), uri, None, expires)


def test_apply_register_rules() -> None:
    current = [_binding("sip:a@1", "c1", 5)]
    new = _update("sip:a@1", 60)
    # another Call-ID may update whatever its CSeq
    updated = apply_register(
        current, aor="sip:a@x", contacts=[new], call_id="c2", cseq=1, now=1000.0
    )
    assert updated[0].call_id == "c2" and updated[0].expires_at == 1060.0
    with pytest.raises(RegistrarError, match="CSeq"):
        apply_register(current, aor="sip:a@x", contacts=None, call_id="c1", cseq=5, now=1000.0)
    assert (
        apply_register(current, aor="sip:a@x", contacts=None, call_id="c9", cseq=1, now=1.0) == []
    )
    # removing an unknown contact is not an error
    assert (
        apply_register(
            [], aor="sip:a@x", contacts=[_update("sip:a@1", 0)], call_id="c1", cseq=1, now=1.0
        )
        == []
    )
    # equal URIs (RFC 3261 §19.1.4: host case, escapes) refresh the binding in its place
    two = [_binding("sip:a@1"), _binding("sip:%62@Host.example")]
    updated = apply_register(
        two,
        aor="sip:a@x",
        contacts=[_update("sip:b@host.EXAMPLE", 90), _update("sip:c@3", 90)],
        call_id="c2",
        cseq=1,
        now=1000.0,
    )
    assert [b.contact for b in updated] == ["sip:a@1", "sip:b@host.EXAMPLE", "sip:c@3"]
    assert updated[1].expires_at == 1090.0


def test_apply_register_compares_contacts_in_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2,000 stored bindings refreshed by 2,000 contacts: each contact is looked up, not
    # compared with every stored one (4,000,000 comparisons before the fix)
    stored = [_binding(f"sip:u{i}@10.0.{i // 250}.{i % 250}") for i in range(2000)]
    updates = [_update(b.contact, 60) for b in stored]
    calls = 0
    original = Uri.__eq__

    def counting(self: Uri, other: object) -> bool:
        nonlocal calls
        calls += 1
        return original(self, other)

    monkeypatch.setattr(Uri, "__eq__", counting)
    updated = apply_register(
        stored,
        aor="sip:a@x",
        contacts=updates,
        call_id="c2",
        cseq=1,
        now=1000.0,
        max_contacts=2000,
    )
    assert len(updated) == 2000 and all(b.call_id == "c2" for b in updated)
    assert calls <= 2 * len(updates)


async def test_thousands_of_contacts_are_refused_before_they_are_parsed(
    registrar: Registrar, monkeypatch: pytest.MonkeyPatch
) -> None:
    ua = RegisteringUA("alice", "pbx.test", "secret")
    challenge = await _handle(registrar, ua.register())
    many = ", ".join(f"<sip:alice@10.1.{i // 250}.{i % 250}:5060>" for i in range(2000))
    request = ua.register(contacts=[many], authorization=ua.answer(challenge))
    parses = 0
    original = Uri.parse.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Uri], text: str) -> Uri:
        nonlocal parses
        parses += 1
        return original(cls, text)  # type: ignore[no-any-return]

    monkeypatch.setattr(Uri, "parse", classmethod(counting))
    response = await _handle(registrar, request)
    assert response.status == 403 and response.reason == "Too Many Contacts"
    assert parses < 10  # the To and the digest uri, never the 2,000 contacts


async def test_credentials_and_policy_can_be_swapped_at_run_time(
    registrar: Registrar, clock: Clock
) -> None:
    dave = RegisteringUA("dave", "new.test", "pw", contact="sip:dave@198.51.100.9")
    assert (await _handle(registrar, dave.register())).status == 404  # not served yet
    store = FileCredentialStore()
    store.add_user("new.test", "dave", "pw")
    registrar.credentials = store  # what a new configuration snapshot does
    assert registrar.authenticator.credentials is store
    assert (await _register(registrar, dave)).status == 200
    alice = RegisteringUA("alice", "pbx.test", "secret")
    assert (await _handle(registrar, alice.register())).status == 404  # pbx.test is gone
    registrar.policy = RegistrarPolicy(min_expires=900, max_expires=3600, default_expires=1800)
    brief = await _register(registrar, dave, expires=600)
    assert brief.status == 423 and brief.headers.get("min-expires") == "900"


@pytest.mark.parametrize(
    "kwargs", [{"min_expires": 0}, {"min_expires": 100, "default_expires": 50}, {"max_contacts": 0}]
)
def test_policy_validation(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        RegistrarPolicy(**kwargs)
