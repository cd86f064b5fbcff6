"""Whole spoken calls to the offline order line, each order compared with the stored one.

A seeded random caller (``plan_call``) wants some products in quantities 1
to 20 (sometimes several in one sentence), a random ten-digit phone number
and a random address the recogniser's vocabulary holds. ``run_call`` runs
the real pipeline (caller -> resample -> vad -> realtime stage -> the local
server with the order-line script -> tools -> SQLite) in a fresh process,
with ``ListeningCaller`` speaking (espeak-ng) and ``Ears`` handing it what
the agent said, as a person on the phone would hear it.

The caller reacts like a person: when the agent asks again it repeats
itself, and when the agent reads back something it did not say it says so
and says it again. Those repeats are counted (``CallResult.repeats``): they
are real dialogue, but a call that needed none is the better result.

Speed: with ``speed: 0`` the call runs as fast as the machine decodes it.
The caller then sends its line and a second of silence (the VAD's end of
turn) at once, and waits for the agent's answer as events (its final words,
then a quiet moment on the wall clock) instead of pacing silence; the local
server does not pace its audio either and the sink is unpaced. The lines a
caller can say are spoken up front by an espeak-ng of their own
(``synthesize_apart``), so a line sounds the same in every run and call,
whatever the agent said before; a correction made up during the call is
spoken by one of its own too.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from pipeflow.asr.corpus import CITIES, STREETS, number_words, spoken_digits
from pipeflow.audio.pcm import frame_samples
from pipeflow.audio.wav import WavWriter
from pipeflow.frames import AudioFrame, EndOfStream, PlayoutPosition, Transcript
from pipeflow.realtime.captures import CaptureError, digits_from_words
from pipeflow.stage import Frames, Stage
from pipeflow.stages.caller import CallerOptions, CallerSource, _chunks, synthesize_apart

__all__ = ["CallPlan", "CallResult", "Ears", "ListeningCaller", "plan_call", "run_call"]

ROOT = Path(__file__).resolve().parent.parent
PRODUCTS = {"pizza": "pizzas", "salad": "salads", "ice cream": "ice creams"}
_TYPES = ("street", "road", "avenue", "lane", "drive", "way")
_HOUSES = (*range(1, 31), 42, 99, 100, 101, 120, 123, 150, 221, 250, 300, 456, 500, 742, 1200)
"""House numbers, streets and towns the order line's recogniser knows (``order_sentences``)."""
_SLOWER, _SLOWEST = 25, 125
"""Words a minute slower on each try at a line, down to the slowest."""
_ASKED_AGAIN = re.compile(r"sorry|didn't catch|did not catch|say it again|again\b|how many",
                          re.I)


class CallPlan(msgspec.Struct, kw_only=True, frozen=True):
    """What one caller wants: the order, the phone number and the address."""

    seed: int
    items: dict[str, int]
    """Product -> quantity."""
    sentences: list[list[tuple[int, str]]]
    """The order as said: each sentence a list of (quantity, product)."""
    phone: str
    house: int
    street: str
    town: str

    @property
    def address(self) -> str:
        """The address as the order line stores it ("12 Main Street, Springfield")."""
        return f"{self.house} {self.street.title()}, {self.town.title()}"


def plan_call(seed: int) -> CallPlan:
    """A random caller: 1-3 products, quantities 1-20, a phone number and an address."""
    rng = random.Random(seed)
    products = rng.sample(sorted(PRODUCTS), rng.randint(1, 3))
    items = {p: rng.randint(1, 20) for p in products}
    pairs = [(items[p], p) for p in products]
    sentences = [pairs] if len(pairs) == 1 or rng.random() < 0.5 else [pairs[:1], pairs[1:]]
    street = f"{rng.choice(STREETS)} {rng.choice(_TYPES)}"
    return CallPlan(seed=seed, items=items, sentences=sentences,
                    phone="".join(str(rng.randrange(10)) for _ in range(10)),
                    house=rng.choice(_HOUSES), street=street, town=rng.choice(CITIES))


def _amount(quantity: int, product: str) -> str:
    return f"{number_words(quantity)} {product if quantity == 1 else PRODUCTS[product]}"


def order_line(pairs: list[tuple[int, str]], first: bool) -> str:
    """ "I'd like three pizzas and one salad, please." """
    said = " and ".join(_amount(q, p) for q, p in pairs)
    return f"{'I would like' if first else 'And'} {said}, please."


def plain_order_line(pairs: list[tuple[int, str]]) -> str:
    """The order again, plainer: "Three pizzas. And one salad." """
    return " And ".join(f"{_amount(q, p).capitalize()}." for q, p in pairs)


