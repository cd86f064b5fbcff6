"""The Agent: component slots, and callbacks declared in a pipeline file's agent section."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pipeflow.agent import Agent
from pipeflow.config import load_config
from pipeflow.errors import ConfigError
from pipeflow.events import Event
from pipeflow.pipeline import Pipeline
from pipeflow.session import AgentSession

DEMO = str(Path(__file__).resolve().parent.parent / "pipelines" / "scripts" / "demo.yaml")

seen: list[tuple[str, str]] = []


def note(event: Event) -> None:
    """Referenced from the YAML below as ``tests.test_agent:note``."""
    seen.append((event.name, getattr(event.frame, "text", "")))


async def note_async(event: Event) -> None:
    """An async callback referenced from YAML."""
    seen.append((f"async {event.name}", event.session_id))


def explode(event: Event) -> None:
    """A callback with a bug: it must be logged and must not stop the run."""
    raise RuntimeError("callback bug")


# --- component slots -----------------------------------------------------------


def test_llm_and_tts_slots_give_the_transports_model_and_voice() -> None:
    named = Agent(llm="gpt-realtime-mini", tts="marin")
    assert (named.model, named.voice) == ("gpt-realtime-mini", "marin")
    agent = Agent(llm={"model": "gpt-realtime", "temperature": 0.6}, tts={"voice": "cedar"})
    assert (agent.model, agent.voice) == ("gpt-realtime", "cedar")
    # the explicit settings win over the slots
    both = Agent(model="m1", voice="v1", llm="gpt-realtime-mini", tts="cedar")
    assert (both.model, both.voice) == ("m1", "v1")
    assert (Agent().model, Agent().voice) == (None, None)


async def test_the_local_server_gets_the_slots_model_and_voice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OPENAI_API_KEY", "OAI_API_KEY", "OAI_REALTIME_URL"):
        monkeypatch.delenv(name, raising=False)
    agent = Agent("Be brief.", llm={"model": "gpt-realtime-mini"}, tts="cedar")
    async with AgentSession(agent, transport={"script": DEMO, "speed": 0}) as session:
        await session.send_text("What is two plus three?")
        await session.wait_for("response_done", 20, after=0)
        [server_session] = session.pipeline.stages[3].server.sessions
        config = server_session.config
    assert (config.model, config.voice) == ("gpt-realtime-mini", "cedar")


def test_vad_slot_configures_the_default_session_pipeline() -> None:
    session = AgentSession(Agent(vad={"engine": "energy", "min_silence_ms": 300}))
    vad = next(st for st in session.pipeline.stages if st.name == "vad")
    assert vad.options.min_silence_ms == 300 and vad.options.commit_on_silence
    named = AgentSession(Agent(vad="webrtc"))
    assert next(st for st in named.pipeline.stages if st.name == "vad").options.engine == "webrtc"
    assert Agent(vad="silero").vad_options() == {"engine": "silero"}
    assert Agent().vad_options() == {}


@pytest.mark.parametrize(
    ("slots", "message"),
    [
        ({"llm": 3}, "agent.llm must be a name or a mapping"),
        ({"tts": {"voice": 1}}, "agent.tts.voice must be a string"),
        ({"stt": ["whisper"]}, "agent.stt must be a name or a mapping"),
        ({"vad": 2}, "agent.vad must be a name or a mapping"),
    ],
)
def test_bad_slots_are_config_errors(slots: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Agent(**slots)  # type: ignore[arg-type]


def test_slots_come_from_the_yaml_agent_section(tmp_path: Path) -> None:
    path = tmp_path / "slots.yaml"
    path.write_text(
        "agent:\n  llm: {model: gpt-realtime}\n  tts: alloy\n  vad: webrtc\n"
        "stages:\n  - type: callbacks\n"
    )
    agent = Agent.from_file(path)
    assert (agent.model, agent.voice, agent.vad_options()) == (
        "gpt-realtime", "alloy", {"engine": "webrtc"})


# --- callbacks from YAML ----------------------------------------------------------


def _recording(path: Path) -> None:
    frames = [
        {"type": "session_started", "session_id": "rec"},
        {"type": "text_input", "text": "one pizza"},
        {"type": "text_input", "text": "and a salad"},
    ]
    path.write_text("".join(json.dumps({"t": 0.0, "frame": f}) + "\n" for f in frames))


async def test_yaml_agent_callbacks_run_and_a_raising_one_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _recording(tmp_path / "frames.jsonl")
    path = tmp_path / "cb.yaml"
    path.write_text(
        "agent:\n"
        "  callbacks:\n"
        "    text_received: [tests.test_agent:explode, tests.test_agent:note]\n"
        "    session_closed: tests.test_agent:note_async\n"
        "stages:\n"
        f"  - type: replay\n    path: {tmp_path / 'frames.jsonl'}\n    speed: 0\n"
        "  - type: callbacks\n"
    )
    seen.clear()
    config = load_config(path)
    with caplog.at_level(logging.ERROR, logger="pipeflow.events"):
        result = await Pipeline.from_config(config, session_id="call-7").run()
    assert result.ok, result.errors
    # both lines got through although the first callback raised each time
    assert seen == [
        ("text_received", "one pizza"),
        ("text_received", "and a salad"),
        ("async session_closed", "call-7"),
    ]
    failures = [r for r in caplog.records if "raised" in r.getMessage()]
    assert len(failures) == 2
    assert all("explode" in r.getMessage() and "'text_received'" in r.getMessage()
               for r in failures)


def test_a_yaml_callback_that_does_not_import_names_the_event(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "agent:\n  callbacks:\n    tool_called: tests.test_agent:nothing_here\n"
        "stages:\n  - type: callbacks\n"
    )
    with pytest.raises(ConfigError, match="tool_called"):
        Agent.from_file(path)


# --- docs/tools.md: the agent with two tools, in Python and in YAML -----------------


def _docs_block(lang: str) -> str:
    import re

    text = (Path(__file__).resolve().parent.parent / "docs" / "tools.md").read_text()
    start = text.index("## An agent with two tools")
    match = re.compile(rf"```{lang}\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no {lang} block in docs/tools.md"
    return match.group(1)


def test_docs_agent_in_python_and_in_yaml_are_the_same_agent(tmp_path: Path) -> None:
    import shutil

    namespace: dict[str, object] = {}
    exec(_docs_block("python"), namespace)
    in_python = namespace["agent"]
    assert isinstance(in_python, Agent)
    root = Path(__file__).resolve().parent.parent
    shutil.copy(root / "pipeflow" / "examples" / "weather.py", tmp_path / "example_tools.py")
    path = tmp_path / "weather.yaml"
    path.write_text(_docs_block("yaml"))
    in_yaml = Agent.from_file(path)
    assert in_yaml.instructions == in_python.instructions
    assert in_yaml.tools.names() == in_python.tools.names() == ["get_weather", "add_numbers"]
    # the same names and parameters (descriptions may differ: the YAML uses example_tools)
    for a, b in zip(in_yaml.tool_schemas(), in_python.tool_schemas(), strict=True):
        assert a["name"] == b["name"]
        assert set(a["parameters"]["properties"]) == set(b["parameters"]["properties"])


async def test_stt_slot_gives_the_transcription_model(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OAI_API_KEY", "OAI_REALTIME_URL"):
        monkeypatch.delenv(name, raising=False)
    assert Agent(stt="gpt-4o-transcribe").transcription_model == "gpt-4o-transcribe"
    agent = Agent("Be brief.", stt={"model": "whisper-1"})
    for transport, expected in (({}, "whisper-1"),
                                ({"transcription_model": "gpt-4o-mini-transcribe"},
                                 "gpt-4o-mini-transcribe")):
        options = {"script": DEMO, "speed": 0, **transport}
        async with AgentSession(agent, transport=options) as session:
            await session.send_text("What is two plus three?")
            await session.wait_for("response_done", 20, after=0)
            [server_session] = session.pipeline.stages[3].server.sessions
            assert server_session.config.transcription == {"model": expected}
