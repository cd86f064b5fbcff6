"""Responses of the local Realtime server: script steps become timed server events.

``ResponsePlanner`` is the part of ``ServerSession`` that answers
``response.create`` (and server-VAD turns): it takes the response's plan
(a given ``say`` text, else what the session's ``Dialogue`` does next: the
steps left after a tool call, the user turn's, the greeting, the fallback)
and queues every event of the response with its due time: the
message item with its audio and transcript deltas paced after the
first-audio delay, the function call items, ``response.done``. Cancelling
removes what is not sent yet and reports the response ``cancelled``.

Event sequence (OpenAI Realtime API): ``response.created``,
``response.output_item.added``, ``conversation.item.added`` (beta:
``.created``), ``response.content_part.added``, audio and transcript deltas,
their ``.done`` events, ``response.content_part.done``,
``response.output_item.done``, ``conversation.item.done`` (GA),
function call items, ``response.done``, ``rate_limits.updated``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec

from pipeflow.audio import g711
from pipeflow.realtime import events as ev
from pipeflow.realtime.dialogue import Call, Dialogue, Plan
from pipeflow.realtime.script import Script
from pipeflow.realtime.server_config import ServerConfig, Shape, audio_format
from pipeflow.realtime.voice import Speaker

__all__ = ["RATES", "SPEAK_INLINE_CHARS", "Entry", "ResponsePlanner", "Running", "Speech", "Timed"]

RATES = {"pcm16": 24000, "g711_ulaw": 8000, "g711_alaw": 8000}
"""Sample rate of each audio format."""

SPEAK_INLINE_CHARS = 300
"""Replies up to this long are synthesised where they are planned, even with
``defer_speech`` (some 30 ms of espeak-ng: a script's replies are shorter,
and their audio keeps the timing it always had); longer ones, up to the
2,000 characters a ``say`` may hold (0.2 s and more), go off the loop."""

_ENCODE = {"g711_ulaw": g711.ulaw_encode, "g711_alaw": g711.alaw_encode}
_WORDS = re.compile(r"\S+\s*")

_NAMES: dict[str, dict[Shape, type[ev.ServerEvent]]] = {
    "audio": {"ga": ev.OutputAudioDelta, "beta": ev.OutputAudioDeltaBeta},
    "audio_done": {"ga": ev.OutputAudioDone, "beta": ev.OutputAudioDoneBeta},
    "transcript": {"ga": ev.OutputAudioTranscriptDelta, "beta": ev.OutputAudioTranscriptDeltaBeta},
    "transcript_done": {"ga": ev.OutputAudioTranscriptDone,
                        "beta": ev.OutputAudioTranscriptDoneBeta},
    "text": {"ga": ev.OutputTextDelta, "beta": ev.OutputTextDeltaBeta},
    "text_done": {"ga": ev.OutputTextDone, "beta": ev.OutputTextDoneBeta},
}


def _usage(tokens: int) -> dict[str, Any]:
    """A response's usage: ``tokens`` words out, a fixed ten tokens in."""
    return {"total_tokens": tokens + 10, "input_tokens": 10, "output_tokens": tokens,
            "input_token_details": {"text_tokens": 10, "audio_tokens": 0, "cached_tokens": 0},
            "output_token_details": {"text_tokens": tokens, "audio_tokens": 0}}


Timed = tuple[float, ev.ServerEvent, str, float]
"""An event of a stream with its due time, its bookkeeping mark and audio ms sent."""


class Entry:
    """A scheduled server event (encoded), or a stream of events encoded when due.

    ``mark`` says what sending it means to the session: created, delta,
    added, done or response_done.
    """

    __slots__ = ("data", "head", "item", "mark", "ms", "response", "stream")

    def __init__(self, data: bytes = b"", response: str = "", mark: str = "", item: str = "",
                 ms: float = 0.0, stream: Iterator[Timed] | None = None,
                 head: Timed | None = None) -> None:
        self.data = data
        self.response = response
        self.mark = mark
        self.item = item
        self.ms = ms
        self.stream = stream
        self.head = head


