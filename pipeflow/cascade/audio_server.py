"""The local server's audio endpoints, as OpenAI's API shapes them.

- ``POST /v1/audio/transcriptions``: a multipart upload (``file``: a WAV,
  ``model``, ``response_format`` ``json`` or ``text``), heard by pocketsphinx
  off the event loop; answers ``{"text": ...}``;
- ``POST /v1/audio/speech``: ``{"input", "voice", "response_format"}``;
  ``mp3`` (the API's default; with the ``mp3`` extra, LAME), ``pcm`` (24 kHz
  PCM16 mono, as OpenAI's) or ``wav``, spoken by espeak-ng sentence by
  sentence and streamed (but ``wav``), so the first sentence's audio leaves
  before the last is made; any other format is a 400 naming those served.

``local_api_app`` puts them beside ``/v1/chat/completions`` (the script
engine): the app the local Realtime server serves on its own port. Every
answer carries ``Server-Timing: model;dur=MS``, the time inside the engine,
so a client can tell pipeflow's share of a latency from the model's.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import soxr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from pipeflow.audio.wav import decode_wav
from pipeflow.cascade.audio import SPEECH_RATE, wav_bytes
from pipeflow.cascade.multipart import boundary_of, parse_form
from pipeflow.cascade.server import BodyRefused, chat_route, read_body, read_json, refused, timing
from pipeflow.errors import ConfigError, LocalError
from pipeflow.realtime.script import Script
from pipeflow.realtime.voice import Speaker

__all__ = ["local_api_app", "speech_route", "transcription_route"]

_RATE = 24000  # what a Realtime transcriber takes
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+")
_MAX_INPUT = 4096  # characters, as OpenAI's limit
_MAX_SPEECH_BODY = 64 * 1024  # a speech request is its text and a few options
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
"""Largest audio upload taken, as OpenAI's limit."""
MAX_UPLOAD_SECONDS = 120.0
"""Longest audio transcribed: the offline recogniser's work grows with it."""


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                   "param": param, "code": None}}, status_code=status)


class _Recogniser:
    """The transcriber, made on first use (pocketsphinx loads in a second or two)."""

    def __init__(self, transcriber: Any = None) -> None:
        self.transcriber = transcriber
        self._lock = asyncio.Lock()

    async def get(self) -> Any:
        async with self._lock:
            if self.transcriber is None:
                from pipeflow.asr.pocketsphinx import PocketsphinxTranscriber

                self.transcriber = await asyncio.to_thread(PocketsphinxTranscriber)
        return self.transcriber


def transcription_route(transcriber: Any = None, api_key: str | None = None) -> Route:
    """``POST /v1/audio/transcriptions`` with ``transcriber`` (``transcribe(pcm16_24k)``;
    default: pocketsphinx's general English model)."""
    recogniser = _Recogniser(transcriber)

    async def transcriptions(request: Request) -> Response:
        if (refusal := refused(request, api_key)) is not None:
            return refusal
        try:
            form = parse_form(await read_body(request, MAX_UPLOAD_BYTES),
                              boundary_of(request.headers.get("content-type", "")))
        except BodyRefused as refusal:
            return refusal.response
        except ValueError as exc:
            return _error(400, f"Could not read the upload: {exc}.")
        upload = form.get("file")
        if upload is None:
            return _error(400, "A 'file' field (the audio, as WAV) is required.", "file")
        fmt = form["response_format"].data.decode() if "response_format" in form else "json"
        if fmt not in ("json", "text"):
            return _error(400, f"response_format {fmt!r} is not served here; use json or text.",
                          "response_format")
        try:
            audio = decode_wav(upload.data, f"the uploaded file {upload.filename or 'file'!r}")
        except ConfigError as exc:
            return _error(400, f"{exc} Only WAV uploads are understood here.", "file")
        if audio.duration > MAX_UPLOAD_SECONDS:
            return _error(400, f"The audio is {audio.duration:.0f} s long; at most "
                          f"{MAX_UPLOAD_SECONDS:.0f} s are transcribed here.", "file")
        pcm = audio.samples.astype("<i2", copy=False)
        if audio.sample_rate != _RATE and pcm.size:
            pcm = np.asarray(soxr.resample(pcm, audio.sample_rate, _RATE, quality="HQ"),
                             dtype="<i2")
        engine = await recogniser.get()
        started = time.perf_counter()
        # A prompt naming one of the script's expectations ("digits") picks its model,
        # as the Realtime path's dialogue state does; any other prompt is ignored.
        prompt = form["prompt"].data.decode("utf-8", "replace") if "prompt" in form else ""
        expect = prompt if prompt in getattr(engine, "expectations", ()) else None
        words = str(await asyncio.to_thread(
            engine.transcribe, pcm.tobytes(), _RATE, expect=expect)) if pcm.size else ""
        took = timing(time.perf_counter() - started)
        if fmt == "text":
            return PlainTextResponse(words + "\n", headers=took)
        seconds = audio.duration
        return JSONResponse({"text": words, "usage": {"type": "duration",
                                                      "seconds": max(1, round(seconds))}},
                            headers=took)

    return Route("/v1/audio/transcriptions", transcriptions, methods=["POST"])


