"""Twilio: the voice webhook (TwiML) and the Media Streams WebSocket.

``TwilioMediaTranslator`` is the whole protocol with no I/O: Twilio's JSON
messages go in and come out as ``TwilioEvent`` values; agent audio goes in
and comes out as ``media`` and ``mark`` messages (8 kHz mu-law in 20 ms
payloads, a mark after each agent frame); ``interrupt()`` gives the
``clear`` message and how much of the agent's item the caller really heard,
known from the marks Twilio has echoed back (a mark comes back once the
audio before it has played). The routes around it only move messages.

Reference: Twilio Media Streams, "WebSocket messages" (connected, start,
media, mark, stop, dtmf from Twilio; media, mark, clear to Twilio).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import quoteattr

import msgspec
import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from pipeflow.audio.g711 import samples_to_ulaw, ulaw_decode
from pipeflow.audio.resampler import StreamResampler
from pipeflow.errors import PipeflowError, ProtocolError
from pipeflow.frames import AudioFrame, Interrupt, PlayoutPosition, ResponseDone
from pipeflow.server.auth import scope_token, token_matches
from pipeflow.server.calls import CALL_ID, Call, CallError, CallRegistry
from pipeflow.server.ws import close_quietly

__all__ = [
    "CallerAudio",
    "Connected",
    "DtmfPressed",
    "Marked",
    "Started",
    "Stopped",
    "TwilioMediaTranslator",
    "routes",
    "twiml",
]

RATE = 8000
"""Media Streams audio: 8 kHz mu-law, both ways."""
CHUNK = 160
"""Bytes of mu-law in one outbound media message (20 ms)."""


# -- Twilio -> gateway messages (only the fields used; Twilio may add others) ----------


class _In(msgspec.Struct, tag_field="event", kw_only=True):
    streamSid: str = ""  # Twilio spells its fields in camelCase


class _StartInfo(msgspec.Struct, kw_only=True):
    streamSid: str = ""  # Twilio spells its fields in camelCase
    callSid: str = ""
    customParameters: dict[str, str] = {}
    mediaFormat: dict[str, Any] = {}


class _MediaInfo(msgspec.Struct, kw_only=True):
    payload: bytes
    track: str = "inbound"
    timestamp: str = "0"


class _MarkInfo(msgspec.Struct, kw_only=True):
    name: str


class _DtmfInfo(msgspec.Struct, kw_only=True):
    digit: str


class _ConnectedIn(_In, tag="connected"):
    protocol: str = ""


class _StartIn(_In, tag="start"):
    start: _StartInfo


class _MediaIn(_In, tag="media"):
    media: _MediaInfo


class _MarkIn(_In, tag="mark"):
    mark: _MarkInfo


class _StopIn(_In, tag="stop"):
    pass


class _DtmfIn(_In, tag="dtmf"):
    dtmf: _DtmfInfo


_decoder = msgspec.json.Decoder(_ConnectedIn | _StartIn | _MediaIn | _MarkIn | _StopIn | _DtmfIn)
_encoder = msgspec.json.Encoder()


# -- what the translator reports -------------------------------------------------------


class Connected(msgspec.Struct, frozen=True):
    """The socket is open (Twilio's first message)."""


class Started(msgspec.Struct, frozen=True):
    """The stream started: ids and the ``<Parameter>`` values of the TwiML."""

    stream_sid: str
    call_sid: str
    parameters: dict[str, str]


class CallerAudio(msgspec.Struct, frozen=True):
    """Caller audio as PCM16 mono at 8 kHz."""

    pcm: bytes


class DtmfPressed(msgspec.Struct, frozen=True):
    """A keypad digit."""

    digit: str


class Marked(msgspec.Struct, frozen=True):
    """Twilio played the agent's audio up to ``played_ms`` of ``item_id``."""

    item_id: str
    played_ms: int


class Stopped(msgspec.Struct, frozen=True):
    """The stream ended (the caller hung up)."""


TwilioEvent = Connected | Started | CallerAudio | DtmfPressed | Marked | Stopped


class TwilioMediaTranslator:
    """The Media Streams protocol as a pure message translator."""

    def __init__(self) -> None:
        self.stream_sid = ""
        self.call_sid = ""
        self.item_id = ""
        """The agent item whose audio is being sent."""
        self.sent_ms = 0.0
        """Milliseconds of ``item_id`` sent so far."""
        self.played: dict[str, int] = {}
        """Milliseconds of each item Twilio reported played (by marks)."""
        self._marks: dict[str, tuple[str, int]] = {}
        self._seq = 0
        self._pending = bytearray()
        self._resampler: StreamResampler | None = None

    # -- inbound ---------------------------------------------------------------------

    def receive(self, message: str | bytes) -> list[TwilioEvent]:
        """Translate one Twilio message.

        Raises:
            ProtocolError: not a Media Streams message this translator knows.
        """
        try:
            event = _decoder.decode(message)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"Twilio sent a message that is not a known Media Streams "
                                f"event: {exc}.") from None
        match event:
            case _ConnectedIn():
                return [Connected()]
            case _StartIn(start=info):
                self.stream_sid = info.streamSid or event.streamSid
                self.call_sid = info.callSid
                encoding = str(info.mediaFormat.get("encoding", "audio/x-mulaw"))
                if encoding != "audio/x-mulaw":
                    raise ProtocolError(f"Twilio stream encoding {encoding!r} is not "
                                        "audio/x-mulaw.")
                return [Started(self.stream_sid, self.call_sid, dict(info.customParameters))]
            case _MediaIn(media=media):
                if media.track not in ("inbound", "inbound_track"):
                    return []
                return [CallerAudio(ulaw_decode(media.payload))]
            case _MarkIn(mark=mark):
                known = self._marks.pop(mark.name, None)
                if known is None:  # echoed after a clear: that audio never played
                    return []
                item_id, end_ms = known
                self.played[item_id] = max(self.played.get(item_id, 0), end_ms)
                return [Marked(item_id, end_ms)]
            case _DtmfIn(dtmf=dtmf):
                return [DtmfPressed(dtmf.digit)]
            case _StopIn():
                return [Stopped()]
        return []  # pragma: no cover - the decoder knows no other type

    # -- outbound --------------------------------------------------------------------

    def agent_audio(self, frame: AudioFrame) -> list[str]:
        """``media`` messages for one frame of agent audio, then a ``mark``."""
        if frame.item_id != self.item_id:
            out = self.flush()
            self.item_id, self.sent_ms = frame.item_id, 0.0
        else:
            out = []
        samples = np.frombuffer(frame.pcm, dtype="<i2")
        if frame.sample_rate != RATE:
            if self._resampler is None or self._resampler.in_rate != frame.sample_rate:
                self._resampler = StreamResampler(frame.sample_rate, RATE)
            samples = self._resampler.process(samples)
        self._pending += samples_to_ulaw(samples)
        whole = len(self._pending) - len(self._pending) % CHUNK
        if whole:
            out += self._media(bytes(self._pending[:whole]))
            del self._pending[:whole]
        return out

    def flush(self) -> list[str]:
        """Send what is buffered of the current item (at its end)."""
        if self._resampler is not None:
            self._pending += samples_to_ulaw(self._resampler.flush())
            self._resampler = None
        if not self._pending:
            return []
        data, self._pending = bytes(self._pending), bytearray()
        return self._media(data)

    def _media(self, data: bytes) -> list[str]:
        out = []
        for start in range(0, len(data), CHUNK):
            payload = base64.b64encode(data[start : start + CHUNK]).decode()
            out.append(self._encode({"event": "media", "streamSid": self.stream_sid,
                                     "media": {"payload": payload}}))
        self.sent_ms += len(data) * 1000 / RATE
        self._seq += 1
        name = f"{self.item_id}:{self._seq}"
        self._marks[name] = (self.item_id, round(self.sent_ms))
        out.append(self._encode({"event": "mark", "streamSid": self.stream_sid,
                                 "mark": {"name": name}}))
        return out

    def interrupt(self) -> tuple[list[str], PlayoutPosition | None]:
        """Barge-in: the ``clear`` message and where the current item stopped playing."""
        position = None
        if self.item_id:
            played = self.played.get(self.item_id, 0)
            position = PlayoutPosition(item_id=self.item_id, played_ms=played, interrupted=True)
        self._marks.clear()
        self._pending.clear()
        self._resampler = None
        self.item_id, self.sent_ms = "", 0.0
        return [self._encode({"event": "clear", "streamSid": self.stream_sid})], position

    def _encode(self, message: dict[str, Any]) -> str:
        return _encoder.encode(message).decode()


