"""One connection of the local Realtime server, as a pure state object.

``ServerSession`` is the server side of the Realtime protocol with no I/O:
client messages go in through ``receive_data(data, now)``, encoded server
events come out of ``data_to_send(now)`` once they are due, and
``next_deadline()`` says when the next one will be. Time is passed in, so
pacing, first-audio delay, cancellation and faults are tested with no
sleeps; the websockets shell (``pipeflow.realtime.server``) only moves bytes
and sleeps until the next deadline.

A response is planned whole when it starts: its events are put on a
schedule with their due times (audio deltas at real-time pacing after the
first-audio delay). ``response.cancel`` and a barge-in remove what is not
sent yet and answer ``response.done`` with status ``cancelled``.

The model is a script (``pipeflow.realtime.script``) played by a
``Dialogue`` (``pipeflow.realtime.dialogue``), which also says what the
caller is expected to say next: each committed audio goes to the
transcriber with that expectation (``Transcription.expect``); speech is espeak-ng
(``pipeflow.audio.tts``); server VAD is the project's ``Segmenter``.
Wire format: the OpenAI Realtime API, GA names by default, beta names when
the connection or the client's ``session.update`` is beta.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from pipeflow.audio import g711
from pipeflow.audio.resampler import resample
from pipeflow.audio.vad import Segmenter, VadOptions
from pipeflow.errors import ProtocolError
from pipeflow.frames import SpeechStarted, SpeechStopped
from pipeflow.realtime import events as ev
from pipeflow.realtime.dialogue import Dialogue, Plan
from pipeflow.realtime.script import DEFAULT_SCRIPT, Script
from pipeflow.realtime.server_config import (
    ClientError,
    ServerConfig,
    Shape,
    apply_update,
    check_spoken,
    detect_shape,
    session_object,
)
from pipeflow.realtime.server_faults import Close, FaultBudget, Faults
from pipeflow.realtime.server_responses import (
    RATES,
    Entry,
    ResponsePlanner,
    Running,
    Speech,
    Timed,
)
from pipeflow.realtime.voice import Speaker, Transcriber

__all__ = ["Close", "FaultBudget", "Faults", "ServerOptions", "ServerSession"]

_DECODE = {"g711_ulaw": g711.ulaw_decode, "g711_alaw": g711.alaw_decode}


class ServerOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How the local Realtime server plays its script."""

    first_audio_delay_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Delay before the first audio of each response; empty: the script's."""
    speed: Annotated[float, msgspec.Meta(ge=0)] | None = None
    """Audio pacing (1 real time, 0 none); empty: the script's."""
    chunk_ms: Annotated[int, msgspec.Meta(ge=5, le=1000)] = 40
    """Audio per output audio delta event."""
    speech: Literal["espeak", "tones"] = "espeak"
    """Reply voice: espeak-ng speech, or one tone per word."""
    vad: VadOptions = msgspec.field(default_factory=VadOptions)
    """Server VAD settings (session turn_detection silence_duration_ms and
    prefix_padding_ms override min_silence_ms and preroll_ms)."""
    faults: Faults = msgspec.field(default_factory=Faults)
    """Faults to inject, for tests of clients."""
    max_turn_audio_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """Seconds of audio one turn may buffer before its commit: past them the
    rest of the turn is dropped with one ``input_audio_buffer_too_large``
    error (memory and decoding time stay bounded)."""


class Transcription(msgspec.Struct):
    """Committed user audio waiting for its words (see ``ServerSession.take_transcription``)."""

    pcm: bytes
    rate: int
    item_id: str
    respond: bool
    """Create a response once the words are in (server VAD's ``create_response``)."""
    expect: str | None = None
    """What the script expects the caller to say (its state's ``expect``), for the
    recogniser to listen for."""

    def run(self, transcriber: Transcriber) -> str | None:
        """The words heard (blocking: a server runs it in a worker thread)."""
        pcm = self.pcm
        if self.rate != 24000:
            pcm = resample(np.frombuffer(pcm, dtype=np.int16), self.rate, 24000).tobytes()
        return transcriber.transcribe(pcm, 24000, expect=self.expect)


