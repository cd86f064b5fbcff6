"""Speech-to-text and text-to-speech for the cascade: over HTTP, or in-process offline.

- ``HttpTranscriber``: ``POST {base_url}/audio/transcriptions``, multipart
  with the turn as a WAV file, as OpenAI's API (``whisper-1``,
  ``gpt-4o-transcribe``...) and compatible servers take it; the ``text`` of
  the JSON answer is the words;
- ``HttpSpeech``: ``POST {base_url}/audio/speech`` with ``response_format:
  pcm`` (24 kHz PCM16 mono), read as it streams, so a sentence's first
  audio goes out before its last is made;
- ``OfflineTranscriber`` / ``OfflineSpeech``: pocketsphinx and espeak-ng in a
  worker thread of their own (``ModelThread``: one hop there and one back),
  so the event loop keeps running while they work.

Every failure is a ``ChatError`` whose text names the URL and the status.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx
import msgspec

from pipeflow.audio.tts import synthesize
from pipeflow.cascade.chat import ChatError, http_error
from pipeflow.cascade.worker import ModelThread

__all__ = [
    "SPEECH_RATE",
    "HttpSpeech",
    "HttpTranscriber",
    "OfflineSpeech",
    "OfflineTranscriber",
    "SpeechClient",
    "SttClient",
    "wav_bytes",
]

SPEECH_RATE = 24000
"""The rate of ``/v1/audio/speech``'s ``pcm`` format (fixed by the API)."""

_STT = "the speech-to-text model"
_TTS = "the voice"


