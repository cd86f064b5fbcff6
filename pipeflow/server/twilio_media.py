"""Twilio Media Streams as a pure message translator: no I/O.

Twilio's JSON messages go in and come out as ``TwilioEvent`` values; agent
audio goes in and comes out as ``media`` and ``mark`` messages (8 kHz mu-law
in 20 ms payloads, a mark after each batch of agent audio); ``interrupt()``
gives the ``clear`` message and how much of the agent's item the caller
really heard, known from the marks Twilio has echoed back (a mark comes back
once the audio before it has played). A mark that comes back after its
item's last audio was sent says the item played to its end (``done``).

The call's Twilio source and sink stages (``pipeflow.server.edges``) move
these messages; the routes in ``pipeflow.server.twilio`` only accept the socket.

Reference: Twilio Media Streams, "WebSocket messages" (connected, start,
media, mark, stop, dtmf from Twilio; media, mark, clear to Twilio).
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import numpy as np

from pipeflow.audio.g711 import samples_to_ulaw, ulaw_decode
from pipeflow.audio.resampler import StreamResampler
from pipeflow.errors import ProtocolError
from pipeflow.frames import AudioFrame, PlayoutPosition

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
]

RATE = 8000
"""Media Streams audio: 8 kHz mu-law, both ways."""
CHUNK = 160
"""Bytes of mu-law in one outbound media message (20 ms)."""
MAX_MEDIA = 8000
"""Largest inbound media payload accepted (1 s of mu-law; Twilio sends 20 ms)."""


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
    """Twilio played the agent's audio up to ``played_ms`` of ``item_id``;
    ``done``: that was the item's last audio (it played to its end)."""

    item_id: str
    played_ms: int
    done: bool = False


class Stopped(msgspec.Struct, frozen=True):
    """The stream ended (the caller hung up)."""


TwilioEvent = Connected | Started | CallerAudio | DtmfPressed | Marked | Stopped


class TwilioMediaTranslator:
    """The Media Streams protocol as a pure message translator."""

    def __init__(self) -> None:
        self.stream_sid = ""
        self.call_sid = ""
        self.started = False
        """Whether ``start`` has come (a second one is refused)."""
        self.item_id = ""
        """The agent item whose audio is being sent."""
        self.sent_ms = 0.0
        """Milliseconds of ``item_id`` sent so far."""
        self.played: dict[str, int] = {}
        """Milliseconds of each item Twilio reported played (by marks)."""
        self._marks: dict[str, tuple[str, int]] = {}
        self._closed: set[str] = set()  # items whose last audio has been sent
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
        except RecursionError:
            raise ProtocolError("Twilio sent a message nested too deeply to be a Media "
                                "Streams event.") from None
        match event:
            case _ConnectedIn():
                return [Connected()]
            case _StartIn(start=info):
                if self.started:
                    raise ProtocolError(f"Twilio sent a second 'start' on stream "
                                        f"{self.stream_sid!r}: one socket carries one call.")
                self.started = True
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
                if len(media.payload) > MAX_MEDIA:
                    raise ProtocolError(f"Twilio media payload of {len(media.payload)} bytes "
                                        f"is over the limit of {MAX_MEDIA} (1 s of audio).")
                return [CallerAudio(ulaw_decode(media.payload))]
            case _MarkIn(mark=mark):
                known = self._marks.pop(mark.name, None)
                if known is None:  # echoed after a clear: that audio never played
                    return []
                item_id, end_ms = known
                self.played[item_id] = max(self.played.get(item_id, 0), end_ms)
                done = item_id in self._closed and not any(
                    item == item_id for item, _ in self._marks.values())
                if done:  # nothing of it is left to cut on a barge-in
                    self._closed.discard(item_id)
                    self.played.pop(item_id, None)
                    if item_id == self.item_id:
                        self.item_id, self.sent_ms = "", 0.0
                return [Marked(item_id, end_ms, done)]
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
        """Send what is buffered of the current item: its audio has all come.

        The item's last mark (a bare one when nothing was buffered) comes back
        ``done`` once Twilio has played it all.
        """
        if self._resampler is not None:
            self._pending += samples_to_ulaw(self._resampler.flush())
            self._resampler = None
        if not self.item_id or self.item_id in self._closed:
            return []
        self._closed.add(self.item_id)
        if not self._pending:
            return [self._mark()]
        data, self._pending = bytes(self._pending), bytearray()
        return self._media(data)

    def _media(self, data: bytes) -> list[str]:
        out = []
        for start in range(0, len(data), CHUNK):
            payload = base64.b64encode(data[start : start + CHUNK]).decode()
            out.append(self._encode({"event": "media", "streamSid": self.stream_sid,
                                     "media": {"payload": payload}}))
        self.sent_ms += len(data) * 1000 / RATE
        out.append(self._mark())
        return out

    def _mark(self) -> str:
        """A ``mark`` after what was sent of the current item so far."""
        self._seq += 1
        name = f"{self.item_id}:{self._seq}"
        self._marks[name] = (self.item_id, round(self.sent_ms))
        return self._encode({"event": "mark", "streamSid": self.stream_sid,
                             "mark": {"name": name}})

    def interrupt(self) -> tuple[list[str], PlayoutPosition | None]:
        """Barge-in: the ``clear`` message and where the current item stopped playing."""
        position = None
        if self.item_id:
            played = self.played.get(self.item_id, 0)
            position = PlayoutPosition(item_id=self.item_id, played_ms=played, interrupted=True)
        self._marks.clear()
        self._closed.clear()
        self.played.clear()
        self._pending.clear()
        self._resampler = None
        self.item_id, self.sent_ms = "", 0.0
        return [self._encode({"event": "clear", "streamSid": self.stream_sid})], position

    def _encode(self, message: dict[str, Any]) -> str:
        return _encoder.encode(message).decode()
