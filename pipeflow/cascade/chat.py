"""The I/O-free parts of a Chat Completions cascade.

- ``ChatHistory``: the message list the engine's commands build (user words,
  assistant text and tool calls, tool results), cut on barge-in to what the
  caller heard;
- ``SseDecoder``: bytes of a ``text/event-stream`` body in, ``data`` payloads out;
- ``ChatStream``: streamed ``chat.completion.chunk`` objects in, text deltas
  out, tool-call deltas assembled into whole calls;
- ``SentenceSplitter``: text deltas in, whole sentences out, so speech can
  start with the first sentence instead of the whole answer;
- ``http_error``: an HTTP error response as one clear sentence.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

__all__ = [
    "EXPECT_HEADER",
    "ChatError",
    "ChatHistory",
    "ChatStream",
    "SentenceSplitter",
    "SseDecoder",
    "StreamedCall",
    "http_error",
]


EXPECT_HEADER = "X-Pipeflow-Expect"
"""Response header naming what the script expects the caller to say next ("digits"):
the local server's own extension, which a cascade's ``stt`` stage passes on to the
transcription endpoint as its ``prompt``. Other providers never send it."""


class ChatError(Exception):
    """A chat request failed; ``str()`` is the sentence for the ``ErrorFrame``.

    Attributes:
        code: short machine-readable code (``http_401``, ``stream_cut``...).
        status: the HTTP status, 0 when there was none.
        retry_after: seconds the provider asked to wait (429), else None.
    """

    def __init__(self, message: str, code: str, status: int = 0,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.retry_after = retry_after


def http_error(status: int, body: bytes, headers: dict[str, str], url: str,
               who: str = "the chat model") -> ChatError:
    """The ``ChatError`` of an HTTP error response from ``url``.

    Reads OpenAI's ``{"error": {"message", "type", "code"}}`` body when there is
    one, and ``retry-after`` (seconds) on a 429. ``who`` names the model in the
    sentence ("the chat model", "the speech-to-text model", "the voice").
    """
    detail = ""
    try:
        data = msgspec.json.decode(body) if body else None
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            detail = str(data["error"].get("message") or "")
    except msgspec.DecodeError:
        detail = body[:200].decode("utf-8", "replace").strip()
    lowered = {k.lower(): v for k, v in headers.items()}
    retry_after: float | None = None
    if status == 429:
        try:
            retry_after = float(lowered.get("retry-after", ""))
        except ValueError:
            retry_after = None
    if status == 401:
        what = "refused the API key (401): check OPENAI_API_KEY or the stage's api_key_env"
    elif status == 429:
        wait = f"; it asks to retry after {retry_after:g} s" if retry_after is not None else ""
        what = f"is rate limiting this key (429){wait}"
    elif status >= 500:
        what = f"failed on its side ({status})"
    else:
        what = f"rejected the request ({status})"
    message = f"{who} at {url} {what}" + (f": {detail}" if detail else "")
    return ChatError(message, f"http_{status}", status, retry_after)


class SseDecoder:
    """Splits a ``text/event-stream`` body into the ``data`` of each event.

    Bytes may arrive cut anywhere (mid-line, mid-UTF-8 sequence); an event
    ends at a blank line. Comment lines (``: keep-alive``) are skipped.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        """The ``data`` payloads completed by ``chunk``, in order."""
        self._buffer += chunk
        out: list[str] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                return out
            line = self._buffer[:end].rstrip(b"\r").decode("utf-8")
            self._buffer = self._buffer[end + 1:]
            if not line:
                if self._data:
                    out.append("\n".join(self._data))
                    self._data = []
            elif line.startswith("data:"):
                self._data.append(line[5:].removeprefix(" "))
            # other fields (event:, id:, retry:) and comments mean nothing here


class StreamedCall(msgspec.Struct, kw_only=True):
    """One tool call assembled from its deltas."""

    call_id: str = ""
    name: str = ""
    arguments: str = ""