_CORRECT = ("No, make that {}.", "I said {}.", "Make it {}, please.")


def corrections(heard: dict[str, int], wanted: dict[str, int], attempt: int = 1) -> list[str]:
    """What a caller says to put a wrong read-back right ("No, make that five pizzas."),
    put another way on each try, as a person does when not understood."""
    way = _CORRECT[(attempt - 1) % len(_CORRECT)]
    lines = [way.format(_amount(q, p)) for p, q in wanted.items() if heard.get(p) != q]
    lines += [f"Remove the {p}." for p in heard if p not in wanted]
    return lines or ["No."]


def phone_line(phone: str, style: int = 1) -> str:
    groups = (phone[:3], phone[3:6], phone[6:])
    return "My number is " + ", ".join(spoken_digits(g, style) for g in groups) + "."


def address_line(plan: CallPlan, plain: bool = False) -> str:
    """ "The address is twelve Main Street, Springfield." (plain: the house number digit
    by digit, "one two", as a caller says it again when a number was misheard)."""
    house = (spoken_digits(str(plan.house), 1) if plain and plan.house > 9
             else number_words(plan.house))
    return f"The address is {house} {plan.street.title()}, {plan.town.title()}."


# --- what the caller hears ------------------------------------------------------------------


def heard_items(text: str) -> dict[str, int]:
    """Quantities the agent read back: "2 pizzas at $10.00 each, 1 salad..." -> {pizza: 2,...}."""
    found: dict[str, int] = {}
    for quantity, name in re.findall(r"\b(\d+) (pizzas?|salads?|ice creams?)\b", text):
        product = name.rstrip("s") if not name.startswith("ice") else "ice cream"
        found[product] = int(quantity)
    return found


def heard_phone(text: str) -> str | None:
    """The phone number the agent read back ("Phone number set to five five five, ...")."""
    match = re.search(r"phone number (?:set to|is) ([a-z ,]+?)\.", text, re.I)
    if not match:
        return None
    try:
        return digits_from_words(match.group(1))
    except CaptureError:
        return None


def heard_address(text: str) -> str | None:
    match = re.search(r"address set to (.+?)\. ", text + " ", re.I)
    return match.group(1) if match else None


# --- the caller and its ears ----------------------------------------------------------------


class ListeningCallerOptions(CallerOptions, kw_only=True, forbid_unknown_fields=True):
    """A caller with a plan instead of fixed lines."""

    lines: list[Any] = msgspec.field(default_factory=list)
    seed: int = 0
    """The call's seed (``plan_call``)."""
    report: str = "caller.json"
    """Where the caller writes what it said and how often it repeated itself."""
    quiet_s: float = 0.4
    """Unpaced (``speed: 0``): wall seconds with no news from the agent after its
    words that end its answer."""


def planned_lines(plan: CallPlan) -> list[str]:
    """Every line the caller of ``plan`` may say that does not depend on what it heard."""
    lines = ["No, that's all.", "That's all.", "No.", "Yes, please place the order.",
             "Never mind. Goodbye."]
    for i, pairs in enumerate(plan.sentences):
        lines += [order_line(pairs, i == 0), plain_order_line(pairs)]
    lines += [phone_line(plan.phone), phone_line(plan.phone, 0),
              "No, my " + phone_line(plan.phone, 0)[3:]]
    lines += [address_line(plan), address_line(plan, plain=True)]
    return list(dict.fromkeys(lines))


class _HangUp(Exception):
    """The agent still got it wrong after the caller's tries."""


