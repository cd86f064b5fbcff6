"""The call edges as pipeline stages: where a caller's audio enters and leaves.

A gateway call is one pipeline: its first stage takes the caller in, its last
plays the agent out, and feedback (what the caller heard) runs back upstream
as ``PlayoutPosition`` frames through the ordinary feedback path, exactly as
with the local sinks. Nothing outside the pipeline writes into a stage's
inbox, and each call has one playout clock:

- WebSocket and HTTP calls: the session's ``push`` source takes caller audio,
  text, commits and cancels; ``CallAudioOut`` is the call's audio sink. It
  plays the agent's audio on the call's clock, hands each chunk to the
  listeners (the call WebSocket, ``/audio/stream``) as it starts playing,
  records it when asked, and on an ``Interrupt`` drops what has not played
  and reports where the agent was cut off.
- Twilio Media Streams: ``TwilioMediaIn`` reads the stream's socket (caller
  audio, keypad digits, Twilio's echoed marks); ``TwilioMediaOut`` sends the
  agent's audio as media and marks. Twilio plays the audio, so its marks are
  the clock: an item whose last mark comes back played to its end; on an
  ``Interrupt`` the sink sends ``clear`` and reports the position the last
  echoed mark gave. Both halves share one ``MediaStream``: the I/O-free
  translator and the socket's receive and send. Twilio has no pause: a
  ``PausePlayout`` clears its buffer and a ``ResumePlayout`` sends the
  unplayed rest again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from pipeflow.audio.playout import Chunk, Done, Started
from pipeflow.audio.wav import WavWriter
from pipeflow.errors import ProtocolError
from pipeflow.framelog import Subscriber
from pipeflow.frames import (
    AudioFrame,
    EndOfStream,
    Frame,
    Interrupt,
    PausePlayout,
    PlayoutPosition,
    ResponseDone,
    ResumePlayout,
    TextInput,
)
from pipeflow.server.twilio_media import (
    RATE,
    CallerAudio,
    DtmfPressed,
    Marked,
    Stopped,
    TwilioMediaTranslator,
)
from pipeflow.stage import Frames, Stage
from pipeflow.stages.sinks import AudioSink, AudioSinkOptions
from pipeflow.stages.sources import PushSource

_WAV_HEADER = 44
"""Bytes before the samples in the WAV files ``WavWriter`` writes."""

__all__ = ["CallAudioOptions", "CallAudioOut", "MediaStream", "PlayedAudio", "TwilioMediaIn",
           "TwilioMediaOut"]


class PlayedAudio:
    """What one listener's player has played of the agent audio sent to it.

    The browser page reports the samples it has finished playing, counted over
    everything the socket sent it (``{"type": "played", "samples": N}``), as
    Twilio echoes marks; this maps the count back to an item and a position in
    it, so a barge-in truncates the item to what the caller heard.
    """

    MAX_CHUNKS = 3000
    """Chunks remembered while the player has not reported them (a minute of 20 ms)."""

    def __init__(self) -> None:
        self._sent: deque[tuple[int, str, int, int]] = deque(maxlen=self.MAX_CHUNKS)
        self._count = 0  # samples sent in all
        self._items: dict[str, int] = {}  # samples sent per item
        self._played = 0
        self._heard: dict[str, int] = {}  # ms played per item, as of the last report
        self.reported = False
        """The player has reported at least once."""

    def sent(self, frame: AudioFrame) -> None:
        """``frame`` went to the player."""
        n = len(frame.pcm) // 2
        self._count += n
        item = self._items[frame.item_id] = self._items.get(frame.item_id, 0) + n
        self._sent.append((self._count, frame.item_id, item, frame.sample_rate))

    def played(self, samples: int) -> None:
        """The player has played the first ``samples`` samples it was sent.

        Raises:
            ProtocolError: more than was sent, or fewer than an earlier report.
        """
        if not self._played <= samples <= self._count:
            raise ProtocolError(f"played message: samples {samples} must lie between the last "
                            f"report ({self._played}) and the samples sent ({self._count}).")
        self._played = samples
        while self._sent and self._sent[0][0] <= samples:
            _, item_id, item_end, rate = self._sent.popleft()
            self._heard[item_id] = round(item_end * 1000 / rate)
        if self._sent:  # part of the next chunk played
            end, item_id, item_end, rate = self._sent[0]
            into = item_end - (end - samples)
            if into > 0:
                self._heard[item_id] = round(into * 1000 / rate)
        self.reported = True

    def heard_ms(self, item_id: str) -> int | None:
        """Ms of ``item_id`` played at the last report; None when the player never reported."""
        if not self.reported or item_id not in self._items:
            return None
        return self._heard.get(item_id, 0)


class CallAudioOptions(AudioSinkOptions, kw_only=True, forbid_unknown_fields=True):
    """Options of the call's audio sink."""

    record: str | None = None
    """Write what was played to this WAV file (under the call's folder); null: don't."""
    backlog_s: float = 30.0
    """Audio played before the first listener connects, kept for it (the greeting)."""
    max_queued: int = 250
    """Chunks queued for a slow listener before the oldest is dropped."""


