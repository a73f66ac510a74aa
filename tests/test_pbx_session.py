"""In-call signalling through the B2BUA: UPDATE (RFC 3311), an offerless re-INVITE, and
session timers (RFC 4028) on both legs, and a carrier recognised by its trunk's registration,
with the phones of tests/test_pbx_b2bua.py.

Session timers run on a shortened clock (``session_timer_scale``): a 90 s interval lasts
0.9 s here, so that the refreshes and expiries happen within the test.
"""

from __future__ import annotations

import asyncio

import pytest

from pbxcore.sip.stack import IncomingRequest
from pbxcore.tenancy.snapshot import DidConfig
from tests.test_pbx_b2bua import DOMAIN, Pbx, Phone, _port, _responses, _sdp, _world, pbx
from tests.test_pbx_decision import operator, snapshot, trunk

__all__ = ["pbx"]  # the fixture, imported

SCALE = 0.01  # one timer second is 10 ms


class UpdatingPhone:
    """Phone 202 that says it takes UPDATE (Allow in its 200) and answers UPDATEs like a
    re-INVITE; it records what it gets."""

    def __init__(self, phone: Phone, *, timer: str | None = None, refresh: int = 200) -> None:
        self.phone = phone
        self.updates: list[IncomingRequest] = []
        self.timer = timer  # the Session-Expires its 200 to the INVITE carries
        self.refresh = refresh  # what it answers to a refresh
        phone.stack.set_handler("INVITE", self.on_invite)
        phone.stack.set_handler("UPDATE", self.on_update)

    def _headers(self) -> list[tuple[str, str]]:
        headers = [("Allow", "INVITE, ACK, CANCEL, BYE, UPDATE")]
        if self.timer is not None:
            headers += [("Session-Expires", self.timer), ("Require", "timer")]
        return headers

    async def on_invite(self, incoming: IncomingRequest) -> None:
        phone = self.phone
        if incoming.dialog is not None:
            phone.reinvites.append(incoming)
            incoming.respond(200, body=_sdp(40202), content_type="application/sdp")
            return
        phone.invites.append(incoming)
        incoming.respond(180)
        incoming.respond(
            200, body=_sdp(40202), content_type="application/sdp", headers=self._headers()
        )
        await incoming.wait_ack()

    async def on_update(self, incoming: IncomingRequest) -> None:
        self.updates.append(incoming)
        if self.refresh != 200:
            incoming.respond(self.refresh)
            return
        body = incoming.request.body
        if not body:
            incoming.respond(200, headers=self._headers())
            return
        answer = _sdp(40202) + (b"a=recvonly\r\n" if b"a=sendonly" in body else b"")
        incoming.respond(200, body=answer, content_type="application/sdp")


async def _call(caller: Phone, number: str, headers: list[tuple[str, str]] | None = None):  # type: ignore[no-untyped-def]
    request = caller.stack.new_request(
        "INVITE",
        f"sip:{number}@{DOMAIN}",
        from_=f"<sip:{caller.number}@{DOMAIN}>",
        target=caller.server,
        body=_sdp(30000 + int(caller.number)),
        headers=[("Content-Type", "application/sdp"), *(headers or [])],
    )
    return await caller.stack.invite(request, target=caller.server, credentials=caller.credentials)


async def _until(predicate, seconds: float = 10) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def _answered(pbx: Pbx, invite) -> None:  # type: ignore[no-untyped-def]
    assert (await asyncio.wait_for(_responses(invite), 10))[-1] == 200
    await _until(lambda: any(call.watch is not None for call in pbx.b2bua.calls.values()))


async def test_update_puts_the_call_on_hold_and_back_through_the_relay(pbx: Pbx) -> None:
    caller = pbx.phones["201"]
    callee = UpdatingPhone(pbx.phones["202"])
    invite = await _call(caller, "202", [("Allow", "INVITE, ACK, BYE, UPDATE")])
    await _answered(pbx, invite)
    dialog = invite.dialog
    assert dialog is not None
    for body, held in ((_sdp(30201) + b"a=sendonly\r\n", True), (_sdp(30201), False)):
        request = dialog.new_request(
            "UPDATE",
            [("Contact", f"<sip:201@127.0.0.1:{caller.server.port}>"),
             ("Content-Type", "application/sdp")],
            body=body,
        )  # fmt: skip
        final = await asyncio.wait_for(caller.stack.request(request, dialog=dialog), 10)
        assert final.status == 200, final
        # the callee takes UPDATE: it got one (not a re-INVITE), with the relay's port
        relayed = callee.updates[-1].request.body
        assert _port(relayed) != 30201 and (b"a=sendonly" in relayed) == held
        assert (b"a=recvonly" in final.body) == held and _port(final.body) != 40202
        [media] = pbx.media.calls.values()
        assert (media.a.direction == "sendonly") == held
    assert not pbx.phones["202"].reinvites and len(callee.updates) == 2
    # an UPDATE without SDP is a refresh, answered by pbxcore alone
    request = dialog.new_request("UPDATE", [])
    final = await asyncio.wait_for(caller.stack.request(request, dialog=dialog), 10)
    assert final.status == 200 and not final.body and len(callee.updates) == 2
    caller.stack.bye(dialog)
    await _until(lambda: not pbx.b2bua.calls and not pbx.media.calls)


