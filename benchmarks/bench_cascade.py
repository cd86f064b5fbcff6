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
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.report import markdown_table, write_section
from pipeflow.frames import AudioFrame, EndOfStream, ResponseDone, Transcript, TurnCommitted
from pipeflow.pipeline import Pipeline
from pipeflow.stage import Frames, Stage

GOAL_MS = 2.0
"""pipeflow's own share of end of speech to first audio, p99."""
ROUNDS = 2
"""Runs per path and mode, alternated."""

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
    """Wraps a model call and keeps the seconds spent inside each call.

    With ``instant``, the call is made once per distinct arguments and its
    result kept: later calls return it at once, through the same call site
    (the same thread hop, the same frames), so what is left of the latency
    is pipeflow's alone.
    """

    def __init__(self, instant: bool = False) -> None:
        self.spent: list[float] = []
        self.instant = instant
        self._kept: dict[Any, Any] = {}

    def sync(self, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            key = (args, tuple(sorted(kwargs.items()))) if self.instant else None
            if key in self._kept:
                self.spent.append(time.perf_counter() - started)
                return self._kept[key]
            try:
                result = fn(*args, **kwargs)
            finally:
                self.spent.append(time.perf_counter() - started)
            if self.instant:
                self._kept[key] = result
            return result
        return timed


SILENCE_S = 0.05
"""Between a turn's last audio frame and its commit: the end of a turn is detected
after a silence, so in a live call the turn's audio has gone through the chain by
then; the commit does not queue behind it here either (same for both paths)."""


class Turns(Stage):
    """Says the question, commits, waits for the answer to be done; ``count`` times."""

    def __init__(self, pcm: bytes, count: int, done: asyncio.Event,
                 marks: list[tuple[float, float]]) -> None:
        super().__init__()
        self.pcm, self.count, self.done, self.marks = pcm, count, done, marks

    async def process(self, frames: Frames) -> Frames:
        step = 640 if len(self.pcm) and self.rate == 16000 else 960
        for _ in range(self.count):
            self.done.clear()
            for start in range(0, len(self.pcm), step):
                yield AudioFrame(pcm=self.pcm[start:start + step], sample_rate=self.rate)
            await asyncio.sleep(SILENCE_S)
            self.marks.append((time.perf_counter(), time.thread_time()))
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
                if "audio" not in self.turn:
                    self.turn["audio"] = now
                    self.turn["audio_cpu"] = time.thread_time()  # the loop thread's
            elif kind is ResponseDone:
                self.turns.append(self.turn)
                self.turn = {}
                self.done.set()
            yield frame


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def cascade(script: Path, pcm: bytes, count: int,
                  instant: bool = False) -> dict[str, list[float]]:
    """The cascade's splits, per turn, in seconds (models' time and pipeflow's apart)."""
    from pipeflow.cascade.audio import OfflineSpeech, OfflineTranscriber
    from pipeflow.cascade.llm import OfflineChat
    from pipeflow.stages.llm import ChatModel
    from pipeflow.stages.stt import SpeechToText
    from pipeflow.stages.tts import TextToSpeech

    heard, chat, voice = Timed(instant), Timed(), Timed(instant)

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
    marks: list[tuple[float, float]] = []
    probe = Probe(done)
    stages = [Turns(pcm, count + 1, done, marks), Stt(script=str(script)),
              Llm(script=str(script)), Tts(), probe]
    try:
        async for _ in Pipeline(stages).stream():
            pass
    finally:
        import pipeflow.cascade.audio as audio
        from pipeflow.audio.tts import synthesize

        audio.synthesize = synthesize
    out: dict[str, list[float]] = {k: [] for k in (
        "total", "stt", "llm", "tts", "stt_model", "llm_model", "tts_model", "pipeflow",
        "pipeflow_cpu")}
    per_turn = len(voice.spent) // max(1, len(marks))  # the voice speaks each sentence
    for n, ((mark, mark_cpu), turn) in enumerate(zip(marks, probe.turns, strict=True)):
        if n == 0:
            continue  # warm-up: the recogniser and the voice load
        stt_model, llm_model = heard.spent[n], chat.spent[n]
        tts_model = voice.spent[n * per_turn]  # this turn's first sentence
        total = turn["audio"] - mark
        out["total"].append(total)
        out["stt"].append(turn["words"] - mark)
        out["llm"].append(turn["text"] - turn["words"])
        out["tts"].append(turn["audio"] - turn["text"])
        out["stt_model"].append(stt_model)
        out["llm_model"].append(llm_model)
        out["tts_model"].append(tts_model)
        out["pipeflow"].append(total - stt_model - llm_model - tts_model)
        # The loop thread's CPU time in the turn: pipeflow's work (the recogniser and the
        # voice run in worker threads; the offline chat model runs on the loop: taken off).
        out["pipeflow_cpu"].append(turn["audio_cpu"] - mark_cpu - llm_model)
    return out


class ServerThread:
    """The local Realtime server on an event loop of its own, in its own thread: the
    model is elsewhere, as in a real call, so the loop thread's CPU is the client's."""

    def __init__(self, script: Path, heard: Timed, voice: Timed) -> None:
        self.script, self.heard, self.voice = script, heard, voice
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()),
                                        name="realtime-server", daemon=True)

    async def _serve(self) -> None:
        from pipeflow.realtime.server import LocalRealtimeServer

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with LocalRealtimeServer(self.script, speed=0, first_audio_delay_ms=0) as server:
            assert server.transcriber is not None and server._speaker is not None
            server.transcriber.transcribe = self.heard.sync(server.transcriber.transcribe)  # type: ignore[method-assign]
            server._speaker.speak = self.voice.sync(server._speaker.speak)  # type: ignore[method-assign]
            self.url = server.url
            self._ready.set()
            await self._stop.wait()

    async def __aenter__(self) -> ServerThread:
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join)