class ChatStream:
    """The state of one streamed chat completion, fed chunk by chunk.

    ``feed`` returns the text delta of a chunk; tool calls are collected by
    their ``index`` (the id and name come in the first delta of a call, the
    arguments in pieces after it). ``done`` is set by ``[DONE]`` or a
    ``finish_reason``; a stream that ends without either was cut.
    """

    def __init__(self) -> None:
        self.text = ""
        self.calls: dict[int, StreamedCall] = {}
        self.finish_reason: str | None = None
        self.saw_done = False
        self.usage: dict[str, int] = {}

    @property
    def done(self) -> bool:
        """The stream said it was complete."""
        return self.saw_done or self.finish_reason is not None

    def feed_data(self, data: str) -> str:
        """Handle one SSE ``data`` payload; returns its text delta.

        Raises:
            ChatError: the payload is not a chunk (``bad_chunk``) or is an
                error object sent mid-stream (``stream_error``).
        """
        if data.strip() == "[DONE]":
            self.saw_done = True
            return ""
        try:
            chunk = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise ChatError(f"the chat model sent a stream chunk that is not JSON ({exc}): "
                            f"{data[:120]!r}", "bad_chunk") from None
        if not isinstance(chunk, dict):
            raise ChatError(f"the chat model sent a stream chunk that is not an object: "
                            f"{data[:120]!r}", "bad_chunk")
        return self.feed(chunk)

    def feed(self, chunk: dict[str, Any]) -> str:
        """Handle one decoded ``chat.completion.chunk``; returns its text delta."""
        if isinstance(chunk.get("error"), dict):
            message = chunk["error"].get("message") or "unknown error"
            raise ChatError(f"the chat model reported an error mid-stream: {message}",
                            "stream_error")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = {k: v for k, v in usage.items() if type(v) is int}
        text = ""
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            piece = delta.get("content")
            if isinstance(piece, str):
                text += piece
            for call in delta.get("tool_calls") or []:
                self._call_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        self.text += text
        return text

    def _call_delta(self, delta: dict[str, Any]) -> None:
        index = int(delta.get("index", len(self.calls)))
        call = self.calls.setdefault(index, StreamedCall())
        if delta.get("id"):
            call.call_id = delta["id"]
        function = delta.get("function") or {}
        if function.get("name"):
            call.name += function["name"]
        if function.get("arguments"):
            call.arguments += function["arguments"]

    def tool_calls(self) -> list[StreamedCall]:
        """The assembled calls, in index order."""
        return [self.calls[i] for i in sorted(self.calls)]


_SENTENCE_END = re.compile(r"[.!?;:](?:[\"')\]]*)\s+")


class SentenceSplitter:
    """Text deltas in, sentences out (a sentence ends at ``.!?;:`` then a space).

    ``min_chars`` keeps very short pieces ("Hi.") together with the next
    sentence, so the voice does not stop after each word.
    """

    def __init__(self, min_chars: int = 12) -> None:
        self.min_chars = min_chars
        self._pending = ""

    def feed(self, delta: str) -> list[str]:
        """The sentences completed by ``delta``."""
        self._pending += delta
        out: list[str] = []
        start = 0
        for match in _SENTENCE_END.finditer(self._pending):
            if match.end() - start < self.min_chars:
                continue
            out.append(self._pending[start:match.end()].strip())
            start = match.end()
        self._pending = self._pending[start:]
        return [s for s in out if s]

    def flush(self) -> list[str]:
        """What is left at the end of the answer."""
        rest, self._pending = self._pending.strip(), ""
        return [rest] if rest else []


class ChatHistory:
    """The conversation as Chat Completions messages, built from engine commands.

    Assistant messages are kept per output item, so a truncation (the caller
    barged in) can cut the one it names to the words actually heard.
    """

    def __init__(self, instructions: str | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        if instructions:
            self.messages.append({"role": "system", "content": instructions})
        self._items: dict[str, dict[str, Any]] = {}
        self._spoken: dict[str, list[tuple[str, float]]] = {}  # item -> (sentence, end ms)

    def add_message(self, text: str, role: str = "user") -> None:
        """A user (or system) message: ``AddMessage``, or the words the STT heard."""
        self.messages.append({"role": role, "content": text})

    def add_assistant(self, item_id: str, text: str,
                      calls: list[StreamedCall] | None = None) -> None:
        """The assistant's answer of one item, with its tool calls.

        An answer with neither (cancelled before a word was spoken) is left out:
        Chat Completions refuses an assistant message with no content and no calls.
        """
        if not text and not calls:
            return
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = [
                {"id": c.call_id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments or "{}"}}
                for c in calls]
        self.messages.append(message)
        self._items[item_id] = message

    def add_tool_result(self, call_id: str, output: str) -> None:
        """The output of a tool call (``SendToolResult``)."""
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": output})

    def spoken(self, item_id: str, sentence: str, end_ms: float) -> None:
        """``sentence`` of ``item_id`` is spoken, its audio ending at ``end_ms``."""
        self._spoken.setdefault(item_id, []).append((sentence, end_ms))

    def spoken_until(self, item_id: str, end_ms: float) -> None:
        """The sentence of ``item_id`` being spoken goes on until ``end_ms`` (streamed speech)."""
        said = self._spoken.get(item_id)
        if said:
            said[-1] = (said[-1][0], end_ms)

    def heard(self, item_id: str, audio_end_ms: float) -> str:
        """The words of ``item_id`` whose audio ends by ``audio_end_ms``.

        Whole sentences heard are kept; of the sentence cut, the share of its
        words matching the share of its audio played.
        """
        words: list[str] = []
        start = 0.0
        for sentence, end in self._spoken.get(item_id, []):
            if end <= audio_end_ms:
                words.append(sentence)
            else:
                share = max(0.0, (audio_end_ms - start) / max(end - start, 1e-9))
                parts = sentence.split()
                cut = int(len(parts) * share)
                if cut:
                    words.append(" ".join(parts[:cut]))
                break
            start = end
        return " ".join(words)

    def truncate(self, item_id: str, audio_end_ms: float) -> None:
        """``TruncateItem``: keep only what the caller heard of ``item_id``."""
        message = self._items.get(item_id)
        if message is None:
            return
        message["content"] = self.heard(item_id, audio_end_ms) or None
        if message["content"] is None and not message.get("tool_calls"):
            self.messages.remove(message)
            del self._items[item_id]
