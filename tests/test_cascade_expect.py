"""The cascade's expectation: ``llm`` says what the caller will say next, ``stt`` listens for it.

The offline script's dialogue state knows when a phone number is asked for;
the ``llm`` stage sends it upstream as ``Expecting`` after each answer, and
the ``stt`` stage transcribes the next committed turn with it, as the local
Realtime server does, so the recogniser decodes against that expectation.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pipeflow.cascade.audio import SttClient
from pipeflow.cascade.frames import Expecting
from pipeflow.frames import AudioFrame, EndOfStream, Frame, TextInput, Transcript, TurnCommitted
from pipeflow.pipeline import Pipeline
from pipeflow.stage import Frames, Stage
from pipeflow.stages.llm import ChatModel
from pipeflow.stages.stt import SpeechToText

SCRIPT = """\
states:
  start: {}
  phone: {expect: digits}
turns:
  - match: ["order"]
    repeat: true
    then: phone
    steps:
      - say: "What number can we reach you on?"
  - match: ["{phone:digits}"]
    when: phone
    then: start
    steps:
      - say: "Thank you."
"""


class _Heard:
    """A recogniser that records the expectation of each turn it is given."""

    def __init__(self) -> None:
        self.expects: list[str | None] = []

    async def transcribe(self, pcm: bytes, sample_rate: int, expect: str | None = None) -> str:
        self.expects.append(expect)
        return f"turn {len(self.expects)}"

    async def aclose(self) -> None:
        return None


class _Stt(SpeechToText):
    def __init__(self, heard: _Heard) -> None:
        super().__init__()
        self.heard = heard

    def _make_client(self) -> SttClient:
        return self.heard


class _Caller(Stage):
    """Two turns of audio; the second is committed once the expectation was told."""

    def __init__(self, told: asyncio.Event) -> None:
        super().__init__()
        self.told = told

    async def process(self, frames: Frames) -> Frames:
        turn = [AudioFrame(pcm=b"\x01\x00" * 320, sample_rate=16000), TurnCommitted()]
        for frame in turn:
            yield frame
        await asyncio.wait_for(self.told.wait(), 10)
        for frame in turn:
            yield frame
        yield EndOfStream()


class _Teller(Stage):
    """After the first turn's words, tells the stt stage a phone number comes next."""

    def __init__(self, told: asyncio.Event) -> None:
        super().__init__()
        self.told = told

    async def process(self, frames: Frames) -> Frames:
        async for frame in frames:
            if isinstance(frame, Transcript) and frame.item_id == "input_1":
                assert self.ctx.send_upstream(Expecting(expect="digits"))
                self.told.set()
            yield frame


async def test_the_stt_stage_transcribes_a_turn_with_the_expectation_it_was_told() -> None:
    told = asyncio.Event()
    heard = _Heard()
    out = [f async for f in Pipeline([_Caller(told), _Stt(heard), _Teller(told)]).stream()]
    assert heard.expects == [None, "digits"]
    words = [f.text for f in out if isinstance(f, Transcript) and f.role == "user"]
    assert words == ["turn 1", "turn 2"]
    assert not [f for f in out if isinstance(f, Expecting)]  # feedback goes no further


class _Typist(Stage):
    """Types each line once the answer to the one before told its expectation."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines
        self.told = asyncio.Event()

    async def process(self, frames: Frames) -> Frames:
        for line in self.lines:
            self.told.clear()
            yield TextInput(text=line)
            await asyncio.wait_for(self.told.wait(), 10)
        yield EndOfStream()


class _Listener(Stage):
    """Where the stt stage would be: records the expectations the llm stage tells."""

    accepts = (Expecting,)

    def __init__(self, typist: _Typist) -> None:
        super().__init__()
        self.typist = typist
        self.expects: list[str | None] = []

    async def process(self, frames: Frames) -> Frames:
        async for frame in frames:
            if isinstance(frame, Expecting):
                self.expects.append(frame.expect)
                self.typist.told.set()
                continue
            yield frame


async def test_the_llm_stage_tells_what_its_script_expects_after_each_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    script = tmp_path / "script.yaml"
    script.write_text(SCRIPT)
    typist = _Typist(["I'd like to order", "5551234567"])
    listener = _Listener(typist)
    out: list[Frame] = [f async for f in Pipeline(
        [typist, listener, ChatModel(script=str(script))]).stream()]
    answers = [f.text for f in out if isinstance(f, Transcript) and f.role == "agent" and f.final]
    assert answers == ["What number can we reach you on?", "Thank you."]
    assert listener.expects == ["digits", None]