# -- the routes -------------------------------------------------------------------------


def twiml(stream_url: str, parameters: dict[str, str]) -> str:
    """TwiML connecting the call to a Media Stream at ``stream_url``."""
    params = "".join(
        f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in parameters.items()
    )
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Connect>'
            f"<Stream url={quoteattr(stream_url)}>{params}</Stream></Connect></Response>")


async def voice_webhook(request: Request) -> Response:
    """POST /twilio/voice: answer an incoming call with ``<Connect><Stream>``."""
    from pipeflow.server.api import read_body

    form = dict(parse_qsl((await read_body(request)).decode("utf-8", "replace")))
    options = request.app.state.options
    base = options.public_url or f"{_scheme(request)}://{request.headers.get('host', 'localhost')}"
    stream_url = "ws" + base.removeprefix("http").rstrip("/") + "/twilio/media"
    parameters = {}
    call_sid = form.get("CallSid", "")
    if CALL_ID.fullmatch(call_sid):
        parameters["call_id"] = call_sid
    for key in ("From", "To"):
        if form.get(key):
            parameters[key.lower()] = form[key]
    token = options.auth_token()
    if token:
        parameters["token"] = token
    return Response(twiml(stream_url, parameters), media_type="application/xml")


def _scheme(request: Request) -> str:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
    return forwarded or request.url.scheme