class CallAudioOut(AudioSink):
    """The agent's audio to a WebSocket or HTTP caller: the call's one playout clock."""

    Options = CallAudioOptions
    writes = ("record",)

    def __init__(self, options: msgspec.Struct | None = None, /, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.id = "call_audio"
        self._listeners: list[Subscriber] = []
        self._backlog: deque[AudioFrame] | None = deque()
        self._backlog_samples = 0
        self._writer: WavWriter | None = None
        self._done = False
        self._players: list[PlayedAudio] = []

    @property
    def recording(self) -> Path | None:
        """Where the played audio is recorded, when it is."""
        if self.options.record is None or self._ctx is None:
            return None
        return self.ctx.output_path(self.options.record)

    async def listen(self, played: PlayedAudio | None = None) -> AsyncIterator[AudioFrame]:
        """Agent audio as it starts playing, until the call ends.

        The first listener also gets what played before it came (up to
        ``backlog_s``); a listener that falls ``max_queued`` chunks behind
        loses the oldest ones (a gap, not a growing delay). With ``played``
        (the listener's player reports what it played), an interrupted item is
        reported as played up to where that player had played it, when that is
        less than the call's clock says.
        """
        if played is not None:
            self._players.append(played)
        subscriber = Subscriber(self.options.max_queued)
        if self._backlog is not None:
            backlog, self._backlog = self._backlog, None
            for frame in backlog:
                subscriber.put(frame)
        if self._done:
            subscriber.close()
        self._listeners.append(subscriber)
        try:
            while (frame := await subscriber.get()) is not None:
                if played is not None:
                    played.sent(frame)  # type: ignore[arg-type]
                yield frame  # type: ignore[misc]
        finally:
            with contextlib.suppress(ValueError):
                self._listeners.remove(subscriber)
            if played is not None:
                with contextlib.suppress(ValueError):
                    self._players.remove(played)

    def _report(self, events: list[Started | Done]) -> list[Frame]:
        """An interrupted item counts as played as far as a reporting player played it."""
        for event in events:
            if isinstance(event, Done) and event.interrupted and event.item_id:
                heard = [ms for p in self._players
                         if (ms := p.heard_ms(event.item_id)) is not None]
                if heard:
                    event.played_ms = min(event.played_ms, max(heard))
        return super()._report(events)

    async def open(self, sample_rate: int) -> None:
        path = self.recording
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = WavWriter(path, sample_rate)

    def write(self, chunk: Chunk) -> None:
        assert self.rate is not None
        if self._writer is not None:
            self._writer.write(chunk.pcm)
        frame = AudioFrame(pcm=chunk.pcm, sample_rate=self.rate, pts=chunk.start,
                           item_id=chunk.item_id)
        for listener in self._listeners:
            listener.put(frame)
        backlog = self._backlog
        if backlog is not None:
            backlog.append(frame)
            self._backlog_samples += len(chunk.pcm) // 2
            while backlog and self._backlog_samples > self.options.backlog_s * self.rate:
                self._backlog_samples -= len(backlog.popleft().pcm) // 2

    def recorded(self) -> tuple[bytes, int]:
        """What was recorded so far (PCM16 mono) and its rate; empty when not recording."""
        return _recorded(self._writer, self.rate or 24000)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._done = True
        for listener in self._listeners:
            listener.close()


def _recorded(writer: WavWriter | None, rate: int) -> tuple[bytes, int]:
    """What ``writer`` has written so far (it stays open) and its rate."""
    if writer is None:
        return b"", rate
    writer.flush()
    with open(writer.path, "rb") as file:
        file.seek(_WAV_HEADER)
        return file.read(writer.frames * 2), writer.sample_rate


class MediaStream:
    """One Twilio Media Stream, as its two edge stages share it.

    Args:
        translator: the I/O-free protocol object (already past ``start``).
        receive: the next text message from Twilio; ``None`` once the socket is gone.
        send: send one text message to Twilio.
    """

    def __init__(
        self,
        translator: TwilioMediaTranslator,
        receive: Callable[[], Awaitable[str | None]],
        send: Callable[[str], Awaitable[None]],
    ) -> None:
        self.translator = translator
        self.receive = receive
        self.send = send
        self.marks: asyncio.Queue[Marked] = asyncio.Queue()
        """Echoed marks, from the source half to the sink half."""
        self.ended = asyncio.Event()
        """Set when Twilio stopped the stream or the socket went away."""
        self.error: ProtocolError | None = None
        """What ended the stream, when Twilio sent something unknown."""


class TwilioMediaIn(PushSource):
    """Caller audio (8 kHz) and keypad digits from a Twilio Media Stream.

    It is also the session's push source, so text and commits from the HTTP
    API reach a Twilio call too. Twilio's echoed marks go to the sink half.
    """

    def __init__(self, stream: MediaStream) -> None:
        super().__init__(sample_rate=RATE)
        self.id = "twilio_in"
        self.stream = stream

    def process(self, frames: Frames) -> Frames:  # type: ignore[override]
        # The push source's own generator, not one wrapped around it: no extra hop per
        # frame. The reader starts as the chain is composed; what it pushes first waits.
        self.ctx.spawn(self._read(), name=f"{self.ctx.name}.reader")
        return super().process(frames)

    async def _read(self) -> None:
        stream = self.stream
        try:
            while (message := await stream.receive()) is not None:
                for event in stream.translator.receive(message):
                    match event:
                        case CallerAudio(pcm=pcm):
                            self.push_audio(pcm, RATE)
                        case DtmfPressed(digit=digit):
                            self.push(TextInput(text=digit))
                        case Marked():
                            stream.marks.put_nowait(event)
                        case Stopped():
                            return
        except ProtocolError as exc:
            stream.error = exc
        finally:
            stream.ended.set()
            self.end()


class TwilioMediaOut(Stage):
    """The agent's audio to a Twilio Media Stream; Twilio's marks say what played.

    An item whose last mark comes back is reported played to its end; on an
    ``Interrupt`` Twilio's buffer is cleared and the position of the last
    echoed mark is reported ``interrupted`` (the model's item is truncated
    there). Twilio cannot pause: on ``PausePlayout`` its buffer is cleared
    too (the caller hears the agent stop at once), the audio sent after the
    last echoed mark is kept, and ``ResumePlayout`` sends it again from there;
    positions of the re-sent item count from the item's start. ``record``
    writes the agent audio it sent to a WAV file.
    """

    role = "sink"
    writes = ("record",)
    duplex = True  # its own task reads the marks; an Interrupt overtakes queued audio
    consumes = (AudioFrame, Interrupt, ResponseDone, PausePlayout, ResumePlayout)
    produces = (PlayoutPosition,)

    def __init__(self, stream: MediaStream, record: str | None = None) -> None:
        super().__init__()
        self.id = "twilio_out"
        self.stream = stream
        self.record = record
        self._writer: WavWriter | None = None
        self._connected = True
        self._item = ""  # the item whose audio was sent last...
        self._sent: list[tuple[float, AudioFrame]] = []  # ...its frames, from ms of the item
        self._offset: dict[str, int] = {}  # ms of an item before its re-sent audio
        self._held: list[AudioFrame] | None = None  # paused: what to send on resume
        self._held_at: PlayoutPosition | None = None  # ...and where the caller was
        self._flush_held = False

    async def process(self, frames: Frames) -> Frames:
        translator = self.stream.translator
        self.ctx.spawn(self._marks(), name=f"{self.ctx.name}.marks")
        try:
            async for frame in frames:
                kind = type(frame)
                if kind is AudioFrame and frame.item_id:  # type: ignore[attr-defined]
                    self._record(frame)  # type: ignore[arg-type]
                    if self._held is not None:
                        self._held.append(frame)  # type: ignore[arg-type]
                    else:
                        await self._play(frame)  # type: ignore[arg-type]
                elif kind is ResponseDone:
                    if self._held is not None:
                        self._flush_held = True
                    else:
                        await self._send(translator.flush())
                elif kind is PausePlayout and self._held is None:
                    await self._pause()
                elif kind is ResumePlayout and self._held is not None:
                    held, self._held, self._held_at = self._held, None, None
                    for audio in held:
                        await self._play(audio)
                    if self._flush_held:
                        self._flush_held = False
                        await self._send(translator.flush())
                elif isinstance(frame, Interrupt):
                    messages, position = translator.interrupt()
                    await self._send(messages)
                    if self._held_at is not None:
                        position = self._held_at  # cut where the pause stopped it
                    elif position is not None:
                        position = self._shifted(position)
                    self._held = self._held_at = None
                    self._flush_held = False
                    self._sent.clear()
                    if position is not None:
                        self.ctx.send_upstream(position)
                yield frame
                if isinstance(frame, EndOfStream):
                    return
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    async def _play(self, frame: AudioFrame) -> None:
        """Send one frame of agent audio, keeping it (with its place in the item)."""
        if frame.item_id != self._item:
            self._item, self._sent = frame.item_id, []
        start = self._sent[-1][0] + self._sent[-1][1].duration * 1000 if self._sent \
            else float(self._offset.get(frame.item_id, 0))
        self._sent.append((start, frame))
        await self._send(self.stream.translator.agent_audio(frame))

    async def _pause(self) -> None:
        """Clear Twilio's buffer; keep what it had not played, to send on resume."""
        messages, position = self.stream.translator.interrupt()
        await self._send(messages)
        self._held = []
        if position is None or position.item_id != self._item:
            return
        self._held_at = self._shifted(position)
        heard = self._held_at.played_ms
        for start, frame in self._sent:
            end = start + frame.duration * 1000
            if end <= heard:
                continue
            skip = max(0, round((heard - start) * frame.sample_rate / 1000)) * 2 * frame.channels
            self._held.append(msgspec.structs.replace(frame, pcm=frame.pcm[skip:]))
        self._offset = {self._item: heard}  # the re-sent audio starts here in the item
        self._item, self._sent = "", []

    def _shifted(self, position: PlayoutPosition) -> PlayoutPosition:
        """A position from Twilio's marks, counted from the item's start."""
        offset = self._offset.get(position.item_id, 0)
        if not offset:
            return position
        return msgspec.structs.replace(position, played_ms=position.played_ms + offset)

    async def _marks(self) -> None:
        while True:
            mark = await self.stream.marks.get()
            if mark.done:
                self.ctx.send_upstream(self._shifted(PlayoutPosition(
                    item_id=mark.item_id, played_ms=mark.played_ms)))

    async def _send(self, messages: list[str]) -> None:
        if not self._connected:
            return
        try:
            for message in messages:
                await self.stream.send(message)
        except Exception as exc:  # the socket went away: the caller hung up
            self.ctx.log.debug("twilio stream closed while sending: %s", exc)
            self._connected = False

    def recorded(self) -> tuple[bytes, int]:
        """The agent audio sent so far (when recording) and its rate."""
        return _recorded(self._writer, 24000)

    def _record(self, frame: AudioFrame) -> None:
        if self.record is None:
            return
        if self._writer is None:
            path = self.ctx.output_path(self.record)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = WavWriter(path, frame.sample_rate)
        if frame.sample_rate == self._writer.sample_rate and frame.channels == 1:
            self._writer.write(frame.pcm)