class ListeningCaller(CallerSource):
    """A caller that listens to the agent and answers like a person with ``plan_call(seed)``."""

    Options = ListeningCallerOptions
    observes = (PlayoutPosition, Transcript)

    def __init__(self, options: msgspec.Struct | None = None, /, **kwargs: object) -> None:
        super().__init__(options, **kwargs)
        self._agent: list[str] = []
        self._news = asyncio.Event()
        self.said: list[str] = []
        self.repeats = 0

    async def _watch(self, frames: Frames) -> None:
        async for frame in frames:
            if isinstance(frame, PlayoutPosition):
                self._played_count += 1
                self._played.set()
                self._news.set()
            elif isinstance(frame, Transcript) and frame.role == "agent" and frame.final:
                self._agent.append(frame.text)
                self._news.set()

    async def _agent_answered(self, timeout: float) -> None:
        """Unpaced: until the agent said something and then nothing for ``quiet_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            self._news.clear()
            try:
                await asyncio.wait_for(self._news.wait(),
                                       min(left, self.options.quiet_s) if self._agent else left)
            except TimeoutError:
                if self._agent:
                    return
        self.ctx.log.warning("the agent did not answer within %.0f s", timeout)

    def _replies(self) -> str:
        text, self._agent[:] = " ".join(self._agent), []
        return text

    async def process(self, frames: Frames) -> Frames:
        opts = self.options
        plan = plan_call(opts.seed)
        self.ctx.spawn(self._watch(frames), name=f"{self.ctx.name}.watch")
        size = frame_samples(opts.sample_rate, opts.frame_ms)
        frame_s = size / opts.sample_rate
        from pipeflow.audio.clock import get_clock

        clock = get_clock()
        start = clock.now()
        sent = 0
        silence = bytes(2 * size)
        writer = WavWriter(self.ctx.output_path("caller.wav"), opts.sample_rate)

        async def pace() -> None:
            if opts.speed > 0:
                await clock.sleep_until(start + sent * frame_s / opts.speed)

        def audio(pcm: bytes) -> AudioFrame:
            return AudioFrame(pcm=pcm, sample_rate=opts.sample_rate, pts=sent * frame_s)

        async def wait(first: bool = False) -> Any:
            nonlocal sent
            timeout = opts.wait_for_greeting_s if first else opts.max_wait_s
            paced = self._until_agent_done(timeout, frame_s)
            for _ in paced if opts.speed > 0 else range(round(1.0 / frame_s)):
                await pace()
                yield audio(silence)
                writer.write(silence)
                sent += 1
            if opts.speed <= 0:
                await self._agent_answered(timeout)

        base = opts.words_per_minute
        spoken = {(text, base): samples for text, samples in zip(
            planned_lines(plan), await asyncio.to_thread(
                synthesize_apart, planned_lines(plan), opts.sample_rate, opts.voice, base),
            strict=True)}

        async def say(text: str, attempt: int = 0) -> Any:
            """Say ``text``; said again (``attempt`` 1, 2...), it is said more slowly."""
            nonlocal sent
            self.said.append(text)
            self._played_count = 0
            self._played.clear()
            rate = max(base - _SLOWER * attempt, _SLOWEST)
            if (text, rate) not in spoken:  # said again, or a correction of what was heard
                spoken[text, rate] = (await asyncio.to_thread(
                    synthesize_apart, [text], opts.sample_rate, opts.voice, rate))[0]
            samples = spoken[text, rate]
            for chunk in _chunks(samples, size):
                await pace()
                yield audio(chunk)
                writer.write(chunk)
                sent += 1
            async for frame in wait():
                yield frame

        async def exchange(lines: list[str], ok: Any, fix: Any = None, tries: int = 3) -> Any:
            """Say ``lines[0]`` until the agent's reply passes ``ok``.

            Asked again, the caller says the next way of putting it (the same
            words first, then plainer ones); read back wrong, it says the
            corrections ``fix(reply)`` gives. Either way it speaks more slowly
            each time, as a person not understood does. Every extra line counts
            as a repeat.
            """
            text, attempt = lines[0], 0
            while True:
                async for frame in say(text, attempt):
                    yield frame
                reply = self._replies()
                if ok(reply):
                    return
                if attempt >= tries:
                    raise _HangUp
                attempt += 1
                self.repeats += 1
                if fix is not None and not _ASKED_AGAIN.search(reply):
                    lines_now = fix(reply, attempt)
                    for line in lines_now[:-1]:
                        async for frame in say(line, attempt):
                            yield frame
                        self._replies()
                    text = lines_now[-1]
                else:
                    text = lines[min(attempt, len(lines) - 1)]

        try:
            async for frame in wait(first=True):
                yield frame
            self._replies()
            so_far: dict[str, int] = {}
            for i, pairs in enumerate(plan.sentences):
                so_far.update((p, q) for q, p in pairs)
                wanted = dict(so_far)
                async for frame in exchange(
                        [order_line(pairs, i == 0), order_line(pairs, i == 0),
                         plain_order_line(pairs)],
                        lambda r, w=wanted: heard_items(r) == w,
                        lambda r, n, w=wanted: corrections(heard_items(r), w, n)):
                    yield frame
            async for frame in exchange(
                    ["No, that's all."], lambda r: heard_items(r) == plan.items,
                    lambda r, n: [*corrections(heard_items(r), plan.items, n), "That's all."]):
                yield frame
            async for frame in exchange(
                    [phone_line(plan.phone), phone_line(plan.phone), phone_line(plan.phone, 0)],
                    lambda r: heard_phone(r) == plan.phone,
                    lambda r, n: ["No, my " + phone_line(plan.phone, 0)[3:]]):
                yield frame
            async for frame in exchange(
                    [address_line(plan), address_line(plan), address_line(plan, plain=True)],
                    lambda r: heard_address(r) == plan.address,
                    lambda r, n: ["No.", address_line(plan, plain=n > 1)]):
                yield frame
            async for frame in exchange(["Yes, please place the order."],
                                        lambda r: "placed" in r.lower()):
                yield frame
        except _HangUp:  # a caller who is not understood gives up; nothing is confirmed
            self.said.append("(hung up)")
            async for frame in say("Never mind. Goodbye."):
                yield frame
        try:
            if opts.speed > 0:
                for _ in self._until_agent_done(opts.max_wait_s, frame_s, tail=True):
                    await pace()
                    yield audio(silence)
                    sent += 1
            else:  # the answer was awaited: a moment for its last events
                await asyncio.sleep(opts.quiet_s)
        finally:
            writer.close()
            report = {"said": self.said, "repeats": self.repeats}
            self.ctx.output_path(opts.report).write_text(json.dumps(report))
        yield EndOfStream()


class Ears(Stage):
    """Passes every frame on; hands the agent's final words back to the caller."""

    role = "transform"

    async def process(self, frames: Frames) -> Frames:
        async for frame in frames:
            if isinstance(frame, Transcript) and frame.role == "agent" and frame.final:
                self.ctx.send_upstream(frame)
            yield frame