async def media_stream(websocket: WebSocket) -> None:
    """WS /twilio/media: one Twilio Media Stream bridged to one call."""
    registry: CallRegistry = websocket.app.state.calls
    translator = TwilioMediaTranslator()
    await websocket.accept()
    call: Call | None = None
    sender: asyncio.Task[None] | None = None
    try:
        while True:
            try:
                text = await websocket.receive_text()
            except (WebSocketDisconnect, KeyError, RuntimeError):
                return
            for event in translator.receive(text):
                match event:
                    case Started(parameters=parameters):
                        call = await _start(websocket, registry, translator, parameters)
                        if call is None:
                            return
                        call.take_over_playout()  # Twilio's marks say what the caller heard
                        sender = asyncio.create_task(_send(websocket, translator, call))
                    case CallerAudio(pcm=pcm) if call is not None:
                        call.touch(registry.clock())
                        await call.running_session().stream_audio(pcm, RATE)
                    case DtmfPressed(digit=digit) if call is not None:
                        call.touch(registry.clock())
                        await call.running_session().send_text(digit)
                    case Stopped():
                        return
    except PipeflowError as exc:
        await close_quietly(websocket, 1008 if isinstance(exc, ProtocolError) else 1011,
                            str(exc))
    finally:
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
        if call is not None and call.live:
            await registry.end(call.id, "hangup")
        await close_quietly(websocket)


async def _start(websocket: WebSocket, registry: CallRegistry,
                 translator: TwilioMediaTranslator, parameters: dict[str, str]) -> Call | None:
    """Check the token and start (or join) the call; close the socket and return None if not."""
    token = registry.options.auth_token()
    given = parameters.get("token") or scope_token(websocket.scope)
    if token and not token_matches(given, token):
        await close_quietly(websocket, 4401, "A valid gateway token is required.")
        return None
    call_id = parameters.get("call_id") or translator.call_sid or translator.stream_sid
    try:
        try:
            call = registry.get(call_id)
        except CallError as exc:
            if exc.status != 404:
                raise
            return await registry.start(call_id, RATE)
        call.running_session()
        return call
    except CallError as exc:
        await close_quietly(websocket, 4000 + exc.status, str(exc))
        return None


async def _send(websocket: WebSocket, translator: TwilioMediaTranslator, call: Call) -> None:
    """Agent audio to Twilio; on barge-in clear Twilio's buffer and report what played."""
    session = call.session
    if session is None:
        return
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        async for frame in session.subscribe(call.backlog_start()):
            messages: list[str] = []
            if type(frame) is AudioFrame and frame.item_id:
                messages = translator.agent_audio(frame)
            elif isinstance(frame, ResponseDone):
                messages = translator.flush()
            elif isinstance(frame, Interrupt):
                messages, position = translator.interrupt()
                if position is not None:
                    call.report_playout(position)
            for message in messages:
                await websocket.send_text(message)


def routes() -> list[BaseRoute]:
    """The Twilio webhook and Media Streams routes."""
    return [
        Route("/twilio/voice", voice_webhook, methods=["POST"]),
        WebSocketRoute("/twilio/media", media_stream),
    ]