async def realtime(script: Path, pcm24: bytes, count: int,
                   instant: bool = False) -> dict[str, list[float]]:
    """The Realtime path: end of speech to first audio, the server's engines apart."""
    from pipeflow.stages.realtime import RealtimeTransport

    heard, voice = Timed(instant), Timed()  # the server's voice keeps what it spoke anyway
    async with ServerThread(script, heard, voice) as server:
        done = asyncio.Event()
        marks: list[tuple[float, float]] = []
        probe = Probe(done)
        turns = Turns(pcm24, count + 1, done, marks)
        turns.rate = 24000
        stages = [turns, RealtimeTransport(url=server.url, api_key="local"), probe]
        async for _ in Pipeline(stages).stream():
            pass
    out: dict[str, list[float]] = {"total": [], "model": [], "pipeflow": [], "pipeflow_cpu": []}
    per_turn = len(voice.spent) // max(1, len(marks))  # the voice speaks each sentence
    for n, ((mark, mark_cpu), turn) in enumerate(zip(marks, probe.turns, strict=True)):
        if n == 0:
            continue
        model = heard.spent[n] + voice.spent[n * per_turn]  # words, then the first sentence
        total = turn["audio"] - mark
        out["total"].append(total)
        out["model"].append(model)
        out["pipeflow"].append(total - model)
        # The loop's CPU: the realtime stage and its WebSocket client (the server and
        # its engines run in their own thread, as elsewhere in a real call).
        out["pipeflow_cpu"].append(turn["audio_cpu"] - mark_cpu)
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
        load_before = os.getloadavg()[0]
        runs: dict[str, dict[str, list[float]]] = {}
        for _ in range(ROUNDS):  # the four runs take turns, so they see the machine alike
            for name, run, pcm, instant in (("casc", cascade, pcm16, False),
                                            ("rt", realtime, pcm24, False),
                                            ("casc_i", cascade, pcm16, True),
                                            ("rt_i", realtime, pcm24, True)):
                got = await run(script, pcm, max(1, turns // ROUNDS), instant)
                for key, values in got.items():
                    runs.setdefault(name, {}).setdefault(key, []).extend(values)
        casc, rt, casc_i, rt_i = runs["casc"], runs["rt"], runs["casc_i"], runs["rt_i"]
    rows = [
        _row("cascade: end of speech -> first audio", casc["total"]),
        _row("  stt: words out (pipeflow + pocketsphinx)", casc["stt"]),
        _row("  llm: first text delta after the words", casc["llm"]),
        _row("  tts: first audio after the first delta", casc["tts"]),
        _row("  models: pocketsphinx", casc["stt_model"]),
        _row("  models: script engine (whole answer)", casc["llm_model"]),
        _row("  models: espeak-ng, first sentence", casc["tts_model"]),
        _row("  **pipeflow's share, wall** (total - models)", casc["pipeflow"]),
        _row("  **pipeflow's share, loop CPU**", casc["pipeflow_cpu"]),
        _row("realtime: end of speech -> first audio", rt["total"]),
        _row("  models: server's pocketsphinx + its voice's first call", rt["model"]),
        _row("  **pipeflow's share, wall** (total - models; WebSocket, server)", rt["pipeflow"]),
        _row("  **pipeflow's share, loop CPU** (stage, WebSocket client)", rt["pipeflow_cpu"]),
        _row("cascade, models instant: end of speech -> first audio", casc_i["total"]),
        _row("  models (cached answers)", [a + b + c for a, b, c in zip(
            casc_i["stt_model"], casc_i["llm_model"], casc_i["tts_model"], strict=True)]),
        _row("  **pipeflow's share, wall**", casc_i["pipeflow"]),
        _row("  **pipeflow's share, loop CPU**", casc_i["pipeflow_cpu"]),
        _row("realtime, models instant: end of speech -> first audio", rt_i["total"]),
        _row("  **pipeflow's share, wall**", rt_i["pipeflow"]),
        _row("  **pipeflow's share, loop CPU**", rt_i["pipeflow_cpu"]),
    ]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    shares = {"cascade": _pct(casc["pipeflow"], 0.99) * 1000,
              "Realtime": _pct(rt["pipeflow"], 0.99) * 1000}
    cpu = {"cascade": _pct(casc["pipeflow_cpu"], 0.99) * 1000,
           "Realtime": _pct(rt["pipeflow_cpu"], 0.99) * 1000}
    verdict = "met" if max(shares.values()) < GOAL_MS else "NOT met"
    cpu_verdict = "met" if max(cpu.values()) < GOAL_MS else "NOT met"
    goal = (f"Goal: pipeflow adds under {GOAL_MS:g} ms p99 over the models' own latencies. "
            "Wall clock (the verdict): "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in shares.items()) + f": **{verdict}**. "
            "In the loop thread's CPU time (load-independent): "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in cpu.items()) + f": {cpu_verdict}.")
    body = (
        markdown_table(["path / split", "p50 ms", "p99 ms"], rows)
        + f"\n\n{goal}\n\n"
        "pipeflow's share is defined as the time from the `TurnCommitted` leaving the source "
        "to the first agent `AudioFrame` reaching the probe, less the time inside the three "
        "model calls, each timed where it runs: the recogniser's `transcribe` (stt), the chat "
        "model's completion up to its first delta (llm; the offline script engine makes the "
        "whole answer in one call, so its whole call), and the voice's first sentence (tts). "
        "What is left is pipeflow's stages, the engine, the frames between stages and the two "
        "thread hops (the recogniser and the voice run in worker threads, off the loop; each "
        "hands its result back with one `call_soon_threadsafe`). The loop CPU rows are the "
        "event loop thread's CPU time over the same span (`time.thread_time`) less the model "
        "calls that run on the loop (the offline chat model); the local Realtime server runs "
        "on a loop of its own in another thread, as a model elsewhere would, so the Realtime "
        "path's loop CPU is its stage and WebSocket client alone. The loop CPU rows leave out "
        "the time the loop waits to be scheduled again after a hop, which is what a loaded "
        "machine adds. The models-instant rows run the same chains with each "
        "model call answering at once from the answer it gave the first time (the same call "
        "sites, threads and frames): all that is left is pipeflow's.\n\n"
        f"Each turn's audio goes in at once, then {SILENCE_S * 1000:.0f} ms of silence, then "
        "the commit (the end of a turn is detected after a silence; the turn's audio has been "
        "through the chain by then, as in a live call). "
        f"{turns} turns per path, in {ROUNDS} runs each taking turns with the others, after "
        "one warm-up turn per run (p99 of so few is about the largest). "
        f"The machine is shared and loaded (load average {load_before:.2f} at the start, "
        f"{load} at the end, on {os.cpu_count()} cores): the models' figures move with that "
        "load, and so do the wall-clock shares, whose hops wait for a core. The voice's first "
        "call speaks the first sentence only, so the first audio follows it, not the whole "
        "answer. The Realtime path's share includes the local server's own work besides its "
        "engines (session, event codecs, the WebSocket both ways). Not like for like: the "
        "local Realtime server caches what its voice spoke, and every turn here gets the same "
        "answer, so after the warm-up turn its voice's first call is a cache lookup on its "
        "loop (no thread hop), while the cascade's espeak-ng speaks every turn in a worker "
        "thread.\n"
    )
    print(body)
    write_section("cascade", "Cascade vs Realtime: end of speech to first audio, by stage",
                  body, command, {"cascade": casc, "realtime": rt, "cascade_instant": casc_i,
                                  "realtime_instant": rt_i})


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