class ServerSession(ResponsePlanner):
    """The server side of one Realtime connection; no I/O, time passed in.

    Args:
        script: what the model says and does.
        options: pacing, speech, VAD and faults.
        shape: the wire shape to start with (``ga`` or ``beta``).
        model: the model name reported in the session.
        number: this session's number on its server (part of every id).
        budget: fault counters shared by a server's sessions.
        transcriber: turns committed audio into words (else the script's ``user`` text);
            it is told what the script expects next (``Transcription.expect``).
        speaker: speech synthesis (one shared cache per process by default).
        defer_transcription: leave the transcriber's work to the caller
            (``take_transcription`` / ``transcribed``) instead of running it
            inside ``receive_data``: decoding takes a good part of a second
            that a server's event loop must not spend blocked.
        transcription_session: a transcription session (``?intent=transcription``):
            each committed turn's words come as ``...input_audio_transcription.delta``
            events, one a word, then ``.completed``; no response is ever made, and
            the recogniser listens for what the session's transcription ``prompt``
            names when it is one of its expectations (as ``/v1/audio/transcriptions``).
        defer_speech: leave synthesising a long reply (over
            ``SPEAK_INLINE_CHARS``) that is not in the speech cache to the
            caller (``take_speech`` / ``spoken``): a 2,000-character reply is
            some 0.2 s of espeak-ng, longer on a loaded machine.

    Attributes:
        dialogue: the script engine playing this conversation.
        received: every client event decoded, in order (for tests).
        transcripts: the user transcript of each committed input.
        truncated: item id -> ``audio_end_ms`` of each truncation.
        cancelled: ids of cancelled responses.
        close: set when the connection must close (a fault); nothing more is sent.
    """

    def __init__(
        self,
        script: Script | None = None,
        options: ServerOptions | None = None,
        *,
        shape: Shape = "ga",
        model: str = "gpt-realtime",
        number: int = 1,
        budget: FaultBudget | None = None,
        transcriber: Transcriber | None = None,
        speaker: Speaker | None = None,
        defer_transcription: bool = False,
        transcription_session: bool = False,
        defer_speech: bool = False,
    ) -> None:
        self.script = script or DEFAULT_SCRIPT
        self.defer_transcription = defer_transcription
        self._transcriptions: list[Transcription] = []
        self.defer_speech = defer_speech
        self._speeches: list[Speech] = []
        self._unspoken: dict[str, tuple[Running, Plan, float]] = {}
        self.options = options or ServerOptions()
        self.shape: Shape = shape
        self.config = ServerConfig(model=model, transcription_session=transcription_session)
        self.number = number
        self.budget = budget or FaultBudget(self.options.faults)
        self.transcriber = transcriber
        self.speaker = speaker or Speaker(self.script.voice, self.script.words_per_minute,
                                          self.options.speech)
        opts, script_ = self.options, self.script
        self.delay_s = (opts.first_audio_delay_ms if opts.first_audio_delay_ms is not None
                        else script_.first_audio_delay_ms) / 1000
        self.speed = opts.speed if opts.speed is not None else script_.speed
        self.chunk_ms = opts.chunk_ms
        self.received: list[ev.ClientEvent] = []
        self.transcripts: list[str] = []
        self.truncated: dict[str, int] = {}
        self.cancelled: list[str] = []
        self.close: Close | None = None
        self._counters: dict[str, int] = {}
        self._heap: list[tuple[float, int, Entry]] = []
        self._seq = 0
        self._active: Running | None = None
        self._responses = 0
        self._last_item: str | None = None
        self._items: dict[str, ev.Item] = {}
        self._audio_ms: dict[str, float] = {}
        self._buffer = bytearray()
        self._capped = False
        self._input_samples = 0
        self._segmenter: Segmenter | None = None
        self._speech_item: str | None = None
        self.dialogue = Dialogue(self.script)
        self._waiting: dict[str, str | None] = {}
        self._conversation = f"conv_{number}"

    # -- the sans-I/O interface ---------------------------------------------------

    def start(self, now: float) -> None:
        """Queue ``session.created`` (the first event of a connection)."""
        self._push(now, ev.SessionCreated(session=self._session()))

    def receive_data(self, data: str | bytes, now: float) -> None:
        """Handle one client message; what it causes is queued for ``data_to_send``.

        Never raises for bad input: a malformed or unknown event, or one the
        session refuses, is answered with an ``error`` event.
        """
        if self.close is not None:
            return
        try:
            event = ev.decode_client_event(data)
        except ProtocolError as exc:
            self._client_error(now, exc, data)
            return
        self.received.append(event)
        kind = event.__struct_config__.tag
        faults = self.options.faults
        if kind in faults.reject and self.budget.fire("reject"):
            self._error(now, faults.error_message, faults.error_code, event_id=event.event_id,
                        kind="server_error")
            return
        try:
            self._handle(event, now)
        except ClientError as exc:
            self._error(now, exc.message, exc.code, exc.param, event.event_id)

    def data_to_send(self, now: float, limit: int | None = None) -> list[bytes]:
        """The encoded server events due at ``now``, in order (at most ``limit``)."""
        out: list[bytes] = []
        heap = self._heap
        while heap and heap[0][0] <= now and self.close is None:
            if limit is not None and len(out) >= limit:
                break
            _, seq, entry = heapq.heappop(heap)
            if entry.stream is not None:
                entry = self._next_of(entry, seq)
            out.append(entry.data)
            if entry.mark:
                self._sent(entry, out)
                heap = self._heap  # a fault may have replaced it
        return out

    def next_deadline(self) -> float | None:
        """When the next queued event is due (``None`` when nothing is queued)."""
        if self.close is not None or not self._heap:
            return None
        return self._heap[0][0]

    @property
    def responding(self) -> bool:
        """Whether a response is in progress."""
        return self._active is not None

    # -- scheduling -------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        count = self._counters[prefix] = self._counters.get(prefix, 0) + 1
        return f"{prefix}_{self.number}_{count}"

    def _push(self, due: float, event: ev.ServerEvent, response: str = "", mark: str = "",
              item: str = "", ms: float = 0.0) -> None:
        event.event_id = self._id("event")
        self._seq += 1
        entry = Entry(ev.encode_event(event), response, mark, item, ms)
        heapq.heappush(self._heap, (due, self._seq, entry))

    def _push_stream(self, response: str, item: str, stream: Iterator[Timed]) -> None:
        """Schedule a stream of timed events; each is encoded when it falls due."""
        head = next(stream, None)
        if head is not None:
            self._seq += 1
            entry = Entry(response=response, item=item, stream=stream, head=head)
            heapq.heappush(self._heap, (head[0], self._seq, entry))

    def _next_of(self, stream: Entry, seq: int) -> Entry:
        """The stream's next event as an entry; the stream goes back on the schedule."""
        assert stream.head is not None and stream.stream is not None
        _, event, mark, ms = stream.head
        event.event_id = self._id("event")
        entry = Entry(ev.encode_event(event), stream.response, mark, stream.item, ms)
        head = next(stream.stream, None)
        if head is not None:  # same seq: it stays ahead of what was queued after it
            stream.head = head
            heapq.heappush(self._heap, (head[0], seq, stream))
        return entry

    def _sent(self, entry: Entry, out: list[bytes]) -> None:
        """Bookkeeping once an event is sent: open items, active response, faults."""
        running = self._active if self._active and self._active.id == entry.response else None
        mark = entry.mark
        if mark == "response_done":
            if running is not None:
                self._active = None
            return
        if running is None:
            return
        if mark == "added":
            running.open.add(entry.item)
        elif mark == "done":
            running.open.discard(entry.item)
        elif mark == "created":
            self._check_faults(running, out)
        elif mark == "delta":
            running.deltas += 1
            self._audio_ms[entry.item] = entry.ms
            self._check_faults(running, out)

    def _check_faults(self, running: Running, out: list[bytes]) -> None:
        """Fire the faults due after ``running.deltas`` audio deltas (0: at response.created)."""
        faults, n, fire = self.options.faults, running.deltas, self.budget.fire
        if faults.close_after_deltas == n and n and fire("close"):
            self._heap.clear()
            self.close = Close(code=faults.close_code, abort=faults.abort,
                               reason="injected fault: closed in the middle of a response")
        elif faults.error_after_deltas == n and n and fire("error"):
            detail = ev.ErrorDetail(type="server_error", code=faults.error_code,
                                    message=faults.error_message)
            out.append(ev.encode_event(ev.ErrorEvent(error=detail, event_id=self._id("event"))))
        elif faults.stall_after_deltas == n and fire("stall"):
            self._drop(running.id)

    def _drop(self, response_id: str) -> list[Entry]:
        """Remove the queued events of a response; returns them."""
        keep, dropped = [], []
        for item in self._heap:
            (dropped if item[2].response == response_id else keep).append(item)
        heapq.heapify(keep)
        self._heap = keep
        return [item[2] for item in dropped]

    def _error(self, now: float, message: str, code: str, param: str | None = None,
               event_id: str | None = None, kind: str = "invalid_request_error") -> None:
        detail = ev.ErrorDetail(type=kind, code=code, message=message, param=param,
                                event_id=event_id)
        self._push(now, ev.ErrorEvent(error=detail))

    def _client_error(self, now: float, exc: ProtocolError, data: str | bytes) -> None:
        try:
            obj = msgspec.json.decode(data)
        except RecursionError:
            self._error(now, "The message nests objects or arrays too deeply to be a client "
                        "event.", "invalid_json")
            return
        except (msgspec.DecodeError, UnicodeDecodeError):
            self._error(now, "The message is not valid JSON: each client event must be one "
                        "JSON object.", "invalid_json")
            return
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            self._error(now, "A client event must be a JSON object with a string 'type'.",
                        "missing_required_parameter", "type")
            return
        event_id = obj.get("event_id") if isinstance(obj.get("event_id"), str) else None
        kind = obj["type"]
        if kind not in ev.CLIENT_EVENT_TYPES:
            supported = ", ".join(f"'{k}'" for k in sorted(ev.CLIENT_EVENT_TYPES))
            self._error(now, f"Invalid value: {kind!r}. Supported values are: {supported}.",
                        "invalid_value", "type", event_id)
            return
        self._error(now, f"Invalid client event: {exc}.", "invalid_value", None, event_id)

    # -- client events ----------------------------------------------------------------

    def _handle(self, event: ev.ClientEvent, now: float) -> None:
        match event:
            case ev.InputAudioBufferAppend():
                self._append(event.audio, now)
            case ev.InputAudioBufferCommit():
                if not self._buffer:
                    raise ClientError("Error committing input audio buffer: the buffer is "
                                      "empty.", "input_audio_buffer_commit_empty")
                self._commit(now, self._id("item"))
            case ev.InputAudioBufferClear():
                self._buffer.clear()
                self._capped = False
                self._push(now, ev.InputAudioBufferCleared())
            case ev.ConversationItemCreate():
                self._create_item(event.item, now)
            case ev.InputTextAppend():  # alias: a user message of one input_text part
                self._create_item(ev.Item(type="message", role="user", content=[
                    ev.ContentPart(type="input_text", text=event.text)]), now)
            case ev.ResponseCreate() if self.config.transcription_session:
                raise ClientError("A transcription session makes no responses: its "
                                  "transcripts come as each committed turn is heard.",
                                  "invalid_request_error")
            case ev.ResponseCreate():
                if self._active is not None:
                    raise ClientError(
                        f"Conversation already has an active response in progress: "
                        f"{self._active.id}. Wait until the response is finished before "
                        "creating a new one.", "conversation_already_has_active_response")
                meta = (event.response or {}).get("metadata")
                say = meta.get("say") if isinstance(meta, dict) else None
                if isinstance(say, str):
                    check_spoken(say, "response.metadata.say")
                self._respond(now, say if isinstance(say, str) else None)
            case ev.ResponseCancel():
                if self._active is None:
                    raise ClientError("Cancellation failed: no active response found.",
                                      "response_cancel_not_active")
                self._cancel(now, "client_cancelled")
            case ev.ConversationItemTruncate():
                self._truncate(event, now)
            case ev.ConversationItemDelete():
                if self._items.pop(event.item_id, None) is None:
                    raise ClientError(f"Item with item_id '{event.item_id}' not found.",
                                      "item_delete_invalid_item_id", "item_id")
                self._push(now, ev.ConversationItemDeleted(item_id=event.item_id))
            case ev.SessionUpdate():
                self._update(event.session, now)
            case ev.TranscriptionSessionUpdate():
                self._update_transcription(event.session, now)

    def _session(self) -> dict[str, Any]:
        return session_object(self.config, self.shape, f"sess_{self.number}")

    def _update(self, session: dict[str, Any], now: float) -> None:
        shape = detect_shape(session, self.shape) if isinstance(session, dict) else self.shape
        config = apply_update(self.config, session, shape)
        if (config.input_format, config.turn_detection) != (
            self.config.input_format, self.config.turn_detection
        ):
            self._segmenter = None
        self.config, self.shape = config, shape
        self._push(now, ev.SessionUpdated(session=self._session()))

    def _update_transcription(self, session: dict[str, Any], now: float) -> None:
        """Beta's ``transcription_session.update`` (flat fields, as beta's ``session.update``)."""
        if not self.config.transcription_session:
            raise ClientError("transcription_session.update needs a transcription session: "
                              "connect with ?intent=transcription.", "invalid_request_error")
        config = apply_update(self.config, session, "beta")
        if (config.input_format, config.turn_detection) != (
            self.config.input_format, self.config.turn_detection
        ):
            self._segmenter = None
        self.config = config
        self._push(now, ev.TranscriptionSessionUpdated(
            session=session_object(config, "beta", f"sess_{self.number}")))

    def _announce(self, due: float, item: ev.Item, response: str = "") -> None:
        """``conversation.item.added`` (GA) or ``conversation.item.created`` (beta)."""
        cls = ev.ConversationItemAdded if self.shape == "ga" else ev.ConversationItemCreated
        self._push(due, cls(item=item, previous_item_id=self._last_item), response)
        self._last_item = item.id
        if item.id:
            self._items[item.id] = item

    def _finish_item(self, due: float, item: ev.Item, response: str = "") -> None:
        if self.shape == "ga":
            self._push(due, ev.ConversationItemDone(item=item), response)

    def _create_item(self, item: ev.Item, now: float) -> None:
        if item.type == "function_call_output":
            call_id = item.call_id or ""
            if call_id in self._waiting:
                self._waiting[call_id] = item.output or ""
                self.dialogue.tool_output(item.output or "")
            elif not any(known.type == "function_call" and known.call_id == call_id
                         for known in self._items.values()):
                raise ClientError(f"Invalid 'item.call_id': no function call {call_id!r} is "
                                  "in the conversation.", "invalid_value", "item.call_id")
            # else a late output (a barge-in moved on before the tool answered): kept in
            # the conversation, as the API keeps it, without replaying its answer.
        elif item.type == "message" and item.role == "user":
            words = " ".join(part.text or part.transcript or "" for part in item.content or [])
            self.dialogue.hear(words)
        elif item.type not in ("message", "function_call"):
            raise ClientError(f"Invalid value: {item.type!r}. Supported values are: 'message', "
                              "'function_call', 'function_call_output'.", "invalid_value",
                              "item.type")
        stored = msgspec.structs.replace(item, id=item.id or self._id("item"),
                                         object="realtime.item", status="completed")
        self._announce(now, stored)
        self._finish_item(now, stored)

    # -- input audio and server VAD -----------------------------------------------------

    def _append(self, audio: bytes, now: float) -> None:
        fmt = self.config.input_format
        pcm = _DECODE[fmt](audio) if fmt in _DECODE else audio
        if len(pcm) % 2:
            raise ClientError("Input audio must be whole 16-bit samples (an even number of "
                              "bytes) in the session's input format.", "invalid_value", "audio")
        rate = RATES[fmt]
        pts = self._input_samples / rate
        self._input_samples += len(pcm) // 2
        room = int(self.options.max_turn_audio_s * rate) * 2 - len(self._buffer)
        if len(pcm) > room and not self._capped:
            self._capped = True
            self._error(now, f"The input audio buffer holds over {self.options.max_turn_audio_s:g}"
                        " s of audio, the most one turn may hold: the rest of this turn is "
                        "dropped; commit or clear the buffer.", "input_audio_buffer_too_large")
        self._buffer += pcm[:max(room, 0)]
        if not self.config.server_vad or not pcm:
            return
        for frame in self._vad(rate).feed(pcm, pts):
            at_ms = round(frame.at * 1000)  # type: ignore[attr-defined]
            if isinstance(frame, SpeechStarted):
                self._speech_item = self._id("item")
                self._push(now, ev.InputAudioBufferSpeechStarted(
                    audio_start_ms=at_ms, item_id=self._speech_item))
                if self._active and self.config.turn_option("interrupt_response", True):
                    self._cancel(now, "turn_detected")
            elif isinstance(frame, SpeechStopped):
                self._push(now, ev.InputAudioBufferSpeechStopped(
                    audio_end_ms=at_ms, item_id=self._speech_item or ""))
            else:  # TurnCommitted
                respond = (bool(self.config.turn_option("create_response", True))
                           and not self.config.transcription_session)
                self._commit(now, self._speech_item or self._id("item"), respond)
                self._speech_item = None

    def _vad(self, rate: int) -> Segmenter:
        if self._segmenter is None:
            vad = self.options.vad
            silence = self.config.turn_option("silence_duration_ms", vad.min_silence_ms)
            preroll = self.config.turn_option("prefix_padding_ms", vad.preroll_ms)
            options = msgspec.structs.replace(vad, min_silence_ms=silence, preroll_ms=preroll,
                                              commit_on_silence=True)
            self._segmenter = Segmenter(options, rate)
        return self._segmenter

    def _commit(self, now: float, item_id: str, respond: bool = False) -> None:
        pcm, rate = bytes(self._buffer), RATES[self.config.input_format]
        self._buffer.clear()
        self._capped = False
        self._push(now, ev.InputAudioBufferCommitted(item_id=item_id,
                                                     previous_item_id=self._last_item))
        item = ev.Item(id=item_id, object="realtime.item", type="message", status="completed",
                       role="user", content=[ev.ContentPart(type="input_audio")])
        self._announce(now, item)
        self._finish_item(now, item)
        job = Transcription(pcm, rate, item_id, respond, self._expectation())
        if self.transcriber is None:
            self.transcribed(job, None, now)
        elif self.defer_transcription:
            self._transcriptions.append(job)
        else:
            self.transcribed(job, job.run(self.transcriber), now)

    def _expectation(self) -> str | None:
        """What the recogniser listens for: in a conversation, what the script expects
        next; in a transcription session, the ``prompt`` when it names an expectation."""
        if not self.config.transcription_session:
            return self.dialogue.expect
        prompt = (self.config.transcription or {}).get("prompt")
        known = getattr(self.transcriber, "expectations", ())
        return prompt if isinstance(prompt, str) and prompt in known else None

    def take_transcription(self) -> Transcription | None:
        """The oldest committed audio still to transcribe, handed over once.

        Only with ``defer_transcription``: run it (``job.run(session.transcriber)``,
        in a thread) and give the words back with ``transcribed`` before the
        next ``receive_data``.
        """
        return self._transcriptions.pop(0) if self._transcriptions else None

    def take_speech(self) -> Speech | None:
        """The oldest reply text still to synthesise, handed over once.

        Only with ``defer_speech``, for texts not in the speech cache: speak
        it (``session.speaker.speak(job.text, job.rate)``, off the event loop)
        and give the audio back with ``spoken``; the response waits for it.
        """
        return self._speeches.pop(0) if self._speeches else None

    def transcribed(self, job: Transcription, words: str | None, now: float) -> None:
        """The words of ``job`` (None: unheard, the script's ``user`` text stands in)."""
        if self.config.transcription_session:  # no script: nothing stands in for words
            words = words or ""
            for i, word in enumerate(words.split(" ") if words else []):
                self._push(now, ev.InputTranscriptionDelta(
                    item_id=job.item_id, delta=word if i == 0 else " " + word))
        else:
            words = self.dialogue.hear(words)
        self.transcripts.append(words)
        self._push(now, ev.InputTranscriptionCompleted(
            item_id=job.item_id, transcript=words, usage=self._transcription_usage(job, words)))
        if job.respond and not self._active:
            self._respond(now, None)

    def _transcription_usage(self, job: Transcription, words: str) -> dict[str, Any]:
        """What transcribing ``job`` cost, as the API bills it: seconds of audio for
        whisper-1, else tokens (ten audio tokens a second in, one per word out)."""
        seconds = len(job.pcm) / 2 / job.rate
        if (self.config.transcription or {}).get("model") == "whisper-1":
            return {"type": "duration", "seconds": round(seconds, 3)}
        audio, text = max(1, round(seconds * 10)), len(words.split())
        return {"type": "tokens", "input_tokens": audio, "output_tokens": text,
                "total_tokens": audio + text,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio}}

    def _truncate(self, event: ev.ConversationItemTruncate, now: float) -> None:
        item = self._items.get(event.item_id)
        if item is None or item.role != "assistant" or item.type != "message":
            raise ClientError(f"Item with item_id '{event.item_id}' is not an assistant message "
                              "in this conversation.", "item_truncate_invalid_item_id",
                              "item_id")
        if event.content_index != 0:
            raise ClientError("Invalid 'content_index': assistant messages have one content "
                              "part (0).", "invalid_value", "content_index")
        heard = self._audio_ms.get(event.item_id, 0.0)
        if event.audio_end_ms < 0:
            raise ClientError("Invalid 'audio_end_ms': it must be 0 or more.", "invalid_value",
                              "audio_end_ms")
        if event.audio_end_ms > heard + 1:
            raise ClientError(f"Audio content of {heard:.0f}ms is already shorter than "
                              f"{event.audio_end_ms}ms.", "invalid_value", "audio_end_ms")
        self.truncated[event.item_id] = event.audio_end_ms
        self._push(now, ev.ConversationItemTruncated(item_id=event.item_id, content_index=0,
                                                     audio_end_ms=event.audio_end_ms))
