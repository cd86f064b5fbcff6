"""Twilio: the voice webhook (TwiML) and the Media Streams WebSocket.

The protocol is ``TwilioMediaTranslator`` (``pipeflow.server.twilio_media``),
with no I/O. A Media Stream is one call whose edges are the Twilio stages of
``pipeflow.server.edges``: ``TwilioMediaIn`` reads the socket (caller audio,
digits, echoed marks) as the call's source and ``TwilioMediaOut`` sends the
agent's audio and marks as its sink, reporting what Twilio played upstream
through the pipeline's feedback path. The route here only checks the token,
starts the call with those stages and waits for the stream or the call to end.

Reference: Twilio Media Streams, "WebSocket messages" (connected, start,
media, mark, stop, dtmf from Twilio; media, mark, clear to Twilio).
"""

from __future__ import annotations

import asyncio
import hmac
from urllib.parse import parse_qsl
from xml.sax.saxutils import quoteattr

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from pipeflow.errors import ProtocolError
from pipeflow.server.auth import scope_token, token_matches
from pipeflow.server.calls import AGENT_AUDIO, CALL_ID, Call, CallEdge, CallError, CallRegistry
from pipeflow.server.edges import MediaStream, TwilioMediaIn, TwilioMediaOut
from pipeflow.server.guard import twilio_signature
from pipeflow.server.options import GatewayOptions, is_loopback
from pipeflow.server.twilio_media import (
    CHUNK,
    RATE,
    CallerAudio,
    Connected,
    DtmfPressed,
    Marked,
    Started,
    Stopped,
    TwilioEvent,
    TwilioMediaTranslator,
)
from pipeflow.server.ws import close_quietly

__all__ = [
    "CHUNK",
    "RATE",
    "CallerAudio",
    "Connected",
    "DtmfPressed",
    "Marked",
    "Started",
    "Stopped",
    "TwilioEvent",
    "TwilioMediaTranslator",
    "routes",
    "twiml",
]


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

    form = dict(parse_qsl((await read_body(request)).decode("utf-8", "replace"),
                          keep_blank_values=True))
    options = request.app.state.options
    _check_signature(request, options, form)
    base = options.public_url or _local_base(request)
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


def _check_signature(request: Request, options: GatewayOptions, form: dict[str, str]) -> None:
    """Refuse (403) a webhook without Twilio's signature when TWILIO_AUTH_TOKEN is set.

    Twilio signs the URL it was configured with: the public URL's when given.
    """
    auth_token = options.twilio_token()
    if auth_token is None:
        return
    url = str(request.url)
    if options.public_url:
        query = request.url.query
        url = options.public_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")
    given = request.headers.get("x-twilio-signature", "")
    if not hmac.compare_digest(given.encode(), twilio_signature(auth_token, url, form).encode()):
        raise CallError(f"The X-Twilio-Signature of this request does not match {url} "
                        "signed with TWILIO_AUTH_TOKEN.", 403)


def _local_base(request: Request) -> str:
    """The base URL for TwiML without --public-url: only for a loopback Host.

    Raises:
        CallError: (400) a Host other machines name; it could be forged.
    """
    host = request.headers.get("host", "localhost")
    name = host[1:].partition("]")[0] if host.startswith("[") else host.partition(":")[0]
    if not is_loopback(name):
        raise CallError(f"Set --public-url to build TwiML: the request's Host {host!r} is "
                        "not loopback, and a Host header is whatever the client says.", 400)
    return f"{_scheme(request)}://{host}"


def _scheme(request: Request) -> str:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
    return forwarded or request.url.scheme


async def media_stream(websocket: WebSocket) -> None:
    """WS /twilio/media: one Twilio Media Stream as the edges of one call."""
    registry: CallRegistry = websocket.app.state.calls
    translator = TwilioMediaTranslator()
    await websocket.accept()
    stream = MediaStream(translator, lambda: _receive(websocket), websocket.send_text)
    call: Call | None = None
    try:
        try:
            async with asyncio.timeout(registry.options.media_start_timeout_s):
                parameters = await _handshake(websocket, translator)
        except TimeoutError:
            await close_quietly(websocket, 1008, "No 'start' message came in "
                                f"{registry.options.media_start_timeout_s:g} s.")
            return
        if parameters is None:
            return
        call = await _start(websocket, registry, stream, parameters)
        if call is None:
            return
        ended = asyncio.ensure_future(call.wait_ended())
        stopped = asyncio.ensure_future(stream.ended.wait())
        try:
            await asyncio.wait({ended, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            stopped.cancel()
        if stream.error is not None:
            await close_quietly(websocket, 1008, str(stream.error))
    except ProtocolError as exc:
        await close_quietly(websocket, 1008, str(exc))
    finally:
        if call is not None and call.live:
            await registry.end(call.id, "hangup")
        await close_quietly(websocket)


async def _receive(websocket: WebSocket) -> str | None:
    """The next text message; None once the socket is gone."""
    try:
        return await websocket.receive_text()
    except (WebSocketDisconnect, KeyError, RuntimeError):
        return None


async def _handshake(websocket: WebSocket,
                     translator: TwilioMediaTranslator) -> dict[str, str] | None:
    """Read up to Twilio's ``start``; its parameters, or None when the stream ended first.

    Raises:
        ProtocolError: Twilio sent a message the translator does not know.
    """
    while (message := await _receive(websocket)) is not None:
        for event in translator.receive(message):
            match event:
                case Started(parameters=parameters):
                    return parameters
                case Stopped():
                    return None
    return None


async def _start(websocket: WebSocket, registry: CallRegistry, stream: MediaStream,
                 parameters: dict[str, str]) -> Call | None:
    """Check the token and start the call; close the socket and return None if not."""
    token = registry.options.auth_token()
    given = parameters.get("token") or scope_token(websocket.scope)
    if token and not token_matches(given, token):
        await close_quietly(websocket, 4401, "A valid gateway token is required.")
        return None
    translator = stream.translator
    call_id = parameters.get("call_id") or translator.call_sid or translator.stream_sid
    edge = CallEdge(TwilioMediaOut(stream, record=AGENT_AUDIO), TwilioMediaIn(stream))
    try:
        return await registry.start(call_id, RATE, edge)
    except CallError as exc:
        await close_quietly(websocket, 4000 + exc.status, str(exc))
        return None


def routes() -> list[BaseRoute]:
    """The Twilio webhook and Media Streams routes."""
    return [
        Route("/twilio/voice", voice_webhook, methods=["POST"]),
        WebSocketRoute("/twilio/media", media_stream),
    ]
