"""Dialog state (RFC 3261 §12): creation on both sides, in-dialog requests and responses,
the requests a dialog builds. Pure state, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxcore.sip.dialog import Dialog, DialogError, DialogId, DialogState
from pbxcore.sip.message import Request, Response, make_response
from pbxcore.sip.uri import Uri

ALICE_CONTACT = "<sip:alice@192.0.2.10:5062;transport=tcp>"
BOB_CONTACT = "<sip:bob@198.51.100.20:5070>"
P1 = "<sip:p1.example.com;lr>"
P2 = "<sip:p2.example.com;lr>"


def invite(
    *,
    record_route: list[str] | None = None,
    contact: str | None = ALICE_CONTACT,
    uri: str = "sip:bob@example.com",
    cseq: int = 7,
    from_tag: str | None = "a1",
    to: str = '"Bob" <sip:bob@example.com>',
) -> Request:
    """An INVITE from alice to bob, as it reaches bob (after the proxies)."""
    from_ = "<sip:alice@example.com>" + (f";tag={from_tag}" if from_tag else "")
    headers = [
        ("Via", "SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-1"),
        ("Max-Forwards", "70"),
        ("From", from_),
        ("To", to),
        ("Call-ID", "call-1@example.com"),
        ("CSeq", f"{cseq} INVITE"),
    ]
    if contact is not None:
        headers.append(("Contact", contact))
    headers += [("Record-Route", value) for value in record_route or ()]
    return Request("INVITE", uri, headers)


def answer(
    request: Request, status: int = 200, *, contact: str | None = BOB_CONTACT, tag: str = "b1"
) -> Response:
    headers = [("Contact", contact)] if contact is not None else []
    return make_response(request, status, to_tag=tag, headers=headers)


def in_dialog(
    method: str, cseq: int, *, contact: str | None = None, from_tag: str = "a1"
) -> Request:
    """A request alice sends in the dialog bob holds."""
    headers = [
        ("Via", f"SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-{method}{cseq}"),
        ("From", f"<sip:alice@example.com>;tag={from_tag}"),
        ("To", "<sip:bob@example.com>;tag=b1"),
        ("Call-ID", "call-1@example.com"),
        ("CSeq", f"{cseq} {method}"),
    ]
    if contact is not None:
        headers.append(("Contact", contact))
    return Request(method, "sip:bob@198.51.100.20:5070", headers)


def state(dialog: Dialog) -> DialogState:
    """The state, read afresh (mypy would keep what it narrowed before a method call)."""
    return dialog.state


def uas_dialog(**kwargs: object) -> Dialog:
    request = invite(**kwargs)  # type: ignore[arg-type]
    return Dialog.from_uas(request, answer(request))


def uac_dialog(record_route: list[str] | None = None, status: int = 200) -> Dialog:
    """Alice's dialog: her INVITE (no Record-Route of its own) and bob's answer, which
    carries the Record-Route the proxies put in the INVITE."""
    sent = invite()
    response = answer(invite(record_route=record_route), status)
    return Dialog.from_uac(sent, response)


# -- creation ---------------------------------------------------------------------------------


class TestFromUas:
    def test_ids_uris_target_and_sequence_numbers(self) -> None:
        request = invite(cseq=7)
        dialog = Dialog.from_uas(request, answer(request))
        assert dialog.id == DialogId("call-1@example.com", "b1", "a1")
        assert dialog.local_tag == "b1" and dialog.remote_tag == "a1"
        assert dialog.local_uri == '"Bob" <sip:bob@example.com>'
        assert dialog.remote_uri == "<sip:alice@example.com>"
        assert dialog.remote_target == Uri.parse("sip:alice@192.0.2.10:5062;transport=tcp")
        assert dialog.remote_seq == 7
        assert dialog.route_set == []
        assert dialog.state is DialogState.CONFIRMED
        assert not dialog.secure

    def test_route_set_keeps_record_route_order(self) -> None:
        # bob's requests go back through the proxies in the order the INVITE listed them
        dialog = uas_dialog(record_route=[P2, P1])
        assert dialog.route_set == [P2, P1]

    def test_comma_separated_record_route_is_split(self) -> None:
        dialog = uas_dialog(record_route=[f"{P2}, {P1}"])
        assert dialog.route_set == [P2, P1]

    def test_provisional_makes_an_early_dialog(self) -> None:
        request = invite()
        dialog = Dialog.from_uas(request, answer(request, 180))
        assert state(dialog) is DialogState.EARLY
        dialog.confirm()
        assert state(dialog) is DialogState.CONFIRMED

    def test_sips_request_uri_makes_it_secure(self) -> None:
        assert uas_dialog(uri="sips:bob@example.com").secure

    def test_needs_a_contact(self) -> None:
        request = invite(contact=None)
        with pytest.raises(ValueError, match="Contact"):
            Dialog.from_uas(request, answer(request))

    def test_needs_a_from_tag(self) -> None:
        request = invite(from_tag=None)
        with pytest.raises(ValueError, match="From tag"):
            Dialog.from_uas(request, answer(request))

    def test_needs_our_to_tag(self) -> None:
        request = invite()
        response = make_response(request, 200, headers=[("Contact", BOB_CONTACT)])
        with pytest.raises(ValueError, match="To tag"):
            Dialog.from_uas(request, response)

    def test_first_local_cseq_is_chosen_then_incremented(self) -> None:
        dialog = uas_dialog()
        assert dialog.local_seq == 0  # §12.1.1: empty until our first request
        first = dialog.next_seq()
        assert 1 <= first <= 2**16  # §8.1.1.5: below 2**31 and room to grow
        assert dialog.next_seq() == first + 1


class TestFromUac:
    def test_ids_uris_target_and_sequence_numbers(self) -> None:
        dialog = uac_dialog()
        assert dialog.id == DialogId("call-1@example.com", "a1", "b1")
        assert dialog.local_uri == "<sip:alice@example.com>"
        assert dialog.remote_uri == '"Bob" <sip:bob@example.com>'
        assert dialog.remote_target == Uri.parse("sip:bob@198.51.100.20:5070")
        assert dialog.local_seq == 7  # the INVITE's
        assert dialog.remote_seq is None
        assert dialog.state is DialogState.CONFIRMED

    def test_route_set_reverses_record_route(self) -> None:
        # the INVITE passed P1 then P2; Record-Route reads P2, P1; alice's requests go
        # to P1 first
        dialog = uac_dialog(record_route=[P2, P1])
        assert dialog.route_set == [P1, P2]

    def test_reverses_across_comma_separated_and_separate_lines(self) -> None:
        p3 = "<sip:p3.example.com;lr>"
        dialog = uac_dialog(record_route=[f"{p3}, {P2}", P1])
        assert dialog.route_set == [P1, P2, p3]

    def test_without_contact_the_request_uri_is_the_target(self) -> None:
        sent = invite()
        dialog = Dialog.from_uac(sent, answer(sent, contact=None))
        assert dialog.remote_target == sent.uri

    def test_needs_the_remote_tag(self) -> None:
        sent = invite()
        response = make_response(sent, 180)
        with pytest.raises(ValueError, match="tags"):
            Dialog.from_uac(sent, response)

    def test_early_dialog_confirmed_by_2xx_takes_its_route_set(self) -> None:
        sent = invite()
        dialog = Dialog.from_uac(sent, answer(invite(record_route=[P1]), 180))
        assert state(dialog) is DialogState.EARLY and dialog.route_set == [P1]
        dialog.receive_response(sent, answer(invite(record_route=[P2, P1]), 200))
        assert state(dialog) is DialogState.CONFIRMED
        assert dialog.route_set == [P1, P2]  # §13.2.2.4: recomputed from the 2xx


# -- what the peer sends ------------------------------------------------------------------------


class TestReceiveRequest:
    def test_higher_cseq_is_accepted(self) -> None:
        dialog = uas_dialog(cseq=7)
        dialog.receive_request(in_dialog("INFO", 8))
        dialog.receive_request(in_dialog("BYE", 20))  # gaps are fine (§12.2.2)
        assert dialog.remote_seq == 20

    def test_lower_cseq_is_refused_with_500(self) -> None:
        dialog = uas_dialog(cseq=7)
        dialog.receive_request(in_dialog("INFO", 9))
        with pytest.raises(DialogError) as caught:
            dialog.receive_request(in_dialog("BYE", 8))
        assert caught.value.status == 500
        assert caught.value.reason == "CSeq Out Of Order"
        assert dialog.remote_seq == 9  # unchanged by the refused request

    def test_ack_and_cancel_reuse_the_invite_number(self) -> None:
        dialog = uas_dialog(cseq=7)
        dialog.receive_request(in_dialog("INFO", 8))
        dialog.receive_request(in_dialog("ACK", 7))
        dialog.receive_request(in_dialog("CANCEL", 7))
        assert dialog.remote_seq == 8

    def test_first_request_in_a_uac_dialog_sets_the_remote_number(self) -> None:
        dialog = uac_dialog()
        assert dialog.remote_seq is None
        dialog.receive_request(in_dialog("BYE", 1))  # any number: nothing seen yet
        assert dialog.remote_seq == 1

    @pytest.mark.parametrize("method", ["INVITE", "UPDATE"])
    def test_target_refresh_replaces_the_remote_target(self, method: str) -> None:
        dialog = uas_dialog(cseq=7)
        dialog.receive_request(in_dialog(method, 8, contact="<sip:alice@192.0.2.99:6000>"))
        assert dialog.remote_target == Uri.parse("sip:alice@192.0.2.99:6000")

    def test_target_refresh_without_contact_keeps_the_target(self) -> None:
        dialog = uas_dialog(cseq=7)
        before = dialog.remote_target
        dialog.receive_request(in_dialog("UPDATE", 8))
        assert dialog.remote_target == before

    @pytest.mark.parametrize("method", ["INFO", "BYE", "MESSAGE"])
    def test_other_methods_do_not_refresh_the_target(self, method: str) -> None:
        dialog = uas_dialog(cseq=7)
        before = dialog.remote_target
        dialog.receive_request(in_dialog(method, 8, contact="<sip:alice@192.0.2.99:6000>"))
        assert dialog.remote_target == before

    def test_refused_refresh_keeps_the_target(self) -> None:
        dialog = uas_dialog(cseq=7)
        before = dialog.remote_target
        with pytest.raises(DialogError):
            dialog.receive_request(in_dialog("UPDATE", 6, contact="<sip:x@192.0.2.99>"))
        assert dialog.remote_target == before


class TestReceiveResponse:
    def test_2xx_to_a_reinvite_refreshes_the_target(self) -> None:
        dialog = uac_dialog()
        reinvite = dialog.new_request("INVITE", [("Contact", ALICE_CONTACT)])
        response = make_response(reinvite, 200, headers=[("Contact", "<sip:bob@203.0.113.5>")])
        dialog.receive_response(reinvite, response)
        assert dialog.remote_target == Uri.parse("sip:bob@203.0.113.5")
        assert dialog.state is DialogState.CONFIRMED

    def test_2xx_to_update_refreshes_the_target(self) -> None:
        dialog = uac_dialog()
        update = dialog.new_request("UPDATE")
        response = make_response(update, 200, headers=[("Contact", "<sip:bob@203.0.113.6>")])
        dialog.receive_response(update, response)
        assert dialog.remote_target == Uri.parse("sip:bob@203.0.113.6")

    def test_error_to_a_reinvite_keeps_the_target(self) -> None:
        dialog = uac_dialog()
        before = dialog.remote_target
        reinvite = dialog.new_request("INVITE")
        response = make_response(reinvite, 488, headers=[("Contact", "<sip:bob@203.0.113.5>")])
        dialog.receive_response(reinvite, response)
        assert dialog.remote_target == before
        assert dialog.state is DialogState.CONFIRMED

    def test_2xx_to_info_keeps_the_target(self) -> None:
        dialog = uac_dialog()
        before = dialog.remote_target
        info = dialog.new_request("INFO")
        response = make_response(info, 200, headers=[("Contact", "<sip:bob@203.0.113.5>")])
        dialog.receive_response(info, response)
        assert dialog.remote_target == before

    @pytest.mark.parametrize("status", [481, 408])
    def test_481_and_408_end_the_dialog(self, status: int) -> None:
        dialog = uac_dialog()
        info = dialog.new_request("INFO")
        dialog.receive_response(info, make_response(info, status))
        assert dialog.state is DialogState.TERMINATED


# -- what we send -------------------------------------------------------------------------------


class TestRequestTarget:
    def test_no_route_set(self) -> None:
        dialog = uac_dialog()
        assert dialog.request_target() == ("sip:bob@198.51.100.20:5070", [])

    def test_loose_routing_keeps_the_remote_target(self) -> None:
        dialog = uac_dialog(record_route=[P2, P1])
        assert dialog.request_target() == ("sip:bob@198.51.100.20:5070", [P1, P2])

    def test_strict_first_route_becomes_the_request_uri(self) -> None:
        strict = "<sip:strict.example.com;transport=udp>"
        dialog = uac_dialog(record_route=[P2, strict])
        uri, routes = dialog.request_target()
        # §12.2.1.1: the strict router in the Request-URI, the remote target last
        assert uri == "sip:strict.example.com;transport=udp"
        assert routes == [P2, "<sip:bob@198.51.100.20:5070>"]

    def test_lr_is_recognised_in_any_case(self) -> None:
        dialog = uac_dialog(record_route=["<sip:p1.example.com;LR>"])
        assert dialog.request_target() == (
            "sip:bob@198.51.100.20:5070",
            ["<sip:p1.example.com;LR>"],
        )

    def test_lr_in_a_later_route_does_not_make_the_first_loose(self) -> None:
        dialog = uac_dialog(record_route=[P1, "<sip:strict.example.com>"])
        uri, routes = dialog.request_target()
        assert uri == "sip:strict.example.com"
        assert routes == [P1, "<sip:bob@198.51.100.20:5070>"]


class TestNewRequest:
    def test_headers_of_an_in_dialog_request(self) -> None:
        dialog = uac_dialog(record_route=[P2, P1])
        bye = dialog.new_request("BYE", [("Reason", 'Q.850;cause=16;text="Normal"')])
        assert bye.method == "BYE"
        assert bye.uri_text == "sip:bob@198.51.100.20:5070"
        assert bye.headers.get_all("route") == [P1, P2]
        assert bye.from_.tag == "a1" and bye.to.tag == "b1"
        assert bye.from_.uri == Uri.parse("sip:alice@example.com")
        assert bye.to.display_name == "Bob"
        assert bye.call_id == "call-1@example.com"
        assert bye.cseq == (8, "BYE")
        assert bye.headers.get("max-forwards") == "70"
        assert bye.headers.get("reason") == 'Q.850;cause=16;text="Normal"'
        assert "via" not in bye.headers  # the stack adds it when sending
        assert DialogId.of_response(make_response(bye, 200)) == dialog.id

    def test_request_seen_by_the_peer_names_its_dialog(self) -> None:
        # what bob sends, read on alice's side, names alice's dialog
        bob = uas_dialog()
        alice = uac_dialog()
        assert DialogId.of_request(bob.new_request("INFO")) == alice.id

    def test_ack_and_cancel_reuse_the_current_number(self) -> None:
        dialog = uac_dialog()
        reinvite = dialog.new_request("INVITE")
        assert reinvite.cseq == (8, "INVITE")
        assert dialog.new_request("ACK").cseq == (8, "ACK")
        assert dialog.new_request("CANCEL").cseq == (8, "CANCEL")
        assert dialog.new_request("ACK", cseq=7).cseq == (7, "ACK")
        assert dialog.new_request("BYE").cseq == (9, "BYE")

    def test_body_is_kept(self) -> None:
        dialog = uac_dialog()
        info = dialog.new_request("INFO", [("Content-Type", "application/dtmf-relay")], b"x")
        assert info.body == b"x"


# -- properties -----------------------------------------------------------------------------------

METHODS = st.sampled_from(["INVITE", "UPDATE", "INFO", "BYE", "ACK", "CANCEL", "OPTIONS"])


@given(st.lists(METHODS, max_size=40), st.booleans())
def test_local_cseq_strictly_increases(methods: list[str], from_uas: bool) -> None:
    """Every request we build that is not ACK/CANCEL has a higher CSeq than the last;
    ACK and CANCEL carry the last number."""
    dialog = uas_dialog() if from_uas else uac_dialog()
    last = dialog.local_seq
    for method in methods:
        seq = dialog.new_request(method).cseq[0]
        if method in ("ACK", "CANCEL"):
            assert seq == last
        else:
            assert seq > last
            last = seq
        assert dialog.local_seq == last


@given(st.lists(st.tuples(st.sampled_from(["INFO", "BYE", "UPDATE"]), st.integers(1, 2**31 - 1))))
def test_remote_cseq_refuses_exactly_what_went_back(seqs: list[tuple[str, int]]) -> None:
    """A request is accepted iff its CSeq is above every accepted one; the remote number
    is then the highest accepted."""
    dialog = uas_dialog(cseq=1)
    highest = 1
    for method, seq in seqs:
        if seq > highest:
            dialog.receive_request(in_dialog(method, seq))
            highest = seq
        elif seq < highest:
            with pytest.raises(DialogError):
                dialog.receive_request(in_dialog(method, seq))
        assert dialog.remote_seq == highest


HOSTS = st.from_regex(r"p[0-9]{1,3}\.example\.com", fullmatch=True)


@given(st.lists(st.tuples(HOSTS, st.booleans()), min_size=1, max_size=6))
def test_request_target_sends_every_hop(hops: list[tuple[str, bool]]) -> None:
    """Loose or strict, a request names every route and the remote target exactly once,
    in order: Request-URI first when strict, last when loose."""
    routes = [f"<sip:{host}{';lr' if loose else ''}>" for host, loose in hops]
    dialog = uac_dialog(record_route=list(reversed(routes)))
    assert dialog.route_set == routes
    uri, header_routes = dialog.request_target()
    target = "sip:bob@198.51.100.20:5070"
    if hops[0][1]:
        assert (uri, header_routes) == (target, routes)
    else:
        assert uri == routes[0][1:-1]
        assert header_routes == [*routes[1:], f"<{target}>"]
