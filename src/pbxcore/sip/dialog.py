"""Dialogs (RFC 3261 §12): the state two user agents share for the length of a call.

A :class:`Dialog` is pure state, no I/O: its id (Call-ID, local and remote tag), the
local and remote URIs, the remote target, the route set, and the local and remote CSeq.
The stack (:class:`~pbxcore.sip.stack.SipStack`) creates dialogs from dialog-creating
transactions, keeps them in a table by :class:`DialogId`, hands them the in-dialog
requests and responses, and asks them to build the requests they send.

Both roles are covered: :meth:`Dialog.from_uas` (we answered a request with a To tag
of ours) and :meth:`Dialog.from_uac` (a response to our request carried the peer's tag).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from pbxcore.sip.errors import SipParseError
from pbxcore.sip.headers import Address
from pbxcore.sip.message import Request, Response
from pbxcore.sip.uri import Uri

__all__ = [
    "DIALOG_CREATING",
    "TARGET_REFRESH",
    "Dialog",
    "DialogError",
    "DialogId",
    "DialogState",
]

# methods whose 1xx/2xx create a dialog (RFC 3261 §12.1; SUBSCRIBE/REFER: RFC 6665)
DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
# requests that replace the remote target (RFC 3261 §12.2, RFC 3311 for UPDATE,
# RFC 6665 for SUBSCRIBE/NOTIFY)
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})


@dataclass(frozen=True, slots=True)
class DialogId:
    """Call-ID, local tag and remote tag (§12: the id as seen from this side)."""

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def of_request(cls, request: Request) -> DialogId | None:
        """The id an incoming in-dialog request names (its To tag is ours), or None."""
        to_tag = request.to.tag
        from_tag = request.from_.tag
        if to_tag is None or from_tag is None:
            return None
        return cls(request.call_id, to_tag, from_tag)

    @classmethod
    def of_response(cls, response: Response) -> DialogId | None:
        """The id a response to our request names (its From tag is ours), or None."""
        to_tag = response.to.tag
        from_tag = response.from_.tag
        if to_tag is None or from_tag is None:
            return None
        return cls(response.call_id, from_tag, to_tag)


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogError(Exception):
    """An in-dialog request to refuse with ``status`` (500 for a CSeq out of order)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def _contact_uri(message: Request | Response) -> Uri | None:
    contacts = message.contact
    return contacts[0].uri if contacts else None