def speech_route(speaker: Speaker, api_key: str | None = None) -> Route:
    """``POST /v1/audio/speech`` spoken by ``speaker``, streamed sentence by sentence."""

    async def speech(request: Request) -> Response:
        if (refusal := refused(request, api_key)) is not None:
            return refusal
        try:
            body = await read_json(request, _MAX_SPEECH_BODY)
        except BodyRefused as refusal:
            return refusal.response
        text = body.get("input") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            return _error(400, "'input' must be the text to speak.", "input")
        if len(text) > _MAX_INPUT:
            return _error(400, f"'input' is {len(text)} characters; at most {_MAX_INPUT}.",
                          "input")
        fmt = body.get("response_format", "mp3")  # the API's (and the SDK's) default
        encoder = mp3_encoder() if fmt == "mp3" else None
        if fmt not in ("pcm", "wav") and encoder is None:
            return _error(400, f"response_format {fmt!r} is not served here; use "
                          f"{served_formats()}.", "response_format")
        sentences = [s for s in _SENTENCE.split(text.strip()) if s]
        if fmt == "wav":  # a WAV header holds the length: the whole answer at once
            started = time.perf_counter()
            pcm = b"".join([await _say(speaker, s) for s in sentences])
            return Response(wav_bytes(pcm, SPEECH_RATE), media_type="audio/wav",
                            headers=timing(time.perf_counter() - started))
        started = time.perf_counter()
        first = await _say(speaker, sentences[0])  # a failure is still a clean 500
        encode = (lambda pcm: bytes(encoder.encode(pcm))) if encoder else (lambda pcm: pcm)

        async def stream() -> AsyncIterator[bytes]:
            yield encode(first)
            for sentence in sentences[1:]:
                yield encode(await _say(speaker, sentence))
            if encoder is not None:
                yield bytes(encoder.flush())

        return StreamingResponse(stream(), media_type="audio/mpeg" if encoder else "audio/pcm",
                                 headers=timing(time.perf_counter() - started))

    return Route("/v1/audio/speech", speech, methods=["POST"])


def mp3_encoder() -> Any:
    """A LAME encoder for 24 kHz mono speech (64 kbit/s), or None without ``lameenc``
    (the ``mp3`` extra: ``pip install 'pipeflow[mp3]'``)."""
    try:
        import lameenc
    except ImportError:
        return None
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(64)
    encoder.set_in_sample_rate(SPEECH_RATE)
    encoder.set_channels(1)
    encoder.set_quality(7)  # fast: the voice is espeak-ng's, not worth more
    return encoder


def served_formats() -> str:
    """The ``response_format``s of ``/v1/audio/speech`` served here, for an error."""
    mp3 = "mp3, " if mp3_encoder() is not None else ""
    return f"{mp3}pcm (24 kHz PCM16 mono) or wav" + (
        "" if mp3 else " (mp3 needs the 'mp3' extra: pip install 'pipeflow[mp3]')")


async def _say(speaker: Speaker, sentence: str) -> bytes:
    try:
        return await asyncio.to_thread(speaker.speak, sentence, SPEECH_RATE)
    except (ConfigError, LocalError) as exc:
        raise LocalError(f"the local voice could not speak {sentence[:40]!r}: {exc}") from exc


def local_api_app(script: Script | None = None, api_key: str | None = None,
                  transcriber: Any = None, speaker: Speaker | None = None) -> Starlette:
    """Chat Completions over ``script``, and the audio endpoints, in one app.

    Args:
        script: the script the chat endpoint plays (default: the demo).
        api_key: when set, every request must send ``Authorization: Bearer KEY``.
        transcriber: hears uploads (default: pocketsphinx, general English).
        speaker: speaks ``/v1/audio/speech`` (default: espeak-ng, ``en-us``).
    """
    voice = speaker or Speaker()
    return Starlette(routes=[chat_route(script, api_key), transcription_route(transcriber, api_key),
                             speech_route(voice, api_key)])