# --- one call -------------------------------------------------------------------------------


@dataclass
class CallResult:
    """A finished call: what the caller wanted, what was stored, how it went."""

    plan: CallPlan
    stored: dict[str, Any] | None
    said: list[str] = field(default_factory=list)
    repeats: int = 0
    heard: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def right(self) -> bool:
        """The stored order is exactly the one spoken."""
        s = self.stored
        return s is not None and (s["items"], s["phone"], s["address"]) == (
            self.plan.items, self.plan.phone, self.plan.address)

    def wrong_values(self) -> list[str]:
        """Stored values the caller did not say (never allowed)."""
        s, p = self.stored, self.plan
        if s is None:
            return []
        out = [f"{k}: {s['items'][k]}" for k in s["items"] if s["items"][k] != p.items.get(k)]
        if s["phone"] != p.phone:
            out.append(f"phone: {s['phone']}")
        if s["address"] != p.address:
            out.append(f"address: {s['address']}")
        return out


_PIPELINE = """\
name: spoken-call
output_dir: {out}
agent:
  name: order-line
  instructions: The corner shop's order line.
  tools: [pipelines.orderline.tools]
  setup: pipelines.orderline.tools:setup
  summary: pipelines.orderline.tools:summary
stages:
  - type: tests.spoken_calls:ListeningCaller
    id: caller
    seed: {seed}
    speed: {speed}
  - type: resample
  - type: vad
    commit_on_silence: true
  - type: realtime
    id: model
    script: {script}
    response_on_start: true
    speed: {speed}
  - type: tests.spoken_calls:Ears
  - type: tools
  - type: transcript
    path: transcript.txt
  - type: wav_sink             # plays the agent out (unpaced) and reports playout
    path: agent.wav
    realtime: false
"""


def run_call(seed: int, out: Path, speed: float = 3.0, timeout: float = 300) -> CallResult:
    """Run the call of ``seed`` in a fresh process; what was stored and said."""
    out.mkdir(parents=True, exist_ok=True)
    for old in ("orders.sqlite3", "caller.json", "transcript.txt"):
        (out / old).unlink(missing_ok=True)
    path = out / "call.yaml"
    path.write_text(_PIPELINE.format(out=out, seed=seed, speed=speed,
                                     script=ROOT / "pipelines" / "orderline" / "script.yaml"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "OAI_API_KEY", "OAI_REALTIME_URL", "ORDERLINE_DB")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "pipeflow.cli", "run", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)
    plan = plan_call(seed)
    report = json.loads((out / "caller.json").read_text()) if (out / "caller.json").exists() \
        else {"said": [], "repeats": 0}
    transcript = (out / "transcript.txt").read_text() if (out / "transcript.txt").exists() else ""
    heard = [line.split("caller: ", 1)[1] for line in transcript.splitlines() if "caller: " in line]
    return CallResult(plan, _stored(out / "orders.sqlite3"), report["said"], report["repeats"],
                      heard, proc.stdout[-2000:] + proc.stderr[-2000:])


def _stored(db: Path) -> dict[str, Any] | None:
    if not db.exists():
        return None
    rows = sqlite3.connect(db).execute("select phone, address, lines from orders").fetchall()
    if len(rows) != 1:
        return None
    phone, address, lines = rows[0]
    items = {line["name"]: int(line["quantity"]) for line in json.loads(lines)}
    return {"items": items, "phone": phone, "address": address}
