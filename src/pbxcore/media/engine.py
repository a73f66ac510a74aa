"""The media engine as the SIP layer sees it: one relay session per bridged call.

A B2BUA bridging caller A and callee B does, per call::

    call = await engine.offer(invite_sdp)           # A's offer -> rewritten offer for B
    send_invite_to_b(call.offer_for_b)
    call_answer = await engine.answer(call, b_200_ok_sdp)   # -> rewritten answer for A
    ...
    await engine.delete(call)

Leg ``a`` of the relay session faces the offerer, leg ``b`` the answerer; each side is told
to send its media to the relay's address and port of the leg facing it. With
``transcode=True`` the offer toward B lists PCMU and PCMA whatever A offered, and when B
picks a codec A did not offer the relay transcodes between them.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Self

from pbxcore.media.relay import MediaEvent, RelayLeg, RelaySession, RtpRelay
from pbxcore.media.sdp import (
    MediaDescription,
    NegotiatedAudio,
    SessionDescription,
    create_answer,
    create_offer,
    negotiated_audio,
    rewrite_audio,
)

__all__ = ["MediaCall", "MediaEngine"]


def _parse(sdp: SessionDescription | str | bytes) -> SessionDescription:
    return sdp if isinstance(sdp, SessionDescription) else SessionDescription.parse(sdp)


def _without_mux(sdp: SessionDescription) -> SessionDescription:
    # the relay's legs keep RTCP on port + 1, so rtcp-mux is not offered through it
    media: list[MediaDescription] = [
        replace(m, attributes=[(n, v) for n, v in m.attributes if n != "rtcp-mux"])
        if m.media == "audio"
        else m
        for m in sdp.media
    ]
    return replace(sdp, media=media)


@dataclass
class MediaCall:
    """One bridged call's media: the relay session and both sides' negotiated audio."""

    session: RelaySession
    offer: SessionDescription  # as A sent it
    offer_for_b: SessionDescription  # what to send B
    transcode: bool
    answer: SessionDescription | None = None  # as B sent it
    answer_for_a: SessionDescription | None = None
    a_audio: NegotiatedAudio | None = None
    b_audio: NegotiatedAudio | None = None
    events: asyncio.Queue[MediaEvent] = field(default_factory=asyncio.Queue)

    @property
    def id(self) -> int:
        return self.session.id


class MediaEngine:
    """Allocates relay sessions for SDP offers and applies answers; asyncio facade.

    ``advertise`` is the address written into SDP (default: the relay's bind address).
    ``leg_timeout`` (seconds) makes each leg report :class:`LegTimeout` after that long
    without RTP. Events are routed to each :class:`MediaCall`'s queue; events of unknown
    sessions go to :attr:`events`.
    """

    def __init__(
        self,
        relay: RtpRelay | None = None,
        *,
        bind: str = "127.0.0.1",
        ports: tuple[int, int] = (20000, 29999),
        workers: int | None = 1,
        advertise: str | None = None,
        leg_timeout: float | None = None,
        strict: bool = False,
    ) -> None:
        self._own_relay = relay is None
        self.relay = relay if relay is not None else RtpRelay(bind, ports, workers)
        self.advertise = advertise or self.relay.bind
        self.leg_timeout = leg_timeout
        self.strict = strict
        self.calls: dict[int, MediaCall] = {}
        self.events: asyncio.Queue[MediaEvent] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.relay.running:
            self.relay.start()
        queue = self.relay.attach()
        self._pump = asyncio.get_running_loop().create_task(self._route(queue))

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
        for call in list(self.calls.values()):
            await self.delete(call)
        if self._own_relay:
            self.relay.close()
        else:
            self.relay.detach()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _route(self, queue: asyncio.Queue[MediaEvent]) -> None:
        while True:
            event = await queue.get()
            call = self.calls.get(event.session_id)
            (call.events if call is not None else self.events).put_nowait(event)

    def _configure(self, leg: RelayLeg, audio: NegotiatedAudio, codec: str, pt: int) -> None:
        leg.update(
            remote=(audio.address, audio.port),
            rtcp_remote=(audio.rtcp_address, audio.rtcp_port),
            codec=codec,  # type: ignore[arg-type]
            payload_type=pt,
            telephone_event=-1 if audio.telephone_event is None else audio.telephone_event,
            strict=self.strict,
            timeout=self.leg_timeout,
        )

    async def offer(
        self, sdp: SessionDescription | str | bytes, *, transcode: bool = False
    ) -> MediaCall:
        """Allocate a session for A's offer; ``call.offer_for_b`` is the SDP to send B.

        Raises ValueError when the offer carries no PCMU/PCMA audio, and
        PortRangeExhaustedError when the relay has no ports left.
        """
        offer = _parse(sdp)
        a_audio = negotiated_audio(offer)
        if a_audio is None:
            raise ValueError("SDP offer has no PCMU or PCMA audio stream to relay")
        session = self.relay.create_session()
        try:
            if transcode:
                first = a_audio.codec.name
                others = [c for c in ("PCMU", "PCMA") if c != first]
                offer_b = create_offer(
                    self.advertise,
                    session.b.local_port,
                    codecs=[first, *others],
                    telephone_event=a_audio.telephone_event,  # only if A can take events
                    ptime=20,
                )
            else:
                offer_b = _without_mux(rewrite_audio(offer, self.advertise, session.b.local_port))
            # until B answers, A's media has nowhere to go; A's address is known already
            self._configure(session.a, a_audio, a_audio.codec.name, a_audio.payload_type)
        except BaseException:
            self.relay.delete_session(session)
            raise
        call = MediaCall(session, offer, offer_b, transcode, a_audio=a_audio)
        self.calls[session.id] = call
        return call

    async def answer(
        self, call: MediaCall, sdp: SessionDescription | str | bytes
    ) -> SessionDescription:
        """Apply B's answer; return the SDP answer to send A."""
        answer = _parse(sdp)
        b_audio = negotiated_audio(answer)
        if b_audio is None:
            raise ValueError("SDP answer accepts no PCMU or PCMA audio stream")
        a_audio = call.a_audio
        assert a_audio is not None
        offered_by_a = {name for _, name in _g711_payloads(call.offer)}
        b_codec = b_audio.codec.name
        if call.transcode and b_codec not in offered_by_a:
            a_codec = a_audio.codec.name
            answer_a = create_answer(
                call.offer,
                self.advertise,
                call.session.a.local_port,
                codecs=(a_codec,),
                telephone_event=b_audio.telephone_event is not None,
                rtcp_mux=False,
            )
            a_pt = a_audio.payload_type
        else:
            answer_a = _without_mux(
                rewrite_audio(answer, self.advertise, call.session.a.local_port)
            )
            a_codec = b_codec
            a_pt = _pt_in(call.offer, b_codec, b_audio.payload_type)
        self._configure(call.session.a, a_audio, a_codec, a_pt)
        self._configure(call.session.b, b_audio, b_codec, b_audio.payload_type)
        call.answer, call.answer_for_a, call.b_audio = answer, answer_a, b_audio
        return answer_a

    async def update(
        self, call: MediaCall, side: str, sdp: SessionDescription | str | bytes
    ) -> SessionDescription:
        """A re-INVITE or UPDATE from ``side`` ("a" or "b") with new SDP (a new address or
        hold); the relay follows it and the returned SDP, pointed at the relay, goes on to
        the other side."""
        if side not in ("a", "b"):
            raise ValueError(f"side must be 'a' or 'b', got {side!r}")
        new = _parse(sdp)
        audio = negotiated_audio(new)
        if audio is None:
            raise ValueError("SDP has no PCMU or PCMA audio stream to relay")
        leg = call.session.leg(side)  # type: ignore[arg-type]
        other = call.session.b if side == "a" else call.session.a
        self._configure(leg, audio, audio.codec.name, audio.payload_type)
        if side == "a":
            call.a_audio = audio
        else:
            call.b_audio = audio
        return _without_mux(rewrite_audio(new, self.advertise, other.local_port))

    async def delete(self, call: MediaCall) -> None:
        """Free the call's relay session and its ports."""
        if self.calls.pop(call.id, None) is not None:
            self.relay.delete_session(call.session)


def _g711_payloads(sdp: SessionDescription) -> list[tuple[int, str]]:
    """(payload type, codec name) of PCMU/PCMA in the first active audio stream, in order."""
    for m in sdp.media:
        if m.media == "audio" and m.port:
            found = []
            for pt in m.payload_types:
                rtpmap = m.rtpmap(pt)
                name = rtpmap.encoding.upper() if rtpmap else ""
                if name in ("PCMU", "PCMA") and rtpmap and rtpmap.clock_rate == 8000:
                    found.append((pt, name))
            return found
    return []


def _pt_in(sdp: SessionDescription, codec: str, default: int) -> int:
    for pt, name in _g711_payloads(sdp):
        if name == codec:
            return pt
    return default
