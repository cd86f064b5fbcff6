"""The ``stt`` and ``tts`` stages against a faulty server on 127.0.0.1.

A 401, a 429 with ``retry-after``, a 5xx and an answer cut mid-stream each
become a clear ``ErrorFrame`` or a retry, and the call goes on: a failed
transcription still gives the turn (empty words), a failed sentence is
skipped and the rest of the answer spoken.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from pipeflow.cascade.frames import SpeechAudio, SpeechDone
from pipeflow.cascade.retry import RetryPolicy
from pipeflow.frames import AudioFrame, EndOfStream, ErrorFrame, Frame, Transcript, TurnCommitted
from pipeflow.pipeline import Pipeline
from pipeflow.stage import Frames, Stage
from pipeflow.stages.stt import SpeechToText
from pipeflow.stages.tts import TextToSpeech
from tests.test_cascade_chat import Server

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
FAST = RetryPolicy(retries=2, backoff_s=0.01, max_wait_s=1.0)
PCM = bytes(range(256)) * 40  # 10240 bytes


async def _read(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return await reader.readexactly(length)


def answer(status: str, body: bytes, *headers: str, cut_at: int | None = None,
           kind: str = "application/json") -> Handler:
    """One HTTP answer, chunked; ``cut_at``: the connection drops after that many bytes."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read(reader)
        head = [f"HTTP/1.1 {status}", f"Content-Type: {kind}", "Transfer-Encoding: chunked",
                *headers]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        data = body if cut_at is None else body[:cut_at]
        for start in range(0, len(data), 1000):
            piece = data[start:start + 1000]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        if cut_at is None:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()
    return handle


def refused(code: str, *headers: str) -> Handler:
    return answer(code, b'{"error": {"message": "no", "type": "x", "code": null}}', *headers)


class Source(Stage):
    def __init__(self, frames: list[Frame]) -> None:
        super().__init__()
        self.frames = frames

    async def process(self, frames: Frames) -> Frames:
        for frame in self.frames:
            yield frame


class Upstream(Stage):
    """Stands in for the llm stage: takes the tts stage's speech fed back."""

    accepts = (SpeechAudio, SpeechDone)

    def __init__(self) -> None:
        super().__init__()
        self.got: list[Frame] = []
        self.done = asyncio.Event()
        self.audio = asyncio.Event()

    async def process(self, frames: Frames) -> Frames:
        ending: Frame | None = None
        async for frame in frames:
            if isinstance(frame, SpeechAudio | SpeechDone):
                self.got.append(frame)
                self.audio.set()
                if isinstance(frame, SpeechDone):
                    self.done.set()
            elif isinstance(frame, EndOfStream):
                ending = frame
            else:
                yield frame
            if ending is not None and self.done.is_set():  # the speech is over: end
                yield ending
                break


def turn() -> list[Frame]:
    return [AudioFrame(pcm=bytes(3200), sample_rate=16000), TurnCommitted()]


async def run(stages: list[Stage]) -> list[Frame]:
    return [f async for f in Pipeline(stages).stream()]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


async def test_stt_errors_are_frames_and_every_turn_still_gets_its_words() -> None:
    async with Server(
        refused("401 Unauthorized"),
        refused("429 Too Many Requests", "Retry-After: 0.05"), answer("200 OK", b'{"text": "two"}'),
        refused("503 Service Unavailable"), refused("502 Bad Gateway"),
        refused("500 Internal Server Error"),
        answer("200 OK", b'{"text": "four"}', cut_at=5),
    ) as server:
        heard = asyncio.Event()

        class Turns(Stage):  # one turn at a time, as a caller speaks them
            async def process(self, frames: Frames) -> Frames:
                for _ in range(4):
                    heard.clear()
                    for frame in turn():
                        yield frame
                    await heard.wait()
                yield EndOfStream()

        class Watch(Stage):
            async def process(self, frames: Frames) -> Frames:
                async for frame in frames:
                    if isinstance(frame, Transcript):
                        heard.set()
                    yield frame

        stt = SpeechToText(base_url=server.url, retry=FAST)
        out = await run([Turns(), stt, Watch()])
    words = [(f.item_id, f.text) for f in out if isinstance(f, Transcript)]
    assert words == [("input_1", ""), ("input_2", "two"), ("input_3", ""), ("input_4", "")]
    errors = [f for f in out if isinstance(f, ErrorFrame)]
    assert [e.code for e in errors] == ["http_401", "http_500", "stream_cut"]
    assert "speech-to-text model at " + server.url + "/audio/transcriptions" in errors[0].message
    assert not any(e.fatal for e in errors)
    assert type(out[-1]) is EndOfStream


