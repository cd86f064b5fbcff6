"""End of caller speech to first agent audio: the cascade beside the Realtime path.

Both paths run the same scripted turn ("how much is a pizza", answered in two
sentences) offline, over and over in one call: the cascade as ``stt`` ->
``llm`` -> ``tts`` (pocketsphinx, the script engine as a streamed chat model,
espeak-ng, all in-process), the Realtime path as the ``realtime`` stage
talking to the local Realtime server in a child process (the same
recogniser and voice inside it, no pacing, no first-audio delay). Each turn is timed from the
``TurnCommitted`` leaving the source to the first agent ``AudioFrame``
reaching the probe, split by stage for the cascade: the words (``stt``), the
first text delta (``llm first token``), the first audio (``tts``).

The models' own time is measured apart, where they run (each recogniser,
chat and voice call of the cascade; the local Realtime server, in a process
of its own, from the commit reaching it to its first audio delta sent), so
what pipeflow adds is the end-to-end figure less the models' share: its
stages, hops, threads, the engine and, for the Realtime path, its WebSocket
client and codecs. Goal:
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


class _TimedRecogniser:
    """A shared recogniser, its ``transcribe`` timed (and kept, with ``instant``) by ``timed``."""

    def __init__(self, recogniser: Any, timed: Timed) -> None:
        self.transcribe = timed.sync(recogniser.transcribe)


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
            cpu = time.thread_time()  # read first: the wall window leaves its cost out
            self.marks.append((time.perf_counter(), cpu))
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
            # The recogniser is built once per process and shared: timed through a wrapper
            # of this run's own, so one run's cached answers never leak into the next.
            client.recogniser = _TimedRecogniser(client.recogniser, heard)
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


_COMMIT = b'"input_audio_buffer.commit"'
_AUDIO_DELTAS = (b'"response.output_audio.delta"', b'"response.audio.delta"')


def serve(script: str, instant: bool) -> None:
    """The local Realtime server, in a process of its own (``--serve``): the model is
    elsewhere, as in a real call, and shares no interpreter lock with the client.

    It prints its URL, serves until its stdin closes, then prints one JSON line: for
    each turn, the server's own time from the commit reaching its session to the
    first audio delta handed to its WebSocket (``span``), and its engines' calls
    (``heard``: the recogniser, ``voice``: each speech call).
    """
    import json

    from websockets.asyncio.server import ServerConnection

    from pipeflow.realtime.server import LocalRealtimeServer
    from pipeflow.realtime.server_session import ServerSession

    heard, voice = Timed(instant), Timed()  # the server's voice keeps what it spoke anyway
    spans: list[float] = []
    at: list[tuple[float, float]] = []
    committed: list[float] = []  # the commit waiting for its first audio delta

    receive = ServerSession.receive_data
    send = ServerConnection.send

    def receive_data(self: ServerSession, data: str | bytes, now: float) -> None:
        head = data[:64] if isinstance(data, bytes) else data[:64].encode()
        if _COMMIT in head:
            committed[:] = [time.perf_counter()]
        receive(self, data, now)

    async def send_timed(self: ServerConnection, message: Any, text: bool | None = None) -> None:
        await send(self, message, text=text)
        head = message[:64] if isinstance(message, bytes) else str(message)[:64].encode()
        if committed and any(tag in head for tag in _AUDIO_DELTAS):
            now = time.perf_counter()
            at.append((committed[0], now))  # the monotonic clock is the machine's: comparable
            spans.append(now - committed.pop())

    ServerSession.receive_data = receive_data  # type: ignore[method-assign]
    ServerConnection.send = send_timed  # type: ignore[assignment,method-assign]

    async def run() -> None:
        async with LocalRealtimeServer(Path(script), speed=0, first_audio_delay_ms=0) as server:
            assert server.transcriber is not None and server._speaker is not None
            server.transcriber.transcribe = heard.sync(server.transcriber.transcribe)  # type: ignore[method-assign]
            server._speaker.speak = voice.sync(server._speaker.speak)  # type: ignore[method-assign]
            print(server.url, flush=True)
            await asyncio.to_thread(sys.stdin.read)  # until the client is done
        print(json.dumps({"span": spans, "at": at, "heard": heard.spent, "voice": voice.spent}),
              flush=True)

    asyncio.run(run())


class ServerProcess:
    """``serve`` in a child process; ``timings`` once it has stopped."""

    def __init__(self, script: Path, instant: bool) -> None:
        self.script, self.instant = script, instant
        self.url = ""
        self.timings: dict[str, list[float]] = {}
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> ServerProcess:
        args = [sys.executable, "-m", "benchmarks.bench_cascade", "--serve", str(self.script)]
        self._proc = await asyncio.create_subprocess_exec(
            *args, *(["--instant"] if self.instant else []), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent)
        assert self._proc.stdout is not None
        self.url = (await self._proc.stdout.readline()).decode().strip()
        if not self.url.startswith("ws://"):
            raise RuntimeError(f"the Realtime server did not start ({self.url!r})")
        return self

    async def __aexit__(self, *exc: object) -> None:
        import json

        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.close()
        out, _ = await self._proc.communicate()
        if self._proc.returncode != 0 or not out.strip():
            raise RuntimeError(f"the Realtime server failed (exit {self._proc.returncode})")
        self.timings = json.loads(out.decode().strip().splitlines()[-1])


async def realtime(script: Path, pcm24: bytes, count: int,
                   instant: bool = False) -> dict[str, list[float]]:
    """The Realtime path: end of speech to first audio, the server's own time apart."""
    from pipeflow.stages.realtime import RealtimeTransport

    async with ServerProcess(script, instant) as server:
        done = asyncio.Event()
        marks: list[tuple[float, float]] = []
        probe = Probe(done)
        turns = Turns(pcm24, count + 1, done, marks)
        turns.rate = 24000
        stages = [turns, RealtimeTransport(url=server.url, api_key="local"), probe]
        async for _ in Pipeline(stages).stream():
            pass
    spans, heard, voice = (server.timings[k] for k in ("span", "heard", "voice"))
    out: dict[str, list[float]] = {"total": [], "model": [], "engines": [], "pipeflow": [],
                                   "pipeflow_cpu": []}
    per_turn = len(voice) // max(1, len(marks))  # the voice speaks each sentence
    for n, ((mark, mark_cpu), turn) in enumerate(zip(marks, probe.turns, strict=True)):
        if n == 0:
            continue
        total = turn["audio"] - mark
        out["total"].append(total)
        out["model"].append(spans[n])
        out["engines"].append(heard[n] + voice[n * per_turn])  # words, then the first sentence
        out["pipeflow"].append(total - spans[n])
        # The loop's CPU: the realtime stage and its WebSocket client (the server is
        # another process, as a model elsewhere is).
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
        loads: list[float] = []
        for _ in range(ROUNDS):  # the four runs take turns, so they see the machine alike
            for name, run, pcm, instant in (("casc", cascade, pcm16, False),
                                            ("rt", realtime, pcm24, False),
                                            ("casc_i", cascade, pcm16, True),
                                            ("rt_i", realtime, pcm24, True)):
                loads.append(os.getloadavg()[0])
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
        _row("  model: the local server, commit in -> first audio delta out", rt["model"]),
        _row("    of which its pocketsphinx + its voice's first call", rt["engines"]),
        _row("  **pipeflow's share, wall** (total - model)", rt["pipeflow"]),
        _row("  (total - its engines alone: the server's own work counted in)",
             [t - e for t, e in zip(rt["total"], rt["engines"], strict=True)]),
        _row("  **pipeflow's share, loop CPU** (stage, WebSocket client)", rt["pipeflow_cpu"]),
        _row("cascade, models instant: end of speech -> first audio", casc_i["total"]),
        _row("  models (cached answers)", [a + b + c for a, b, c in zip(
            casc_i["stt_model"], casc_i["llm_model"], casc_i["tts_model"], strict=True)]),
        _row("  **pipeflow's share, wall**", casc_i["pipeflow"]),
        _row("  **pipeflow's share, loop CPU**", casc_i["pipeflow_cpu"]),
        _row("realtime, models instant: end of speech -> first audio", rt_i["total"]),
        _row("  model: the local server, commit in -> first audio delta out", rt_i["model"]),
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
            "In the loop thread's CPU time: "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in cpu.items()) + f": {cpu_verdict}.")
    if verdict != cpu_verdict:
        goal += (" So the goal is met in what pipeflow computes, not in the wall clock on "
                 "this machine at this load." if cpu_verdict == "met" else
                 " So the goal is met in the wall clock, not in the loop's CPU time.")
    load_range = f"{min(loads):.2f} to {max(loads):.2f}"
    body = (
        markdown_table(["path / split", "p50 ms", "p99 ms"], rows)
        + f"\n\n{goal}\n\n"
        "pipeflow's share is the time from the `TurnCommitted` leaving the source to the first "
        "agent `AudioFrame` reaching the probe, less the models' time, each model timed where "
        "it runs. Cascade: the recogniser's `transcribe` (stt), the chat model's completion up "
        "to its first delta (llm; the offline script engine makes the whole answer in one "
        "call, so its whole call) and the voice's first sentence (tts); what is left is "
        "pipeflow's stages, the engine, the frames between stages and the two thread hops "
        "(the recogniser and the voice run in worker threads, off the loop; each hands its "
        "result back with one `call_soon_threadsafe`). Realtime: the local Realtime server "
        "stands in for the model, so its own time is the model's: it runs in a process of its "
        "own (a model elsewhere, sharing no interpreter lock with the client) and is timed "
        "there, from the commit reaching its session to its first audio delta handed to its "
        "WebSocket (its recogniser, its voice, its session and engine, its event encoding and "
        "its side of the send); the engines' calls inside that are shown apart. What is left "
        "is the `realtime` stage, the WebSocket client (encoding and sending the commit; "
        "reading, parsing and decoding the events up to the first audio delta), the loopback "
        "both ways and the server reading the commit's frame (not timed apart, so counted "
        "against pipeflow). The local server sends a whole answer's audio at once (no "
        "pacing), so the reads that bring the first audio delta also bring up to some 200 KB "
        "of later deltas, which the client's WebSocket parses before it hands over the "
        "first: that too is counted as pipeflow's.\n\n"
        "The loop CPU rows are the event loop thread's CPU time over the same span "
        "(`time.thread_time`, read outside the wall-clock span at both ends) less the model "
        "calls that run on the loop (the offline chat model): what pipeflow computes, "
        "whatever the load. They leave out the time a thread waits for a core after a hop "
        "(the worker's wake-up, the loop's wake-up), which is what a loaded machine adds to "
        "the wall clock, and they count loop work that overlaps a model's run. The "
        "models-instant rows run the same chains with each model call answering at once from "
        "the answer it gave the first time (the same call sites, threads and frames): all "
        "that is left is pipeflow's (for the Realtime path, the server's recogniser answers "
        "at once; its voice keeps what it spoke anyway).\n\n"
        f"Each turn's audio goes in at once, then {SILENCE_S * 1000:.0f} ms of silence, then "
        "the commit (the end of a turn is detected after a silence; the turn's audio has been "
        "through the chain by then, as in a live call). "
        f"{turns} turns per path, in {ROUNDS} runs each taking turns with the others, after "
        "one warm-up turn per run (p99 of so few is about the largest). "
        f"Machine load: the 1-minute load average was {load_range} at the starts of the "
        f"{len(loads)} runs ({load_before:.2f} at the first; {load} at the end), on "
        f"{os.cpu_count()} cores shared with other work: the models' figures move with that "
        "load, and so do the wall-clock shares, whose hops wait for a core. The voice's first "
        "call speaks the first sentence only, so the first audio follows it, not the whole "
        "answer. The local server's voice keeps what it spoke, and every turn here gets the "
        "same answer, so after the warm-up turn its voice's first call is a cache lookup: "
        "that makes its model time shorter, not pipeflow's share.\n"
    )
    print(body)
    write_section("cascade", "Cascade vs Realtime: end of speech to first audio, by stage",
                  body, command, {"cascade": casc, "realtime": rt, "cascade_instant": casc_i,
                                  "realtime_instant": rt_i})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 turns per path")
    parser.add_argument("--turns", type=int, default=40, help="turns per path (default 40)")
    parser.add_argument("--serve", metavar="SCRIPT", help=argparse.SUPPRESS)
    parser.add_argument("--instant", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:  # the Realtime server's process
        serve(args.serve, args.instant)
        return 0
    turns = 5 if args.quick else args.turns
    command = "python -m benchmarks.bench_cascade" + (" --quick" if args.quick else "")
    asyncio.run(main_async(turns, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