async def test_an_update_with_bad_sdp_gets_488_and_the_call_stays(pbx: Pbx) -> None:
    caller = pbx.phones["201"]
    UpdatingPhone(pbx.phones["202"])
    invite = await _call(caller, "202")
    await _answered(pbx, invite)
    dialog = invite.dialog
    assert dialog is not None
    bad = _sdp(30201).replace(b"RTP/AVP 0 101", b"RTP/AVP 18").replace(b"PCMU", b"G729")
    request = dialog.new_request("UPDATE", [("Content-Type", "application/sdp")], body=bad)
    final = await asyncio.wait_for(caller.stack.request(request, dialog=dialog), 10)
    assert final.status == 488
    assert len(pbx.b2bua.calls) == 1
    caller.stack.bye(dialog)
    await _until(lambda: not pbx.b2bua.calls and not pbx.media.calls)


async def test_an_offerless_re_invite_gets_the_relays_offer_and_the_ack_answers(
    pbx: Pbx,
) -> None:
    caller, callee = pbx.phones["201"], pbx.phones["202"]
    invite = await caller.call("202")
    await _answered(pbx, invite)
    dialog = invite.dialog
    assert dialog is not None
    first_port = _port(invite.final.result().body)
    request = dialog.new_request("INVITE", [])  # no SDP: pbxcore offers
    reinvite = await caller.stack.invite(request, dialog=dialog, auto_ack=False)
    final = await asyncio.wait_for(reinvite.final, 10)
    assert final.status == 200 and b"PCMU/8000" in final.body and b"PCMA/8000" in final.body
    assert _port(final.body) == first_port  # the same relay port: nothing moved
    reinvite.ack(_sdp(30999), "application/sdp")  # the answer: the caller moved its port
    [media] = pbx.media.calls.values()
    await _until(
        lambda: media.a.remote_sdp is not None and _port(bytes(media.a.remote_sdp)) == 30999
    )
    assert not callee.reinvites  # the callee was not bothered
    caller.stack.bye(dialog)
    await _until(lambda: not pbx.b2bua.calls)


async def test_a_session_interval_below_min_se_gets_422(pbx: Pbx) -> None:
    invite = await _call(
        pbx.phones["201"], "202", [("Supported", "timer"), ("Session-Expires", "30")]
    )
    assert (await asyncio.wait_for(_responses(invite), 10))[-1] == 422
    assert invite.final.result().headers.get("min-se") == "90"
    assert not pbx.b2bua.calls and not pbx.media.calls
    malformed = await _call(pbx.phones["201"], "202", [("Session-Expires", "soon")])
    assert (await asyncio.wait_for(_responses(malformed), 10))[-1] == 400
    assert not pbx.b2bua.calls and not pbx.media.calls


async def test_a_caller_that_stops_refreshing_is_hung_up_on_both_sides(pbx: Pbx) -> None:
    pbx.b2bua.session_timer_scale = SCALE
    caller, callee = pbx.phones["201"], pbx.phones["202"]
    invite = await _call(
        caller, "202", [("Supported", "timer"), ("Session-Expires", "120;refresher=uac")]
    )
    await _answered(pbx, invite)
    final = invite.final.result()
    assert final.headers.get("session-expires") == "120;refresher=uac"
    assert "timer" in final.require
    # the caller is the refresher and never refreshes: after 120 - 32 timer seconds, BYE
    await _until(lambda: caller.byes and callee.byes and not pbx.b2bua.calls)
    assert not pbx.media.calls


async def test_a_refresh_from_the_caller_keeps_the_call(pbx: Pbx) -> None:
    pbx.b2bua.session_timer_scale = SCALE
    caller, callee = pbx.phones["201"], pbx.phones["202"]
    invite = await _call(
        caller, "202", [("Supported", "timer"), ("Session-Expires", "300;refresher=uac")]
    )
    await _answered(pbx, invite)
    dialog = invite.dialog
    assert dialog is not None
    headers = [("Supported", "timer"), ("Session-Expires", "300;refresher=uac")]
    # a refresh every 50 timer seconds for 400: without them the call would end at 268
    for _ in range(8):
        await asyncio.sleep(50 * SCALE)
        request = dialog.new_request("UPDATE", headers)
        final = await asyncio.wait_for(caller.stack.request(request, dialog=dialog), 10)
        assert final.status == 200
        assert final.headers.get("session-expires") == "300;refresher=uac"
    assert len(pbx.b2bua.calls) == 1 and not caller.byes and not callee.byes
    caller.stack.bye(dialog)
    await _until(lambda: not pbx.b2bua.calls)


