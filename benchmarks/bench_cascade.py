"""End of caller speech to first agent audio: the cascade beside the Realtime path.

Both paths run the same scripted turn ("how much is a pizza", answered in two
sentences) offline, over and over in one call: the cascade as ``stt`` ->
``llm`` -> ``tts`` (pocketsphinx, the script engine as a streamed chat model,
espeak-ng, all in-process), the Realtime path as the ``realtime`` stage
talking to the local Realtime server (the same recogniser and voice inside
it, no pacing, no first-audio delay). Each turn is timed from the
``TurnCommitted`` leaving the source to the first agent ``AudioFrame``
reaching the probe, split by stage for the cascade: the words (``stt``), the
first text delta (``llm first token``), the first audio (``tts``).

The models' own time is measured apart, inside the engines (each recogniser,
chat and voice call is timed where it runs), so what pipeflow adds is the
end-to-end figure less the models' share: its stages, hops, threads, the
engine and, for the Realtime path, the WebSocket and its codecs. Goal:
under 2 ms at p99 over the models; the first audio follows the first
sentence, not the whole answer (the voice's first call speaks one sentence).

    python -m benchmarks.bench_cascade [--quick] [--turns N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import markdown_table, write_section
from pipeflow.frames import AudioFrame, EndOfStream, ResponseDone, Transcript, TurnCommitted
from pipeflow.pipeline import Pipeline
from pipeflow.stage import Frames, Stage

QUESTION = "how much is a pizza"
SCRIPT = """\
transcriber:
  sentences: ["how much is a pizza", "one salad please", "thank you goodbye"]
turns:
  - match: [pizza]
    repeat: true
    user: "how much is a pizza"
    steps:
      - say: "A pizza costs ten dollars. Would you like one, or two?"
"""


class Timed:
    """Wraps a model call and adds up the seconds spent inside it."""

    def __init__(self) -> None:
        self.spent: list[float] = []

    def sync(self, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent.append(time.perf_counter() - started)
        return timed


class Turns(Stage):
    """Says the question, commits, waits for the answer to be done; ``count`` times."""

    def __init__(self, pcm: bytes, count: int, done: asyncio.Event, marks: list[float]) -> None:
        super().__init__()
        self.pcm, self.count, self.done, self.marks = pcm, count, done, marks

    async def process(self, frames: Frames) -> Frames:
        step = 640 if len(self.pcm) and self.rate == 16000 else 960
        for _ in range(self.count):
            self.done.clear()
            for start in range(0, len(self.pcm), step):
                yield AudioFrame(pcm=self.pcm[start:start + step], sample_rate=self.rate)
            self.marks.append(time.perf_counter())
            yield TurnCommitted()
            await self.done.wait()
        yield EndOfStream()

    rate = 16000


class Probe(Stage):
    """Times what reaches the end of the chain, per turn."""

    def __init__(self, done: asyncio.Event) -> None:
        super().__init__()
        self.done = done
        self.turn: dict[str, float] = {}
        self.turns: list[dict[str, float]] = []

    async def process(self, frames: Frames) -> Frames:
        async for frame in frames:
            now = time.perf_counter()
            kind = type(frame)
            if kind is Transcript and frame.role == "user":  # type: ignore[attr-defined]
                self.turn.setdefault("words", now)
            elif kind is Transcript and frame.role == "agent":  # type: ignore[attr-defined]
                self.turn.setdefault("text", now)
            elif kind is AudioFrame and frame.item_id:  # type: ignore[attr-defined]
                self.turn.setdefault("audio", now)
            elif kind is ResponseDone:
                self.turns.append(self.turn)
                self.turn = {}
                self.done.set()
            yield frame


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def cascade(script: Path, pcm: bytes, count: int) -> dict[str, list[float]]:
    """The cascade's splits, per turn, in seconds (models' time and pipeflow's apart)."""
    from pipeflow.cascade.audio import OfflineSpeech, OfflineTranscriber
    from pipeflow.cascade.llm import OfflineChat
    from pipeflow.stages.llm import ChatModel
    from pipeflow.stages.stt import SpeechToText
    from pipeflow.stages.tts import TextToSpeech

    heard, chat, voice = Timed(), Timed(), Timed()

    class Stt(SpeechToText):
        def _make_client(self) -> Any:
            client = super()._make_client()
            assert isinstance(client, OfflineTranscriber)
            client.recogniser.transcribe = heard.sync(client.recogniser.transcribe)
            return client

    class Llm(ChatModel):
        def _make_llm(self) -> Any:
            client = super()._make_llm()
            assert isinstance(client, OfflineChat)
            client.chat.complete = chat.sync(client.chat.complete)
            return client

    class Tts(TextToSpeech):
        def _make_voice(self) -> Any:
            client = super()._make_voice()
            assert isinstance(client, OfflineSpeech)
            import pipeflow.cascade.audio as audio

            audio.synthesize = voice.sync(audio.synthesize)  # the engine call it makes
            return client

    done = asyncio.Event()
    marks: list[float] = []
    probe = Probe(done)
    stages = [Turns(pcm, count + 1, done, marks), Stt(script=str(script)),
              Llm(script=str(script)), Tts(), probe]
    async for _ in Pipeline(stages).stream():
        pass
    import pipeflow.cascade.audio as audio
    from pipeflow.audio.tts import synthesize

    audio.synthesize = synthesize
    out: dict[str, list[float]] = {k: [] for k in (
        "total", "stt", "llm", "tts", "stt_model", "llm_model", "tts_model", "pipeflow")}
    for n, (mark, turn) in enumerate(zip(marks, probe.turns, strict=True)):
        if n == 0:
            continue  # warm-up: the recogniser and the voice load
        stt_model, llm_model, tts_model = heard.spent[n], chat.spent[n], voice.spent[n]
        total = turn["audio"] - mark
        out["total"].append(total)
        out["stt"].append(turn["words"] - mark)
        out["llm"].append(turn["text"] - turn["words"])
        out["tts"].append(turn["audio"] - turn["text"])
        out["stt_model"].append(stt_model)
        out["llm_model"].append(llm_model)
        out["tts_model"].append(tts_model)
        out["pipeflow"].append(total - stt_model - llm_model - tts_model)
    return out