class Dialog:
    """One dialog's state (RFC 3261 §12.1-12.2); see the module docstring."""

    __slots__ = (
        "call_id",
        "local_seq",
        "local_tag",
        "local_uri",
        "remote_seq",
        "remote_tag",
        "remote_target",
        "remote_uri",
        "route_set",
        "secure",
        "state",
    )

    def __init__(
        self,
        *,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_uri: str,
        remote_uri: str,
        remote_target: Uri,
        route_set: list[str],
        local_seq: int,
        remote_seq: int | None,
        secure: bool = False,
        state: DialogState = DialogState.EARLY,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = local_uri  # the From (UAC) / To (UAS) address, without tag
        self.remote_uri = remote_uri
        self.remote_target = remote_target
        self.route_set = route_set  # Route values in the order our requests carry them
        self.local_seq = local_seq
        self.remote_seq = remote_seq  # None: the peer has sent no request in this dialog
        self.secure = secure
        self.state = state

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    def __repr__(self) -> str:
        return (
            f"Dialog({self.call_id!r}, {self.local_tag!r}, {self.remote_tag!r}, {self.state.value})"
        )

    # -- creation --------------------------------------------------------------------------

    @classmethod
    def from_uas(cls, request: Request, response: Response) -> Dialog:
        """The dialog our 1xx/2xx ``response`` (carrying our To tag) to ``request`` creates
        (§12.1.1): route set from Record-Route in order, remote target from the request's
        Contact, remote CSeq from the request."""
        local_tag = response.to.tag
        remote_tag = request.from_.tag
        if local_tag is None:
            raise ValueError("a dialog-creating response needs a To tag")
        if remote_tag is None:
            raise ValueError("the request has no From tag (RFC 2543 peer): no dialog")
        target = _contact_uri(request)
        if target is None:
            raise ValueError(f"{request.method} without a Contact cannot create a dialog")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=_without_tag(request.to),
            remote_uri=_without_tag(request.from_),
            remote_target=target,
            route_set=list(request.headers.get_all("record-route")),
            local_seq=0,  # §12.1.1: empty; our first request picks a number
            remote_seq=request.cseq[0],
            secure=request.uri.scheme == "sips",
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
        )

    @classmethod
    def from_uac(cls, request: Request, response: Response) -> Dialog:
        """The dialog a 1xx/2xx ``response`` with a To tag to our ``request`` creates
        (§12.1.2): route set from Record-Route in reverse order, remote target from the
        response's Contact, local CSeq from the request."""
        remote_tag = response.to.tag
        local_tag = request.from_.tag
        if remote_tag is None or local_tag is None:
            raise ValueError("a dialog needs both tags")
        target = _contact_uri(response) or request.uri
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=_without_tag(request.from_),
            remote_uri=_without_tag(request.to),
            remote_target=target,
            route_set=list(reversed(response.headers.get_all("record-route"))),
            local_seq=request.cseq[0],
            remote_seq=None,
            secure=request.uri.scheme == "sips",
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
        )

    # -- what the peer sends ---------------------------------------------------------------

    def receive_request(self, request: Request) -> None:
        """An in-dialog request from the peer (§12.2.2): check and advance the remote CSeq,
        refresh the remote target. Raises :class:`DialogError` (500) for a CSeq lower than
        one already seen; ACK and CANCEL reuse the INVITE's number and are not checked."""
        method = request.method
        if method in ("ACK", "CANCEL"):
            return
        seq = request.cseq[0]
        # §12.2.2: lower than the remote CSeq is out of order (a retransmission, with the
        # same number, never reaches here: its transaction absorbs it)
        remote = self.remote_seq
        if remote is not None and seq < remote:
            raise DialogError(500, "CSeq Out Of Order")
        self.remote_seq = seq
        if method in TARGET_REFRESH:
            target = _contact_uri(request)
            if target is not None:
                self.remote_target = target

    def receive_response(self, request: Request, response: Response) -> None:
        """A response to our in-dialog ``request``: a 2xx to a target refresh replaces the
        remote target (§12.2.1.2); a 2xx to the creating request confirms an early dialog;
        481/408 end the dialog (§12.2.1.2)."""
        status = response.status
        if status in (481, 408):
            self.state = DialogState.TERMINATED
            return
        if 200 <= status < 300:
            if request.method in DIALOG_CREATING and self.state is DialogState.EARLY:
                self.state = DialogState.CONFIRMED
                self.route_set = list(reversed(response.headers.get_all("record-route")))
            if request.method in TARGET_REFRESH:
                target = _contact_uri(response)
                if target is not None:
                    self.remote_target = target

    def confirm(self) -> None:
        """The early dialog became confirmed (a 2xx was sent or received)."""
        if self.state is DialogState.EARLY:
            self.state = DialogState.CONFIRMED

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    # -- what we send ----------------------------------------------------------------------

    def next_seq(self) -> int:
        """Our next CSeq number (§12.2.1.1: one more than the last, any start if none)."""
        if self.local_seq <= 0:
            self.local_seq = random.randint(1, 2**16)
        else:
            self.local_seq += 1
        return self.local_seq

    def new_request(
        self,
        method: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        *,
        cseq: int | None = None,
    ) -> Request:
        """An in-dialog request (§12.2.1.1) without a Via (the stack adds it when sending):
        Request-URI and Route from the remote target and the route set (loose or strict
        routing), From/To with the tags, Call-ID, CSeq, Max-Forwards.

        ``cseq`` is for ACK (the INVITE's number); other methods take :meth:`next_seq`.
        """
        if cseq is None:
            cseq = self.local_seq if method in ("ACK", "CANCEL") else self.next_seq()
        uri, routes = self.request_target()
        items: list[tuple[str, str]] = [(name, value) for name, value in _routes(routes)]
        items += [
            ("Max-Forwards", "70"),
            ("From", f"{self.local_uri};tag={self.local_tag}"),
            ("To", f"{self.remote_uri};tag={self.remote_tag}"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        if headers:
            items.extend(headers)
        return Request(method, uri, items, body)

    def request_target(self) -> tuple[str, list[str]]:
        """Request-URI and Route values for a request in this dialog (§12.2.1.1)."""
        target = str(self.remote_target)
        if not self.route_set:
            return target, []
        first = self.route_set[0]
        try:
            first_uri = Address.parse(first).uri
        except SipParseError:
            return target, list(self.route_set)
        if "lr" in {name.lower() for name in first_uri.params}:
            return target, list(self.route_set)
        # strict router: it becomes the Request-URI, the remote target the last Route
        return str(first_uri), [*self.route_set[1:], f"<{target}>"]


def _routes(routes: list[str]) -> list[tuple[str, str]]:
    return [("Route", value) for value in routes]


def _without_tag(address: Address) -> str:
    if address.tag is None:
        return str(address)
    copy = address.copy()
    for name in list(copy.params):
        if name.lower() == "tag":
            del copy.params[name]
    return str(copy)