async def test_tts_retries_then_skips_a_failed_sentence_and_speaks_the_rest() -> None:
    text = "The first sentence is here. The second one fails. The third is spoken."
    async with Server(
        refused("429 Too Many Requests", "Retry-After: 0.05"),
        answer("200 OK", PCM, kind="audio/pcm"),
        answer("200 OK", PCM, kind="audio/pcm", cut_at=3001),  # cut mid-answer: not retried
        refused("503 Service Unavailable"), answer("200 OK", PCM, kind="audio/pcm"),
    ) as server:
        upstream = Upstream()
        tts = TextToSpeech(base_url=server.url, retry=FAST, chunk_ms=50)
        out = await run([Source([Transcript(role="agent", text=text, final=False,
                                            item_id="item_1"),
                                 Transcript(role="agent", text="", final=True, item_id="item_1"),
                                 EndOfStream()]), upstream, tts])
    errors = [f for f in out if isinstance(f, ErrorFrame)]
    assert [e.code for e in errors] == ["stream_cut"]
    assert "the voice at " + server.url + "/audio/speech cut its answer short" in errors[0].message
    said = [f.sentence for f in upstream.got if isinstance(f, SpeechAudio) and f.sentence]
    assert said == ["The first sentence is here.", "The second one fails.",
                    "The third is spoken."]
    audio = [f for f in upstream.got if isinstance(f, SpeechAudio)]
    assert all(f.sample_rate == 24000 and len(f.pcm) % 2 == 0 for f in audio)
    assert sum(len(f.pcm) for f in audio) == len(PCM) * 2 + 3000  # what came, whole samples
    assert upstream.got[-1] == SpeechDone(item_id="item_1", failed=True)


async def test_a_barge_in_stops_the_voice_at_once() -> None:
    from pipeflow.frames import Interrupt

    upstream = Upstream()
    upstream.done.set()  # the voice is stopped: no SpeechDone is owed

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: audio/pcm\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(200):  # 10 s of speech, 50 ms a piece, at real time
            writer.write(b"%x\r\n%s\r\n" % (2400, bytes(2400)))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.close()

    async def frames() -> AsyncIterator[Frame]:
        yield Transcript(role="agent", text="A very long sentence. ", final=False,
                         item_id="item_1")
        await upstream.audio.wait()  # the first audio is out
        yield Interrupt()
        yield Transcript(role="agent", text="More words of it.", final=True, item_id="item_1")
        yield EndOfStream()

    class Feed(Stage):
        async def process(self, frames: Frames) -> Frames:
            async for frame in frames_():
                yield frame

    frames_ = frames
    async with Server(slow) as server:
        tts = TextToSpeech(base_url=server.url, chunk_ms=50)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await run([Feed(), upstream, tts])
        took = loop.time() - began
    audio = [f for f in upstream.got if isinstance(f, SpeechAudio)]
    assert audio and len(audio) < 20 and took < 3.0  # stopped, not 10 s of speech
    assert not [f for f in upstream.got if isinstance(f, SpeechDone)]


async def test_a_streamed_voice_s_first_audio_goes_out_before_a_whole_piece_came() -> None:
    """The first read of a streamed voice (here 1000 bytes, a piece is 4800) is sent at
    once: the first audio does not wait for the voice to make a whole piece."""
    upstream = Upstream()
    waited: list[bool] = []

    async def first_then_rest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: audio/pcm\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n%s\r\n" % (1000, PCM[:1000]))
        await writer.drain()
        try:  # the rest only once the first audio is out (or it never would be)
            await asyncio.wait_for(upstream.audio.wait(), 2.0)
            waited.append(True)
        except TimeoutError:
            waited.append(False)
        rest = PCM[1000:]
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        await writer.drain()
        writer.close()

    async with Server(first_then_rest) as server:
        tts = TextToSpeech(base_url=server.url)  # 100 ms pieces: 4800 bytes at 24 kHz
        await run([Source([Transcript(role="agent", text="One sentence to say.", final=False,
                                      item_id="item_1"),
                           Transcript(role="agent", text="", final=True, item_id="item_1"),
                           EndOfStream()]), upstream, tts])
    audio = [f for f in upstream.got if isinstance(f, SpeechAudio)]
    assert waited == [True]
    assert audio[0].pcm == PCM[:1000] and audio[0].sentence == "One sentence to say."
    assert b"".join(f.pcm for f in audio) == PCM  # all of it, in order
    assert [len(f.pcm) for f in audio[1:]] == [4800, len(PCM) - 1000 - 4800]