class SttClient(Protocol):
    """What the ``stt`` stage needs of a recogniser."""

    async def transcribe(self, pcm: bytes, sample_rate: int, expect: str | None = None) -> str:
        """The words of one caller turn (PCM16 little-endian mono).

        ``expect`` names what the caller is expected to say, for a recogniser
        with a model per expectation (pocketsphinx); others ignore it.
        """
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class SpeechClient(Protocol):
    """What the ``tts`` stage needs of a voice."""

    sample_rate: int

    def speak(self, text: str) -> AsyncIterator[bytes]:
        """PCM16 mono at ``sample_rate`` of ``text``, in pieces as they are made."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """``pcm`` (PCM16 mono) as a WAV file in memory (the canonical 44-byte header)."""
    head = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(pcm), b"WAVE", b"fmt ", 16, 1, 1,
                       sample_rate, sample_rate * 2, 2, 16, b"data", len(pcm))
    return head + pcm


def _transport_error(exc: httpx.HTTPError, who: str, url: str) -> ChatError:
    if isinstance(exc, httpx.TimeoutException):
        return ChatError(f"{who} at {url} did not answer in time ({type(exc).__name__})",
                         "timeout")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return ChatError(f"{who} at {url} cut its answer short ({exc})", "stream_cut")
    return ChatError(f"cannot reach {who} at {url} ({exc})", "unreachable")


def _client(api_key: str, timeout_s: float,
            transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(headers=headers, timeout=timeout_s, transport=transport)


class HttpTranscriber:
    """``POST {base_url}/audio/transcriptions`` (multipart: ``file``, ``model``).

    Args:
        base_url: the API root, e.g. ``https://api.openai.com/v1``.
        model: the transcription model (``gpt-4o-mini-transcribe``, ``whisper-1``...).
        api_key: sent as ``Authorization: Bearer``; empty sends none.
        language: ISO-639-1 code of the caller's language ("" lets the model guess).
        timeout_s: connect and read timeout.
        transport: an httpx transport (an in-process app, in tests).
    """

    def __init__(self, base_url: str, model: str, api_key: str = "", language: str = "",
                 timeout_s: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = base_url.rstrip("/") + "/audio/transcriptions"
        self.model = model
        self.language = language
        self._http = _client(api_key, timeout_s, transport)

    async def transcribe(self, pcm: bytes, sample_rate: int, expect: str | None = None) -> str:
        data = {"model": self.model, "response_format": "json"}
        if self.language:
            data["language"] = self.language
        if expect:  # as the API's ``prompt`` (text that guides the recogniser); the local
            data["prompt"] = expect  # server hears a prompt naming an expectation by it
        files = {"file": ("turn.wav", wav_bytes(pcm, sample_rate), "audio/wav")}
        try:
            resp = await self._http.post(self.url, data=data, files=files)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, _STT, self.url) from None
        if resp.status_code != 200:
            raise http_error(resp.status_code, resp.content, dict(resp.headers), self.url, _STT)
        try:
            body = msgspec.json.decode(resp.content)
        except msgspec.DecodeError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise ChatError(f"{_STT} at {self.url} answered without a 'text' field: "
                            f"{resp.content[:120]!r}", "bad_response")
        return body["text"].strip()

    async def aclose(self) -> None:
        await self._http.aclose()


class HttpSpeech:
    """``POST {base_url}/audio/speech`` with ``response_format: pcm``, streamed.

    Args:
        base_url: the API root.
        model: the speech model (``gpt-4o-mini-tts``, ``tts-1``...).
        voice: the provider's voice name (``alloy``, ``marin``...).
        api_key: sent as ``Authorization: Bearer``; empty sends none.
        instructions: how to speak (models that take it), "" for none.
        timeout_s: connect and read timeout.
        transport: an httpx transport (an in-process app, in tests).
    """

    sample_rate = SPEECH_RATE

    def __init__(self, base_url: str, model: str, voice: str, api_key: str = "",
                 instructions: str = "", timeout_s: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = base_url.rstrip("/") + "/audio/speech"
        self.model = model
        self.voice = voice
        self.instructions = instructions
        self._http = _client(api_key, timeout_s, transport)

    async def speak(self, text: str) -> AsyncIterator[bytes]:
        body: dict[str, Any] = {"model": self.model, "input": text, "voice": self.voice,
                                "response_format": "pcm"}
        if self.instructions:
            body["instructions"] = self.instructions
        odd = b""  # a piece may end mid-sample
        try:
            async with self._http.stream("POST", self.url, content=msgspec.json.encode(body),
                                         headers={"Content-Type": "application/json"}) as resp:
                if resp.status_code != 200:
                    raise http_error(resp.status_code, await resp.aread(), dict(resp.headers),
                                     self.url, _TTS)
                async for piece in resp.aiter_bytes():
                    piece = odd + piece
                    cut = len(piece) - len(piece) % 2
                    odd = piece[cut:]
                    if cut:
                        yield piece[:cut]
        except httpx.HTTPError as exc:
            raise _transport_error(exc, _TTS, self.url) from None

    async def aclose(self) -> None:
        await self._http.aclose()


class OfflineTranscriber:
    """A local recogniser (``transcribe(pcm, rate, expect=...)``, e.g. pocketsphinx) off
    the event loop."""

    def __init__(self, recogniser: Any) -> None:
        self.recogniser = recogniser
        self._thread = ModelThread("pipeflow-stt")

    async def transcribe(self, pcm: bytes, sample_rate: int, expect: str | None = None) -> str:
        if not pcm:
            return ""
        # Looked up at each call, so a wrapped ``transcribe`` (a benchmark's timer) is used.
        return str(await self._thread.call(self.recogniser.transcribe, pcm, sample_rate,
                                           expect=expect))

    async def aclose(self) -> None:
        self._thread.close()


class OfflineSpeech:
    """espeak-ng in a worker thread, one sentence at a time."""

    def __init__(self, sample_rate: int = SPEECH_RATE, voice: str = "en-us",
                 words_per_minute: int = 175) -> None:
        self.sample_rate = sample_rate
        self.voice = voice
        self.words_per_minute = words_per_minute
        self._thread = ModelThread("pipeflow-tts")

    async def speak(self, text: str) -> AsyncIterator[bytes]:
        pcm = await self._thread.call(_speech_bytes, text, self.sample_rate, self.voice,
                                      self.words_per_minute)
        yield pcm

    async def aclose(self) -> None:
        self._thread.close()


def _speech_bytes(text: str, sample_rate: int, voice: str, words_per_minute: int) -> bytes:
    """espeak-ng's speech as PCM16 bytes, made in the worker thread (the copy too)."""
    return synthesize(text, sample_rate, voice, words_per_minute).tobytes()
