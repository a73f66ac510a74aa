"""The media engine as the call layer sees it: calls, their parties (legs), SDP in and out.

The B2BUA never touches relay sessions. It asks for a :class:`MediaCall`, gets a
:class:`MediaLeg` per party (the caller ``call.a``, one fork per callee it rings), and hands
each leg the SDP that party sent; what comes back is the SDP to send on. The relay bridges
two legs of one call; audio never passes through Python.

Early offer (A's INVITE carries SDP), one callee::

    call = engine.create_call(invite_sdp)
    b = call.fork()                       # b.local_sdp: the offer to send B
    to_a = await call.answer(b, b_200_sdp)    # the answer to send A in the 200

Late offer (an INVITE without SDP): pbxcore offers to B itself, and to A in the 200::

    call = engine.create_call()
    b = call.fork()                       # pbxcore's offer to B
    to_a = await call.answer(b, b_200_sdp)    # an offer for A (call.a.awaiting_answer)
    await call.a.answer(ack_sdp)          # A's answer, from the ACK

Forking: ``call.fork()`` once per phone; :meth:`MediaCall.early` connects one fork's early
media (183 with SDP); the first :meth:`MediaCall.answer` wins and every other fork is
released (state ``"released"``, relay ports freed). A party pbxcore answers itself (IVR,
voicemail): ``await call.a.accept()`` then ``play``, ``record``, ``collect_digits`` on the
leg. Transfer: :meth:`MediaEngine.bridge` joins a leg of one call with a leg of another.
Hold: :meth:`MediaLeg.update` with the re-INVITE's SDP.

Each party keeps one :class:`MediaLeg` object for its whole life. The relay port it talks
to can change: when another fork than the first wins after A already has an answer (early
media of another fork, or an IVR answered A), and when :meth:`MediaEngine.bridge` moves a
party. Then ``leg.local_sdp`` is a new offer (``leg.awaiting_answer``) that the B2BUA sends
in a re-INVITE; the party's answer goes to :meth:`MediaLeg.answer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from pbxcore.media.prompt import Prompt
from pbxcore.media.relay import (
    DtmfDigit,
    Law,
    LegStats,
    MediaEvent,
    PlayerDone,
    RelayLeg,
    RelaySession,
    RtpRelay,
    SessionStats,
)
from pbxcore.media.sdp import (
    Codec,
    MediaDescription,
    NegotiatedAudio,
    SessionDescription,
    codec_for_law,
    create_answer,
    create_offer,
    negotiated_audio,
    rewrite_audio,
)

__all__ = ["LegReleasedError", "LegState", "MediaCall", "MediaEngine", "MediaLeg"]

LegState = Literal["new", "offered", "early", "connected", "released"]
DTMF_CHARACTERS = frozenset("0123456789*#ABCD")
_DIGIT_BACKLOG = 64  # digits kept for a collect_digits() that has not started yet
_OTHER_LAW: dict[Law, Law] = {"ulaw": "alaw", "alaw": "ulaw"}


class LegReleasedError(RuntimeError):
    """The leg was released (call deleted, fork lost, bridged away): raised by what waits
    on it and by anything asked of it afterwards."""


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


def _audio_of(sdp: SessionDescription, what: str) -> NegotiatedAudio:
    audio = negotiated_audio(sdp)
    if audio is None:
        raise ValueError(f"SDP {what} has no PCMU or PCMA audio stream to relay")
    return audio


def _law_of(audio: NegotiatedAudio) -> Law:
    law = audio.codec.law
    assert law is not None  # negotiated_audio only returns PCMU/PCMA
    return law


def _g711_payloads(sdp: SessionDescription) -> list[tuple[int, Law]]:
    """(payload type, law) of PCMU/PCMA in the first active audio stream, in order."""
    for m in sdp.media:
        if m.media == "audio" and m.port:
            found: list[tuple[int, Law]] = []
            for pt in m.payload_types:
                rtpmap = m.rtpmap(pt)
                if rtpmap is None or rtpmap.clock_rate != 8000:
                    continue
                law = Codec(rtpmap.encoding, pt).law
                if law is not None:
                    found.append((pt, law))
            return found
    return []


def _pt_in(sdp: SessionDescription, law: Law, default: int) -> int:
    for pt, found in _g711_payloads(sdp):
        if found == law:
            return pt
    return default


def _same_origin(
    previous: SessionDescription | None, sdp: SessionDescription
) -> SessionDescription:
    """``sdp`` with the o= line pbxcore gave the party before, its version one up when the
    session changed (RFC 3264 section 8): whatever pbxcore passes on or writes itself,
    the party sees one session."""
    if previous is None:
        return sdp
    old = previous.origin
    same = replace(sdp, origin=replace(old))
    if str(same) == str(previous):
        return same
    return replace(sdp, origin=replace(old, session_version=old.session_version + 1))


def _quiet(rl: RelayLeg) -> None:
    """A relay leg nobody uses any more: it sends nothing and raises no LegTimeout."""
    rl.update(clear_remote=True, latch=False, timeout=0)


def _fail(future: asyncio.Future[PlayerDone], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
        # a start_playing() caller may never await it: do not log it as unretrieved
        future.exception()


@dataclass(frozen=True, slots=True)
class _Media:
    """What the relay leg facing a party is configured with."""

    audio: NegotiatedAudio
    law: Law
    payload_type: int


class MediaLeg:
    """One party of a call (a phone, a carrier, or pbxcore itself answering it).

    ``local_sdp`` is the SDP pbxcore last gave this party (an offer while
    ``awaiting_answer``), ``remote_sdp`` the one it last sent. ``law`` is the G.711 law
    agreed with the party (None until agreed). Relay events of the leg go to
    ``call.events``; digits and prompt ends are also kept here for the awaiting methods.
    """

    def __init__(self, engine: MediaEngine, call: MediaCall, name: str, relay_leg: RelayLeg):
        self.engine = engine
        self.call = call
        self.name = name
        self.state: LegState = "new"
        self.local_sdp: SessionDescription | None = None
        self.remote_sdp: SessionDescription | None = None
        self.audio: NegotiatedAudio | None = None
        self.direction = "sendrecv"  # the party's, from its last SDP
        self.awaiting_answer = False
        self._media: _Media | None = None
        self._rl = relay_leg
        # the relay leg of this fork's session that faces A (forks only)
        self._a_side: RelayLeg | None = None
        self._digits: asyncio.Queue[DtmfDigit | None] = asyncio.Queue()
        # prompt id -> (the relay leg it plays on, its end)
        self._players: dict[int, tuple[RelayLeg, asyncio.Future[PlayerDone]]] = {}
        self._wake = asyncio.Event()  # set on each digit, prompt end and release
        self._forwarded = False  # our last update() was an offer passed on to the partner

    def __repr__(self) -> str:
        return f"<MediaLeg {self.call.id}/{self.name} {self.state} port={self.local_port}>"

    # ---- what the B2BUA reads

    @property
    def local_port(self) -> int:
        """The relay's RTP port this party sends to (RTCP: port + 1)."""
        return self._rl.local_port

    @property
    def local_address(self) -> str:
        return self.engine.advertise

    @property
    def law(self) -> Law | None:
        return self._media.law if self._media else None

    @property
    def codec(self) -> Codec | None:
        """The SDP codec agreed with the party (PCMU or PCMA), None until agreed."""
        return codec_for_law(self._media.law) if self._media else None

    @property
    def released(self) -> bool:
        return self.state == "released"

    def stats(self) -> LegStats:
        """Counters of this party's relay port: what it sent us, what we sent it."""
        self._check_live()
        return self._rl.stats()

    # ---- SDP from and to the party

    def offer(self, *, direction: str = "sendrecv") -> SessionDescription:
        """pbxcore's own offer to this party (late offer, re-offer): PCMU and PCMA (the
        agreed law first) with telephone-event; apply the party's answer with
        :meth:`answer`."""
        self._check_live()
        first: Law = self.law or "ulaw"
        sdp = create_offer(
            self.engine.advertise,
            self._rl.local_port,
            codecs=[codec_for_law(first).name, codec_for_law(_OTHER_LAW[first]).name],
            direction=direction,
        )
        sdp = self.local_sdp = _same_origin(self.local_sdp, sdp)
        self.awaiting_answer = True
        if self.state == "new":
            self.state = "offered"
        return sdp

    async def answer(self, sdp: SessionDescription | str | bytes) -> None:
        """The party's answer to pbxcore's offer (in a 200, an ACK, or a re-INVITE's 200)."""
        self._check_live()
        if self.state == "offered" and self is not self.call.a:
            raise ValueError(
                f"fork {self.name}: its first answer goes to MediaCall.answer() or .early()"
            )
        if not self.awaiting_answer:
            raise ValueError(f"leg {self.name} has no offer from pbxcore waiting for an answer")
        parsed = _parse(sdp)
        audio = _audio_of(parsed, "answer")
        self.remote_sdp, self.audio = parsed, audio
        self.direction = audio.direction
        self.awaiting_answer = False
        self._media = _Media(audio, _law_of(audio), audio.payload_type)
        if self.state in ("new", "offered") and self is self.call.a:
            self.state = "connected"
        self._apply()

    async def accept(self, *, direction: str = "sendrecv") -> SessionDescription:
        """pbxcore answers the party's offer itself (IVR, voicemail); returns the answer.

        The leg then plays, records and collects digits; nothing else is bridged to it
        until :meth:`MediaCall.answer` connects a fork.
        """
        self._check_live()
        if self.remote_sdp is None or self.audio is None or self.awaiting_answer:
            raise ValueError(f"leg {self.name} has no offer to accept")
        answer = create_answer(
            self.remote_sdp,
            self.engine.advertise,
            self._rl.local_port,
            telephone_event=True,
            direction=direction,
            rtcp_mux=False,
        )
        self.local_sdp = answer
        self._media = _Media(self.audio, _law_of(self.audio), self.audio.payload_type)
        self.state = "connected"
        self._apply()
        return answer

    async def update(self, sdp: SessionDescription | str | bytes) -> SessionDescription:
        """A re-INVITE or UPDATE from the party: new address, law or direction (hold).

        The relay follows at once: a party that goes ``sendonly`` or ``inactive`` gets
        nothing sent any more, one that comes back gets media again. Returns the SDP to
        send on: rewritten toward the connected party (its relay port), or, when nobody
        is bridged to this leg, pbxcore's own answer. On a transcoding call whose other
        party cannot take what this one wrote, pbxcore writes it its own SDP instead: an
        offer with the other party's law first, or an answer in the law it offered. The
        SDP toward a party keeps the o= line pbxcore gave it before (RFC 3264 section 8).
        """
        self._check_live()
        parsed = _parse(sdp)
        audio = _audio_of(parsed, "update")
        self.remote_sdp, self.audio, self.direction = parsed, audio, audio.direction
        law = _law_of(audio)
        self._media = _Media(audio, law, audio.payload_type)
        self._apply()
        partner = self.call.partner(self)
        advertise = self.engine.advertise
        ours: SessionDescription | None = None  # pbxcore's own SDP for the partner
        if partner is not None and partner._forwarded:
            # this answers the partner's re-offer: the partner sends what this side picked
            # when it offered that law, else the relay transcodes
            partner._forwarded = False
            if partner._media is not None and partner.remote_sdp is not None:
                offered = dict((found, pt) for pt, found in _g711_payloads(partner.remote_sdp))
                if law in offered:
                    partner._media = replace(partner._media, law=law, payload_type=offered[law])
                    partner._apply()
                elif self.call.transcode:
                    # the partner keeps its law: it is answered in it
                    ours = create_answer(
                        partner.remote_sdp,
                        advertise,
                        partner.local_port,
                        codecs=(codec_for_law(partner._media.law).name,),
                        telephone_event=audio.telephone_event is not None,
                        direction=audio.direction,
                        rtcp_mux=False,
                    )
        elif partner is not None:
            self._forwarded = True
            own = partner.law
            offered_laws = {found for _, found in _g711_payloads(parsed)}
            if self.call.transcode and own is not None and own not in offered_laws:
                # the partner may do its own law only: offer it that one too, first
                ours = create_offer(
                    advertise,
                    partner.local_port,
                    codecs=[codec_for_law(own).name, codec_for_law(law).name],
                    telephone_event=audio.telephone_event,
                    direction=audio.direction,
                )
        if partner is None:
            answer = create_answer(
                parsed,
                advertise,
                self._rl.local_port,
                codecs=(codec_for_law(law).name,),
                rtcp_mux=False,
            )
            self.local_sdp = _same_origin(self.local_sdp, answer)
            return self.local_sdp
        if ours is None:
            # the partner keeps sending to its own relay port
            ours = _without_mux(rewrite_audio(parsed, advertise, partner.local_port))
        partner.local_sdp = _same_origin(partner.local_sdp, ours)
        return partner.local_sdp

    def _twin(self) -> RelayLeg:
        session = self._rl._session
        return session.b if self._rl is session.a else session.a

    # ---- pbxcore as the far end: prompts, recordings, digits

    def start_playing(self, prompt: Prompt | str | Path, *, loops: int = 1) -> int:
        """Start a prompt toward the party (a Prompt or a WAV path); return its id.

        ``loops`` = 0 repeats it until stopped. :meth:`play` awaits the end. While it
        plays, nothing bridged reaches the party.
        """
        self._check_live()
        if not isinstance(prompt, Prompt):
            prompt = Prompt.from_wav(prompt)
        player_id = self._rl.play(prompt, loops=loops)
        future = asyncio.get_running_loop().create_future()
        self._players[player_id] = (self._rl, future)
        return player_id

    async def play(
        self, prompt: Prompt | str | Path, *, loops: int = 1, barge_in: bool = False
    ) -> PlayerDone | None:
        """Play a prompt to the party and wait until it ends (cancelled: it stops).

        With ``barge_in`` a digit stops it (the digit stays for :meth:`collect_digits`),
        and a digit pressed before keeps it from starting; returns None then.
        """
        if barge_in and self._has_digits():
            return None
        player_id = self.start_playing(prompt, loops=loops)
        rl, future = self._players[player_id]
        try:
            if not barge_in:
                return await asyncio.shield(future)
            while not future.done():
                self._wake.clear()
                if self._has_digits():
                    rl.stop_playing()
                    return None
                await self._wake.wait()  # a digit, the prompt's end, or a release
            return future.result()
        except asyncio.CancelledError:
            if not self.released:
                with contextlib.suppress(KeyError):
                    rl.stop_playing()
            raise
        finally:
            self._players.pop(player_id, None)

    def _has_digits(self) -> bool:
        return not self._digits.empty()

    def stop_playing(self) -> bool:
        """Stop the prompt; True if one was playing."""
        self._check_live()
        return self._rl.stop_playing()

    def record(self, path: str | Path, *, jitter_buffer: bool = True) -> None:
        """Record what the party sends (PCM16 8 kHz WAV, through the native jitter buffer)."""
        self._check_live()
        if self._media is None:
            raise ValueError(f"leg {self.name} has no agreed audio to record")
        self._rl.record(path, jitter_buffer=jitter_buffer)

    def stop_recording(self) -> int:
        """Finish the WAV file; return the number of samples written (-1: no recording)."""
        self._check_live()
        return self._rl.stop_recording()

    def signal_digit(self, digit: str, duration_ms: int = 100) -> None:
        """A digit the party signalled out of band (SIP INFO ``application/dtmf-relay``):
        read like its RFC 4733 digits (:meth:`next_digit`, barge-in). A ValueError for
        what is not a DTMF character."""
        self._check_live()
        if len(digit) != 1 or digit.upper() not in DTMF_CHARACTERS:
            raise ValueError(f"{digit!r} is not a DTMF digit (0-9, *, #, A-D)")
        if not 0 < duration_ms < 60_000:
            raise ValueError(f"duration_ms must be 1-59999, got {duration_ms}")
        session = self._rl._session
        event = DtmfDigit(
            session.id, self._rl.name, time.monotonic(), digit.upper(), duration_ms, 0
        )
        self._on_event(event)

    def clear_digits(self) -> None:
        """Forget digits pressed before now (type-ahead)."""
        while not self._digits.empty():
            if self._digits.get_nowait() is None:  # a release: keep it for the next reader
                self._digits.put_nowait(None)
                return

    async def next_digit(self, timeout: float | None = None) -> DtmfDigit | None:
        """The next RFC 4733 digit from the party; None after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                digit = await self._digits.get()
        except TimeoutError:
            return None
        if digit is None:
            self._digits.put_nowait(None)
            raise LegReleasedError(f"leg {self.name} was released")
        return digit

    async def digits(self) -> AsyncIterator[DtmfDigit]:
        """Every digit the party presses, as it comes (ends when the leg is released)."""
        while True:
            try:
                digit = await self.next_digit()
            except LegReleasedError:
                return
            assert digit is not None
            yield digit

    async def collect_digits(
        self,
        max_digits: int,
        timeout: float | None = 5.0,
        terminator: str | None = "#",
    ) -> str:
        """Collect up to ``max_digits`` digits, as IVR menus and voicemail PINs do.

        Stops at ``max_digits``, at the ``terminator`` (not included in the result), or
        when ``timeout`` seconds pass without a digit (for the first one too); returns
        what was collected. Digits pressed earlier (during a prompt) count: call
        :meth:`clear_digits` first to refuse type-ahead.
        """
        if max_digits < 1:
            raise ValueError(f"max_digits must be at least 1, got {max_digits}")
        if terminator is not None and len(terminator) != 1:
            raise ValueError(f"terminator must be one DTMF character, got {terminator!r}")
        collected: list[str] = []
        while len(collected) < max_digits:
            digit = await self.next_digit(timeout)
            if digit is None:
                break
            if digit.digit == terminator:
                break
            collected.append(digit.digit)
        return "".join(collected)

    # ---- engine internals

    def _check_live(self) -> None:
        if self.state == "released":
            raise LegReleasedError(f"leg {self.name} of call {self.call.id} was released")

    def _apply(self) -> None:
        """Configure the relay leg facing the party from what was agreed with it."""
        media = self._media
        if media is None:
            return
        self._configure(self._rl, media)

    def _configure(self, rl: RelayLeg, media: _Media) -> None:
        audio = media.audio
        hold = self.direction in ("sendonly", "inactive")  # the party will not receive
        rl.update(
            clear_remote=hold,
            remote=None if hold else (audio.address, audio.port),
            rtcp_remote=None if hold else (audio.rtcp_address, audio.rtcp_port),
            latch=not hold,
            law=media.law,
            payload_type=media.payload_type,
            telephone_event=-1 if audio.telephone_event is None else audio.telephone_event,
            strict=self.engine.strict,
            timeout=self.engine.leg_timeout,
        )

    def _on_event(self, event: MediaEvent) -> None:
        if isinstance(event, DtmfDigit):
            if self._digits.qsize() >= _DIGIT_BACKLOG:
                self._digits.get_nowait()
            self._digits.put_nowait(event)
            self._wake.set()
        elif isinstance(event, PlayerDone):
            entry = self._players.get(event.player_id)
            if entry is not None and not entry[1].done():
                entry[1].set_result(event)
            self._wake.set()

    def _prompts_lost(self, session: RelaySession, why: str) -> None:
        """Prompts playing on a relay session that is going away end with an error."""
        for rl, future in self._players.values():
            if rl._session is session:
                _fail(future, LegReleasedError(f"leg {self.name}: {why}"))
                self._wake.set()

    def _release(self) -> None:
        if self.state == "released":
            return
        self.state = "released"
        self._digits.put_nowait(None)
        self._wake.set()
        for _, future in self._players.values():
            _fail(future, LegReleasedError(f"leg {self.name} was released"))
        self._players.clear()


class MediaCall:
    """One call's media: the caller ``a``, the forks offered, the connected fork ``b``.

    ``events`` receives the relay events of every leg of the call.
    """

    def __init__(
        self,
        engine: MediaEngine,
        call_id: int,
        session: RelaySession,
        offer: SessionDescription | None,
        transcode: bool,
    ) -> None:
        self.engine = engine
        self.id = call_id
        self.transcode = transcode
        self.offer = offer  # as A sent it, or None for a late offer
        self.events: asyncio.Queue[MediaEvent] = asyncio.Queue()
        self.a = MediaLeg(engine, self, "a", session.a)
        self.forks: list[MediaLeg] = []
        self.b: MediaLeg | None = None
        self._sessions: list[RelaySession] = [session]
        self._spare: RelayLeg | None = session.b  # the home session's B side, for a fork
        self._early: MediaLeg | None = None
        self._names = itertools.count(1)
        if offer is not None:
            self.a.remote_sdp = offer
            self.a.audio = _audio_of(offer, "offer")
            self.a.direction = self.a.audio.direction

    def __repr__(self) -> str:
        return f"<MediaCall {self.id} a={self.a.state} forks={len(self.forks)}>"

    # ---- the legacy two-party view

    @property
    def offer_for_b(self) -> SessionDescription:
        """The offer sent to the first fork."""
        if not self.forks or self.forks[0].local_sdp is None:
            raise ValueError(f"call {self.id} has no fork")
        return self.forks[0].local_sdp

    @property
    def answer_for_a(self) -> SessionDescription | None:
        return self.a.local_sdp

    @property
    def a_audio(self) -> NegotiatedAudio | None:
        return self.a.audio

    @property
    def b_audio(self) -> NegotiatedAudio | None:
        return self.b.audio if self.b else None

    def stats(self) -> SessionStats:
        """Counters of A's and the connected B's relay ports."""
        if self.b is None:
            raise ValueError(f"call {self.id} has no connected B leg")
        return SessionStats(a=self.a.stats(), b=self.b.stats())

    def partner(self, leg: MediaLeg) -> MediaLeg | None:
        """The party bridged to ``leg`` (early or connected), if any."""
        if leg is self.a:
            other = self.b or self._early
            return other if other is not None and not other.released else None
        if leg is self.b or leg is self._early:
            return self.a
        return None

    # ---- forking

    def fork(self, name: str | None = None) -> MediaLeg:
        """A new B leg with pbxcore's offer in ``local_sdp``: ring one more phone.

        Built from A's offer (rewritten toward the relay, or PCMU+PCMA when transcoding
        or when A's law is already fixed) or, for a late offer, pbxcore's own.
        """
        self._check_open()
        if self.b is not None:
            raise ValueError(f"call {self.id} is already answered by leg {self.b.name}")
        if self._spare is not None and self._spare._session.a is self.a._rl:
            rl, a_side = self._spare, self.a._rl
            self._spare = None
        else:
            session = self.engine.relay.create_session()
            self._sessions.append(session)
            rl, a_side = session.b, session.a
        leg = MediaLeg(self.engine, self, name or f"b{next(self._names)}", rl)
        leg._a_side = a_side
        self.engine._legs[(rl._session.id, rl._index)] = leg
        try:
            leg.local_sdp = self._offer_toward_b(rl.local_port)
        except BaseException:
            self._drop_fork(leg)
            raise
        leg.state = "offered"
        leg.awaiting_answer = True
        self.forks.append(leg)
        return leg

    def _offer_toward_b(self, port: int) -> SessionDescription:
        a = self.a
        advertise = self.engine.advertise
        if a._media is not None or (a.audio is not None and self.transcode):
            # A's law is fixed (or the relay may transcode): offer both laws, A's first
            assert a.audio is not None
            first = a.law or _law_of(a.audio)
            return create_offer(
                advertise,
                port,
                codecs=[codec_for_law(first).name, codec_for_law(_OTHER_LAW[first]).name],
                telephone_event=a.audio.telephone_event,  # only if A can take events
                ptime=20,
            )
        if self.offer is not None:
            return _without_mux(rewrite_audio(self.offer, advertise, port))
        return create_offer(advertise, port)

    async def early(self, fork: MediaLeg, sdp: SessionDescription | str | bytes) -> None:
        """A fork's early media (183 with SDP): connect it to A, disconnecting any other
        fork's early media. The SDP for A is then in ``call.a.local_sdp`` (an offer if
        ``call.a.awaiting_answer``)."""
        await self._connect(fork, sdp, final=False)

    async def answer(
        self, fork: MediaLeg, sdp: SessionDescription | str | bytes
    ) -> SessionDescription:
        """The fork's answer (200): it wins, every other fork is released.

        Returns the SDP for A: the answer to A's offer; or pbxcore's offer to A (late
        offer, or A's relay port changed) when ``call.a.awaiting_answer``; or A's current
        SDP unchanged when A was answered already on the same port.
        """
        await self._connect(fork, sdp, final=True)
        assert self.a.local_sdp is not None
        return self.a.local_sdp

    def release(self, fork: MediaLeg) -> None:
        """Stop ringing one fork (it declined, or the B2BUA cancelled it); frees its port."""
        if fork not in self.forks:
            raise ValueError(f"{fork!r} is not a fork of call {self.id}")
        if fork is self.b:
            raise ValueError("the connected B leg is released with the call (or a bridge)")
        self.forks.remove(fork)
        if self._early is fork:
            self._early = None
            self._silence_a_side(fork)
        self._drop_fork(fork)

    async def _connect(
        self, fork: MediaLeg, sdp: SessionDescription | str | bytes, *, final: bool
    ) -> None:
        self._check_open()
        fork._check_live()
        if fork not in self.forks:
            raise ValueError(f"{fork!r} is not a fork of call {self.id}")
        if self.b is not None and fork is not self.b:
            raise ValueError(f"call {self.id} is already answered by leg {self.b.name}")
        parsed = _parse(sdp)
        b_audio = _audio_of(parsed, "answer")
        fork.remote_sdp, fork.audio, fork.direction = parsed, b_audio, b_audio.direction
        fork.awaiting_answer = False
        b_law = _law_of(b_audio)
        fork._media = _Media(b_audio, b_law, b_audio.payload_type)
        fork._apply()
        self._move_a(fork)  # the previous early fork's session stops reaching A
        self._to_a(parsed, b_audio)
        if final:
            fork.state = "connected"
            self.b = fork
            self._early = None
            for other in [f for f in self.forks if f is not fork]:
                self.release(other)
            self._drop_unused_sessions()
        else:
            fork.state = "early"
            self._early = fork

    def _move_a(self, fork: MediaLeg) -> None:
        """Point A at the relay leg of the fork's session that faces A."""
        a_side = fork._a_side
        assert a_side is not None
        a = self.a
        if a._rl is a_side:
            return
        old = a._rl
        with contextlib.suppress(KeyError):
            if any(rl is old for rl, _ in a._players.values()):
                old.stop_playing()  # A hears the fork now; the prompt's end is still routed
            _quiet(old)  # nothing more toward A from there
        a._rl = a_side
        self.engine._legs[(a_side._session.id, a_side._index)] = a
        if a._media is not None:
            # A talks to another port now: pbxcore re-offers it; until A answers, A hears
            # B (A takes media from any source) and B hears A once A has moved
            a._apply()
            a.offer()

    def _to_a(self, b_sdp: SessionDescription, b_audio: NegotiatedAudio) -> None:
        """Agree A's side with B's answer and produce the SDP for A."""
        a = self.a
        b_law = _law_of(b_audio)
        if a._media is not None:
            return  # A's law was agreed before (PBX-answered, early media): the relay transcodes
        if a.audio is None or self.offer is None:  # late offer: pbxcore offers A, B's law first
            pending = a.local_sdp if a.awaiting_answer else None
            if pending is not None and any(m.port == a._rl.local_port for m in pending.media):
                return  # offered in the 183 already: the 200 repeats it
            sdp = create_offer(
                self.engine.advertise,
                a._rl.local_port,
                codecs=[codec_for_law(b_law).name, codec_for_law(_OTHER_LAW[b_law]).name],
                telephone_event=101 if b_audio.telephone_event is not None else None,
            )
            a.local_sdp, a.awaiting_answer = sdp, True
            return
        offered = {law for _, law in _g711_payloads(self.offer)}
        if self.transcode and b_law not in offered:
            a_law = _law_of(a.audio)
            answer = create_answer(
                self.offer,
                self.engine.advertise,
                a._rl.local_port,
                codecs=(codec_for_law(a_law).name,),
                telephone_event=b_audio.telephone_event is not None,
                rtcp_mux=False,
            )
            a_pt = a.audio.payload_type
        else:
            answer = _without_mux(rewrite_audio(b_sdp, self.engine.advertise, a._rl.local_port))
            a_law = b_law
            a_pt = _pt_in(self.offer, b_law, b_audio.payload_type)
        a.local_sdp = answer
        a._media = _Media(a.audio, a_law, a_pt)
        a.state = "connected"
        a._apply()

    def _silence_a_side(self, fork: MediaLeg) -> None:
        """The fork's session stops sending toward A (its early media is cut)."""
        a_side = fork._a_side
        if a_side is not None and a_side is not self.a._rl:
            with contextlib.suppress(KeyError):
                _quiet(a_side)

    def _drop_fork(self, fork: MediaLeg) -> None:
        rl = fork._rl
        self.engine._legs.pop((rl._session.id, rl._index), None)
        fork._release()
        if rl._session.a is self.a._rl:
            # the home session's B side: A keeps its port; the side goes quiet and spare
            with contextlib.suppress(KeyError):
                _quiet(rl)
            self._spare = rl
        else:
            self._delete_session(rl._session)

    def _drop_unused_sessions(self) -> None:
        keep = self.a._rl._session
        for session in list(self._sessions):
            if session is not keep:
                self._delete_session(session)

    def _delete_session(self, session: RelaySession) -> None:
        if session in self._sessions:
            self._sessions.remove(session)
            for rl in (session.a, session.b):
                leg = self.engine._legs.pop((session.id, rl._index), None)
                if leg is not None:
                    leg._prompts_lost(session, "its relay port was freed")
            self.engine.relay.delete_session(session)
        if self._spare is not None and self._spare._session is session:
            self._spare = None

    def _check_open(self) -> None:
        if self.a.released:
            raise ValueError(f"call {self.id} was deleted")

    def _close(self) -> None:
        for leg in [self.a, *self.forks]:
            leg._release()
        for session in list(self._sessions):
            self._delete_session(session)


class MediaEngine:
    """Calls over the native relay; the asyncio facade the call layer (B2BUA) uses.

    ``advertise`` is the address written into SDP (default: the relay's bind address).
    ``leg_timeout`` (seconds) makes each leg report :class:`LegTimeout` after that long
    without RTP. Events are routed to each :class:`MediaLeg` and its :class:`MediaCall`;
    events of unknown sessions go to :attr:`events`.
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
        self._legs: dict[tuple[int, int], MediaLeg] = {}
        self._ids = itertools.count(1)
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
            leg = self._legs.get((event.session_id, 0 if event.leg == "a" else 1))
            if leg is None:
                self.events.put_nowait(event)
                continue
            leg._on_event(event)
            leg.call.events.put_nowait(event)

    # ---- calls

    def create_call(
        self, offer: SessionDescription | str | bytes | None = None, *, transcode: bool = False
    ) -> MediaCall:
        """A call for A's INVITE: with A's SDP offer, or None for a late offer.

        ``transcode`` lets the offers to B list PCMU and PCMA whatever A offered; when B
        picks a law A did not offer, the relay transcodes. Raises ValueError when the
        offer carries no PCMU/PCMA audio, PortRangeExhaustedError when ports run out.
        """
        parsed = None if offer is None else _parse(offer)
        if parsed is not None:
            _audio_of(parsed, "offer")
        session = self.relay.create_session()
        call = MediaCall(self, next(self._ids), session, parsed, transcode)
        self.calls[call.id] = call
        self._legs[(session.id, 0)] = call.a
        return call

    async def offer(
        self, sdp: SessionDescription | str | bytes, *, transcode: bool = False
    ) -> MediaCall:
        """A call with one fork for A's offer; ``call.offer_for_b`` is the SDP to send B."""
        call = self.create_call(sdp, transcode=transcode)
        try:
            call.fork()
        except BaseException:
            await self.delete(call)
            raise
        return call

    async def answer(
        self, call: MediaCall, sdp: SessionDescription | str | bytes
    ) -> SessionDescription:
        """Apply the first fork's answer; return the SDP answer to send A."""
        if not call.forks:
            raise ValueError(f"call {call.id} has no fork")
        return await call.answer(call.forks[0], sdp)

    async def update(
        self, call: MediaCall, side: str, sdp: SessionDescription | str | bytes
    ) -> SessionDescription:
        """A re-INVITE from ``side`` ("a" or "b"): see :meth:`MediaLeg.update`."""
        if side not in ("a", "b"):
            raise ValueError(f"side must be 'a' or 'b', got {side!r}")
        leg = call.a if side == "a" else call.b
        if leg is None:
            raise ValueError(f"call {call.id} has no connected B leg")
        return await leg.update(sdp)

    async def bridge(self, x: MediaLeg, y: MediaLeg) -> MediaLeg:
        """Join party ``x`` (of one call) with party ``y`` (of another), for a transfer.

        ``x`` keeps its relay port; ``y`` moves into ``x``'s relay session, so ``y`` gets
        a re-offer (``y.local_sdp``, ``y.awaiting_answer``; its answer goes to
        :meth:`MediaLeg.answer`). Audio from ``x`` reaches ``y`` at once, ``y``'s reaches
        ``x`` once ``y`` sends to its new port. Every other leg of both calls is released
        with its ports, and ``y``'s old call is deleted; ``x.call`` is the bridged call
        with ``a = x`` and ``b = y``. Returns ``y``.
        """
        if x.released or y.released:
            raise ValueError("cannot bridge a released leg")
        if x.call is y.call:
            raise ValueError("both legs belong to the same call")
        if x._media is None or y._media is None:
            raise ValueError("both legs need agreed audio before they are bridged")
        call, old = x.call, y.call
        keep = x._rl._session
        target = x._twin()
        # release everything else of both calls
        for leg in [call.a, *call.forks]:
            if leg is not x:
                self._legs.pop((leg._rl._session.id, leg._rl._index), None)
                leg._release()
        for leg in [old.a, *old.forks]:
            if leg is not y:
                leg._release()
        for session in list(old._sessions):
            old._delete_session(session)
        self.calls.pop(old.id, None)
        for session in list(call._sessions):
            if session is not keep:
                call._delete_session(session)
        # y takes the other side of x's session
        y.call = call
        y.name = "b" if x is call.a else "a"
        y._rl = target
        y._a_side = x._rl
        self._legs[(keep.id, x._rl._index)] = x
        self._legs[(keep.id, target._index)] = y
        if x is call.a:
            call.b = y
        else:
            call.a, call.b = y, x
            x.name = "b"
        call.forks = [call.b] if call.b is not None else []
        call._early = None
        call._spare = None
        x._forwarded = y._forwarded = False
        y.state = "connected"
        y._apply()
        y.offer()
        return y

    async def delete(self, call: MediaCall) -> None:
        """Release every leg of the call and free its relay ports."""
        if self.calls.pop(call.id, None) is not None:
            call._close()