async def test_pbxcore_refreshes_a_caller_without_timers_by_re_invite(pbx: Pbx) -> None:
    pbx.b2bua.session_timer_scale = SCALE
    caller = pbx.phones["201"]  # no Supported: timer, no Allow: UPDATE
    invite = await caller.call("202")
    await _answered(pbx, invite)
    final = invite.final.result()
    assert final.headers.get("session-expires") == "1800;refresher=uas"
    assert "timer" not in final.require  # the caller cannot be required to know timers
    await _until(lambda: bool(caller.reinvites), 30)  # after 900 timer seconds
    refresh = caller.reinvites[0].request
    assert refresh.headers.get("session-expires") == "1800;refresher=uac"
    assert b"m=audio" in refresh.body  # a re-INVITE re-offers the relay port
    assert len(pbx.b2bua.calls) == 1
    assert invite.dialog is not None
    caller.stack.bye(invite.dialog)
    await _until(lambda: not pbx.b2bua.calls)


@pytest.mark.parametrize("refresh", [200, 481])
async def test_pbxcore_refreshes_the_callee_by_update_and_ends_the_call_on_481(
    pbx: Pbx, refresh: int
) -> None:
    pbx.b2bua.session_timer_scale = SCALE
    caller = pbx.phones["201"]
    callee = UpdatingPhone(pbx.phones["202"], timer="90;refresher=uac", refresh=refresh)
    invite = await caller.call("202")
    assert (await asyncio.wait_for(_responses(invite), 10))[-1] == 200
    [incoming] = pbx.phones["202"].invites
    offered = incoming.request
    assert "timer" in offered.supported and offered.headers.get("session-expires") == "1800"
    assert "UPDATE" in offered.headers.get_all("allow")
    # the callee made pbxcore (its UAC) the refresher: an UPDATE without SDP at 45 s
    await _until(lambda: bool(callee.updates), 30)
    update = callee.updates[0].request
    assert not update.body and update.headers.get("session-expires") == "90;refresher=uac"
    if refresh == 200:
        await _until(lambda: len(callee.updates) >= 2, 30)  # and again 45 s later
        assert len(pbx.b2bua.calls) == 1
        assert invite.dialog is not None
        caller.stack.bye(invite.dialog)
        await _until(lambda: not pbx.b2bua.calls)
    else:  # the callee lost the dialog: both sides are hung up
        await _until(lambda: bool(caller.byes) and not pbx.b2bua.calls)
    assert not pbx.media.calls


async def test_a_carrier_calling_its_registered_contact_reaches_the_did(pbx: Pbx) -> None:
    """A trunk without inbound_ips, recognised by its registration (the line token of the
    Contact it registered): the DID is in To, the Request-URI is pbxcore's Contact."""
    base = _world()
    carrier = trunk("carrier-reg", host="127.0.0.1")  # no inbound_ips
    did = DidConfig("+74951110002", "op1", "A", {"type": "extension", "id": "e202"})
    world = snapshot([operator("op1", [carrier], {})], [base.tenants["A"]], [did])
    pbx.b2bua._snapshot = lambda: world
    pbx.b2bua.registered_trunk = lambda request, _source: (
        "carrier-reg" if request.uri.param("line") == "f00d" else None
    )
    carrier_stack = pbx.phones["203"].stack  # an unregistered stack plays the carrier
    server = pbx.phones["203"].server

    async def from_carrier(line: str):  # type: ignore[no-untyped-def]
        request = carrier_stack.new_request(
            "INVITE",
            f"sip:pbx@{server.host}:{server.port};line={line}",
            from_="<sip:+74957654321@carrier.example>",
            to="<sip:+74951110002@carrier.example>",
            target=server,
            body=_sdp(30203),
            headers=[("Content-Type", "application/sdp")],
        )
        return await carrier_stack.invite(request, target=server)

    forged = await from_carrier("beef")
    assert (await asyncio.wait_for(_responses(forged), 10))[-1] == 403
    invite = await from_carrier("f00d")
    assert (await asyncio.wait_for(_responses(invite), 10))[-1] == 200
    [incoming] = pbx.phones["202"].invites
    assert incoming.request.to.uri.user == "202"
    assert invite.dialog is not None
    carrier_stack.bye(invite.dialog)
    await _until(lambda: not pbx.b2bua.calls and not pbx.media.calls)