async def realtime(script: Path, pcm24: bytes, count: int) -> dict[str, list[float]]:
    """The Realtime path: end of speech to first audio, the server's engines apart."""
    from pipeflow.realtime.server import LocalRealtimeServer
    from pipeflow.stages.realtime import RealtimeTransport

    heard, voice = Timed(), Timed()
    async with LocalRealtimeServer(script, speed=0, first_audio_delay_ms=0) as server:
        assert server.transcriber is not None and server._speaker is not None
        server.transcriber.transcribe = heard.sync(server.transcriber.transcribe)  # type: ignore[method-assign]
        server._speaker.speak = voice.sync(server._speaker.speak)  # type: ignore[method-assign]
        done = asyncio.Event()
        marks: list[float] = []
        probe = Probe(done)
        turns = Turns(pcm24, count + 1, done, marks)
        turns.rate = 24000
        stages = [turns, RealtimeTransport(url=server.url, api_key="local"), probe]
        async for _ in Pipeline(stages).stream():
            pass
    out: dict[str, list[float]] = {"total": [], "model": [], "pipeflow": []}
    per_turn = len(voice.spent) // max(1, len(marks))  # the voice speaks each sentence
    for n, (mark, turn) in enumerate(zip(marks, probe.turns, strict=True)):
        if n == 0:
            continue
        model = heard.spent[n] + voice.spent[n * per_turn]  # words, then the first sentence
        total = turn["audio"] - mark
        out["total"].append(total)
        out["model"].append(model)
        out["pipeflow"].append(total - model)
    return out


def _row(name: str, values: list[float]) -> list[str]:
    return [name, f"{statistics.median(values) * 1000:.2f}", f"{_pct(values, 0.99) * 1000:.2f}"]


async def main_async(turns: int, command: str) -> None:
    from pipeflow.audio.tts import synthesize

    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "script.yaml"
        script.write_text(SCRIPT)
        pcm16 = synthesize(QUESTION, 16000).tobytes()
        pcm24 = synthesize(QUESTION, 24000).tobytes()
        casc = await cascade(script, pcm16, turns)
        rt = await realtime(script, pcm24, turns)
    rows = [
        _row("cascade: end of speech -> first audio", casc["total"]),
        _row("  stt: words out (pipeflow + pocketsphinx)", casc["stt"]),
        _row("  llm: first text delta after the words", casc["llm"]),
        _row("  tts: first audio after the first delta", casc["tts"]),
        _row("  models: pocketsphinx", casc["stt_model"]),
        _row("  models: script engine (whole answer)", casc["llm_model"]),
        _row("  models: espeak-ng, first sentence", casc["tts_model"]),
        _row("  pipeflow's share (total - models)", casc["pipeflow"]),
        _row("realtime: end of speech -> first audio", rt["total"]),
        _row("  models: server's pocketsphinx + its voice's first call", rt["model"]),
        _row("  pipeflow's share (total - models; WebSocket, server)", rt["pipeflow"]),
    ]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    body = (
        markdown_table(["path / split", "p50 ms", "p99 ms"], rows)
        + f"\n\n{turns} turns per path after one warm-up turn (p99 of so few is about the "
        "largest). The machine is shared and loaded (other jobs running; load "
        f"average {load} at the end, on {os.cpu_count()} cores): the models' figures move "
        "with that load, and so do the thread hops in pipeflow's share. The voice's first call "
        "speaks the first sentence only, so the first audio follows it, not the whole "
        "answer. The Realtime path's share includes the local server's own work besides "
        "its engines (session, event codecs, the WebSocket both ways).\n"
    )
    print(body)
    write_section("cascade", "Cascade vs Realtime: end of speech to first audio, by stage",
                  body, command, {"cascade": casc, "realtime": rt})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 turns per path")
    parser.add_argument("--turns", type=int, default=40, help="turns per path (default 40)")
    args = parser.parse_args(argv)
    turns = 5 if args.quick else args.turns
    command = "python -m benchmarks.bench_cascade" + (" --quick" if args.quick else "")
    asyncio.run(main_async(turns, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