class Speech(msgspec.Struct):
    """A reply text to synthesise before its response can go on (``take_speech``)."""

    text: str
    rate: int
    response_id: str


class Running(msgspec.Struct, kw_only=True):
    """A response in progress: what of it was sent."""

    id: str
    deltas: int = 0
    tokens: int = 0
    open: set[str] = msgspec.field(default_factory=set)
    items: list[ev.Item] = msgspec.field(default_factory=list)


class ResponsePlanner:
    """Plans responses; mixed into ``ServerSession``, which owns the state and the schedule."""

    script: Script
    shape: Shape
    config: ServerConfig
    speaker: Speaker
    chunk_ms: int
    delay_s: float
    speed: float
    cancelled: list[str]
    _active: Running | None
    _responses: int
    _items: dict[str, ev.Item]
    _audio_ms: dict[str, float]
    dialogue: Dialogue
    _waiting: dict[str, str | None]
    _conversation: str
    defer_speech: bool
    _speeches: list[Speech]
    _unspoken: dict[str, tuple[Running, Plan, float]]

    # provided by ServerSession
    def _id(self, prefix: str) -> str:
        raise NotImplementedError

    def _push(self, due: float, event: ev.ServerEvent, response: str = "", mark: str = "",
              item: str = "", ms: float = 0.0) -> None:
        raise NotImplementedError

    def _drop(self, response_id: str) -> list[Entry]:
        raise NotImplementedError

    def _push_stream(self, response: str, item: str, stream: Iterator[Timed]) -> None:
        raise NotImplementedError

    def _announce(self, due: float, item: ev.Item, response: str = "") -> None:
        raise NotImplementedError

    def _finish_item(self, due: float, item: ev.Item, response: str = "") -> None:
        raise NotImplementedError

    def _plan(self, say: str | None) -> Plan:
        """The next response: a given text, else the dialogue's next step."""
        if say is not None:
            return Plan(text=say)
        outputs_in = all(v is not None for v in self._waiting.values())
        self._waiting.clear()
        return self.dialogue.respond(outputs_in)

    def _respond(self, now: float, say: str | None) -> None:
        """Start a response: leading ``say`` steps as one message, then the calls.

        Steps after a call wait for the next ``response.create``; ``end``
        after the says ends the script.
        """
        plan = self._plan(say)
        running = Running(id=self._id("resp"))
        self._active = running
        self._responses += 1
        rid = running.id
        self._push(now, ev.ResponseCreated(response=self._response(rid)), rid, "created")
        if (self.defer_speech and len(plan.text) > SPEAK_INLINE_CHARS
                and not self.config.text_only):
            rate = RATES[self.config.output_format]
            if self.speaker.cached(plan.text, rate) is None:  # made off the loop first
                self._speeches.append(Speech(plan.text, rate, rid))
                self._unspoken[rid] = (running, plan, now + self.delay_s)
                return
        self._plan_rest(running, plan, now, now + self.delay_s)

    def spoken(self, job: Speech, pcm: bytes, now: float) -> None:
        """The speech of ``job`` (``take_speech``): its response goes on from ``now``
        (or from its first-audio delay, when that is later). A response cancelled
        meanwhile is forgotten."""
        entry = self._unspoken.pop(job.response_id, None)
        if entry is None or self._active is not entry[0]:
            return
        running, plan, start = entry
        self._plan_rest(running, plan, now, max(start, now), pcm)

    def _plan_rest(self, running: Running, plan: Plan, now: float, end: float,
                   pcm: bytes | None = None) -> None:
        """Queue a started response's message (``pcm``: its speech, when made already),
        its calls and its ``response.done``."""
        rid = running.id
        if plan.text:
            end = self._message(running, plan.text, now, end, pcm)
        for call in plan.calls:
            self._call(running, call, end)
        tokens = len(plan.text.split()) + 4 * len(plan.calls)
        running.tokens = tokens
        done = self._response(rid, "completed", running.items, _usage(tokens))
        self._push(end, ev.ResponseDone(response=done), rid, "response_done")
        self._push(end, ev.RateLimitsUpdated(rate_limits=[
            {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60.0},
            {"name": "tokens", "limit": 100000, "remaining": 100000 - tokens,
             "reset_seconds": 60.0},
        ]), rid)

    def _response(self, rid: str, status: str = "in_progress", output: list[ev.Item] | None = None,
                  usage: dict[str, Any] | None = None,
                  details: dict[str, Any] | None = None) -> ev.Response:
        """The response object in this connection's shape, as the OpenAI API writes it."""
        config = self.config
        modes = ["text"] if config.text_only else ["audio"]
        response = ev.Response(id=rid, status=status, output=list(output or []), usage=usage,
                               status_details=details, conversation_id=self._conversation,
                               max_output_tokens="inf")
        if self.shape == "ga":
            response.output_modalities = modes
            response.audio = {"output": {"format": audio_format(config.output_format),
                                         "voice": config.voice}}
        else:
            response.modalities = modes if config.text_only else ["audio", "text"]
            response.voice = config.voice
            response.output_audio_format = config.output_format
            response.temperature = 0.8
        return response

    def _message(self, running: Running, text: str, now: float, start: float,
                 pcm: bytes | None = None) -> float:
        """Queue an assistant message speaking ``text``; returns when it is done."""
        rid, ga, index = running.id, self.shape == "ga", len(running.items)
        item_id = self._id("item")
        item = ev.Item(id=item_id, object="realtime.item", type="message", status="in_progress",
                       role="assistant", content=[])
        self._push(now, ev.OutputItemAdded(response_id=rid, output_index=index, item=item), rid,
                   "added", item_id)
        self._announce(now, item, rid)
        part_type = "text" if self.config.text_only else "audio"
        ids = {"response_id": rid, "item_id": item_id, "output_index": index}
        self._push(now, ev.ResponseContentPartAdded(
            **ids, part=ev.ContentPart(type=part_type, transcript="" if part_type == "audio"
                                       else None, text="" if part_type == "text" else None)), rid)
        if self.config.text_only:
            for word in _WORDS.findall(text):
                self._push(start, _NAMES["text"][self.shape](**ids, delta=word), rid)
            self._push(start, _NAMES["text_done"][self.shape](**ids, text=text), rid)
            end, part = start, ev.ContentPart(type="text", text=text)
            content = ev.ContentPart(type="output_text" if ga else "text", text=text)
        else:
            end = self._audio(running, text, start, ids, pcm)
            part = ev.ContentPart(type="audio", transcript=text)
            content = ev.ContentPart(type="output_audio" if ga else "audio", transcript=text)
        self._push(end, ev.ResponseContentPartDone(**ids, part=part), rid)
        final = msgspec.structs.replace(item, status="completed", content=[content])
        self._push(end, ev.OutputItemDone(response_id=rid, output_index=index, item=final), rid,
                   "done", item_id)
        self._finish_item(end, final, rid)
        self._items[item_id] = final
        running.items.append(final)
        return end

    def _audio(self, running: Running, text: str, start: float, ids: dict[str, Any],
               pcm: bytes | None = None) -> float:
        """Queue the audio and transcript deltas of one message, paced; returns the end.

        The deltas are a stream encoded as they fall due, so a long answer
        costs little before its first audio.
        """
        fmt, rid, item_id = self.config.output_format, running.id, ids["item_id"]
        rate = RATES[fmt]
        if pcm is None:
            pcm = self.speaker.speak(text, rate)
        step = max(1, rate * self.chunk_ms // 1000) * 2
        count = max(1, -(-len(pcm) // step))
        chunk_s = step / 2 / rate / self.speed if self.speed else 0.0
        self._audio_ms[item_id] = 0.0
        self._push_stream(rid, item_id, self._deltas(pcm, text, ids, start, chunk_s, step))
        end = start + (count - 1) * chunk_s
        self._push(end, _NAMES["audio_done"][self.shape](**ids), rid)
        self._push(end, _NAMES["transcript_done"][self.shape](**ids, transcript=text), rid)
        return end

    def _deltas(self, pcm: bytes, text: str, ids: dict[str, Any], start: float, chunk_s: float,
                step: int) -> Iterator[Timed]:
        """Audio deltas every ``chunk_s``, each word's transcript delta with its chunk."""
        fmt = self.config.output_format
        rate, encode = RATES[fmt], _ENCODE.get(fmt)
        audio_cls, transcript_cls = _NAMES["audio"][self.shape], _NAMES["transcript"][self.shape]
        count = max(1, -(-len(pcm) // step))
        by_chunk: dict[int, list[str]] = {}
        offset = 0
        for word in _WORDS.findall(text):  # each word with the chunk it starts in
            by_chunk.setdefault(offset * count // max(1, len(text)), []).append(word)
            offset += len(word)
        sent_ms = 0.0
        for k in range(count):
            due = start + k * chunk_s
            for word in by_chunk.get(k, ()):
                yield due, transcript_cls(**ids, delta=word), "", 0.0
            chunk = pcm[k * step:(k + 1) * step]
            if chunk:
                sent_ms += len(chunk) / 2 / rate * 1000
                data = encode(chunk) if encode else chunk
                yield due, audio_cls(**ids, delta=data), "delta", sent_ms

    def _call(self, running: Running, call: Call, due: float) -> None:
        """Queue a function call item; its output is awaited before the next steps."""
        rid, index = running.id, len(running.items)
        item_id, call_id = self._id("item"), self._id("call")
        name = call.name
        arguments = msgspec.json.encode(call.arguments).decode()
        item = ev.Item(id=item_id, object="realtime.item", type="function_call",
                       status="in_progress", name=name, call_id=call_id, arguments="")
        self._push(due, ev.OutputItemAdded(response_id=rid, output_index=index, item=item), rid,
                   "added", item_id)
        self._announce(due, item, rid)
        ids = {"response_id": rid, "item_id": item_id, "output_index": index, "call_id": call_id}
        self._push(due, ev.ResponseFunctionCallArgumentsDelta(**ids, delta=arguments), rid)
        done = ev.ResponseFunctionCallArgumentsDone(**ids, arguments=arguments)
        if self.shape == "ga":  # beta's event does not name the function
            done.name = name
        self._push(due, done, rid)
        final = msgspec.structs.replace(item, status="completed", arguments=arguments)
        self._push(due, ev.OutputItemDone(response_id=rid, output_index=index, item=final), rid,
                   "done", item_id)
        self._finish_item(due, final, rid)
        self._items[item_id] = final
        running.items.append(final)
        self._waiting[call_id] = None

    def _cancel(self, now: float, reason: str) -> None:
        """Stop the active response: drop what is not sent, report it cancelled."""
        running = self._active
        assert running is not None  # callers check
        self._active = None
        self.dialogue.cancel()
        self.cancelled.append(running.id)
        dropped = self._drop(running.id)
        rid = running.id
        if any(e.mark == "created" for e in dropped):
            self._push(now, ev.ResponseCreated(response=self._response(rid)), rid)
        unannounced = {e.item for e in dropped if e.mark == "added"}
        output = []
        for index, item in enumerate(running.items):
            if item.id in unannounced:  # never sent: forget it
                self._items.pop(item.id or "", None)
                self._waiting.pop(item.call_id or "", None)
            elif item.id in running.open:
                cut = msgspec.structs.replace(item, status="incomplete")
                self._push(now, ev.OutputItemDone(response_id=rid, output_index=index, item=cut),
                           rid)
                self._finish_item(now, cut, rid)
                output.append(cut)
            else:
                output.append(item)
        done = self._response(rid, "cancelled", output, _usage(running.tokens),
                              {"type": "cancelled", "reason": reason})
        self._push(now, ev.ResponseDone(response=done), rid)
