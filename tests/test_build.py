"""One builder: changes applied to a copy of the parsed file, the file's folder lent to
``sys.path`` only while it is needed, the agent's userdata and setup hook for every caller."""

from __future__ import annotations

import asyncio
import copy
import sys
from pathlib import Path

import pytest

from pipeflow.build import Changes, build
from pipeflow.config import load_config, parse_config
from pipeflow.frames import TextInput
from pipeflow.pipeline import Pipeline
from pipeflow.realtime.options import RealtimeOptions
from pipeflow.registry import importable, registry
from pipeflow.session import AgentSession
from pipeflow.stage import Stage
from pipeflow.stages.sinks import NullSink

CALL_YAML = Path(__file__).resolve().parent.parent / "pipelines" / "call.yaml"

LOCAL_STAGE = '''
import importlib
from pipeflow import Frames, stage
from pipeflow.frames import TextInput

@stage()
async def late(frames: Frames) -> Frames:
    helper = importlib.import_module("late_helper")  # imported only once the run is under way
    yield TextInput(text=helper.WORD)
    async for frame in frames:
        yield frame
'''

SETUP_HOOKS = '''
calls = []

def setup(userdata, output_dir):
    calls.append(output_dir)
    userdata["prepared"] = f"ready in {output_dir}"

def summary(userdata):
    return {"prepared": userdata["prepared"]}
'''


def _local_pipeline(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / f"{name}_stage.py").write_text(LOCAL_STAGE)
    (folder / "late_helper.py").write_text("WORD = 'from beside the file'\n")
    path = folder / "pipeline.yaml"
    path.write_text(f"name: local\noutput_dir: {tmp_path / 'out'}\n"
                    f"stages:\n  - type: {name}_stage:late\n  - type: passthrough\n")
    return path


async def test_the_files_folder_is_importable_while_built_and_run_and_never_after(
    tmp_path: Path,
) -> None:
    path = _local_pipeline(tmp_path, "lentfolder")
    before = list(sys.path)
    config = load_config(path)
    assert sys.path == before  # parsed (the stage type imported) and given back
    pipeline = Pipeline.from_config(config)
    assert sys.path == before
    seen: list[object] = []
    result = await pipeline.run(on_frame=seen.append)
    assert result.ok, result.errors
    assert TextInput(text="from beside the file") in seen  # a late import during the run
    assert sys.path == before
    sys.modules.pop("late_helper", None)
    with pytest.raises(ImportError):
        __import__("late_helper")


async def test_concurrent_runs_of_one_file_share_one_sys_path_entry(tmp_path: Path) -> None:
    folder = str(tmp_path)
    before = list(sys.path)
    entered = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        with importable(folder):
            entered.set()
            await release.wait()

    first = asyncio.create_task(hold())
    await entered.wait()
    with importable(folder):
        assert sys.path.count(folder) == 1
    assert folder in sys.path  # the first run still needs it
    release.set()
    await first
    assert sys.path == before


def test_a_folder_already_on_sys_path_is_left_alone(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    with importable(str(tmp_path)):
        pass
    assert sys.path[0] == str(tmp_path)


def test_the_callers_config_is_never_changed(tmp_path: Path) -> None:
    config = load_config(CALL_YAML, ["jsonl.path=/elsewhere/frames.jsonl"])
    kept = copy.deepcopy(config)
    options = [spec.options for spec in config.stages]
    changes = Changes(
        output_dir=str(tmp_path / "call"),
        push_source=True,
        sinks=[NullSink(realtime=False)],
        contain_outputs=True,
        model_url=lambda o: "ws://127.0.0.1:9/v1/realtime" if isinstance(o, RealtimeOptions)
        else None,
    )
    built = build(config, changes)
    assert config == kept
    assert [spec.options for spec in config.stages] == options
    assert all(a is b for a, b in zip(options, (s.options for s in config.stages), strict=True))
    # ...while what was built has every change.
    assert [st.name for st in built.stages] == [
        "push", "resample", "vad", "end_of_turn", "realtime", "tools", "callbacks", "null"]
    model = next(st for st in built.stages if st.name == "realtime")
    assert model.options.url == "ws://127.0.0.1:9/v1/realtime"
    assert built.context.output_dir == str(tmp_path / "call")
    assert built.config.output_dir == str(tmp_path / "call")


def test_contained_outputs_stay_inside_the_output_folder(tmp_path: Path) -> None:
    text = ("stages:\n  - type: tone\n"
            "  - type: jsonl\n    path: /elsewhere/frames.jsonl\n"
            "  - type: wav_sink\n    path: calls/agent.wav\n"
            "  - type: transcript\n    path: ../up/transcript.txt\n")
    config = parse_config(text)
    built = build(config, Changes(output_dir=str(tmp_path), contain_outputs=True))
    paths = {st.name: st.options.path for st in built.stages if st.writes}
    assert paths == {"jsonl": "frames.jsonl", "wav_sink": "calls/agent.wav",
                     "transcript": "transcript.txt"}
    assert [spec.options.path for spec in config.stages[1:]] == [
        "/elsewhere/frames.jsonl", "calls/agent.wav", "../up/transcript.txt"]


def _hooked_pipeline(tmp_path: Path, module: str) -> Path:
    (tmp_path / f"{module}.py").write_text(SETUP_HOOKS)
    path = tmp_path / "hooked.yaml"
    path.write_text(
        "name: hooked\n"
        f"output_dir: {tmp_path / 'out'}\n"
        "agent:\n"
        "  userdata: {order: [], db: none}\n"
        f"  setup: {module}:setup\n"
        f"  summary: {module}:summary\n"
        "stages:\n  - type: silence\n    duration_ms: 20\n    speed: 0\n"
    )
    return path


def test_pipeline_from_file_gets_the_agents_userdata_and_runs_its_setup(tmp_path: Path) -> None:
    path = _hooked_pipeline(tmp_path, "hooks_for_from_file")
    pipeline = Pipeline.from_file(path)
    hooks = sys.modules["hooks_for_from_file"]
    out = str(tmp_path / "out")
    assert hooks.calls == [out]  # once, with the output folder, which exists
    assert Path(out).is_dir()
    assert pipeline.context.userdata == {"order": [], "db": "none",
                                         "prepared": f"ready in {out}"}
    assert pipeline.context.agent is not None
    # Each build gets a fresh copy of the file's userdata.
    again = Pipeline.from_file(path)
    again.context.userdata["order"].append("pizza")
    assert pipeline.context.userdata["order"] == []
    assert again.context.agent is not None and again.context.agent.userdata["order"] == []


def test_every_caller_builds_the_same_context(tmp_path: Path) -> None:
    path = _hooked_pipeline(tmp_path, "hooks_for_every_caller")
    from_file = Pipeline.from_file(path).context
    session = AgentSession.from_file(path).context
    built = build(load_config(path)).context
    for context in (session, built):
        assert context.userdata == from_file.userdata
        assert context.output_dir == from_file.output_dir


class _Recorder(Stage):
    """A user sink that says so; the builder drops it for a caller's sinks."""

    role = "sink"


class MySinkLookalike(Stage):
    """A name with 'Sink' in it is no longer taken for a sink."""


def test_sinks_are_known_by_their_declared_role_not_their_name(tmp_path: Path) -> None:
    config = parse_config(
        "stages:\n  - type: tone\n"
        "  - type: tests.test_build:MySinkLookalike\n"
        "  - type: tests.test_build:_Recorder\n"
    )
    sink = NullSink(realtime=False)
    built = build(config, Changes(sinks=[sink], output_dir=str(tmp_path)))
    assert [type(st).__name__ for st in built.stages] == ["ToneSource", "MySinkLookalike",
                                                          "NullSink"]
    assert built.stages[-1] is sink


def test_the_push_source_takes_the_place_and_rate_of_a_source_only(tmp_path: Path) -> None:
    config = parse_config("stages:\n  - type: tone\n    sample_rate: 8000\n  - type: passthrough\n")
    built = build(config, Changes(push_source=True, output_dir=str(tmp_path)))
    assert [st.name for st in built.stages] == ["push", "passthrough"]
    assert built.stages[0].options.sample_rate == 8000
    config = parse_config("stages:\n  - type: passthrough\n")
    built = build(config, Changes(push_source=True, output_dir=str(tmp_path)))
    assert [st.name for st in built.stages] == ["push", "passthrough"]


def test_a_callers_own_source_takes_the_place_of_the_files(tmp_path: Path) -> None:
    own = registry.resolve("push")(sample_rate=8000)
    config = parse_config("stages:\n  - type: tone\n  - type: passthrough\n")
    built = build(config, Changes(source=own, push_source=True, output_dir=str(tmp_path)))
    assert built.stages[0] is own and [st.name for st in built.stages] == ["push", "passthrough"]
    config = parse_config("stages:\n  - type: passthrough\n")
    built = build(config, Changes(source=own, output_dir=str(tmp_path)))
    assert built.stages[0] is own and [st.name for st in built.stages] == ["push", "passthrough"]


def test_a_role_is_one_of_three() -> None:
    with pytest.raises(TypeError, match="role must be one of source, transform, sink"):
        type("Odd", (Stage,), {"role": "drain"})


def test_built_in_roles() -> None:
    roles = {name: cls.role for name, cls in registry.all().items()}
    assert {n for n, r in roles.items() if r == "source"} == {
        "caller", "microphone", "push", "replay", "silence", "stdin", "tone", "wav"}
    assert {n for n, r in roles.items() if r == "sink"} == {
        "jsonl", "null", "speaker", "transcript", "wav_sink"}


def test_sessions_built_from_one_parsed_file_leave_it_as_it_was(tmp_path: Path) -> None:
    config = load_config(CALL_YAML)
    kept = copy.deepcopy(config)
    first = AgentSession.from_config(config, output_dir=str(tmp_path / "a"),
                                     replace_sinks=[NullSink(realtime=False)])
    second = AgentSession.from_config(config, output_dir=str(tmp_path / "b"))
    assert config == kept
    assert first.context.output_dir != second.context.output_dir
    assert first.pipeline.stages[-1].name == "null"
    assert second.pipeline.stages[-1].name == "wav_sink"


seen_jobs: list[tuple[str, str]] = []


class JobReader(Stage):
    """Notes the job its pipeline runs for, read from the typed context."""

    async def process(self, frames):  # type: ignore[no-untyped-def]
        job = self.ctx.pipeline.job
        assert job is not None
        seen_jobs.append((job.job_id, self.ctx.pipeline.output_dir))
        async for frame in frames:
            yield frame


async def test_a_job_builds_through_the_builder_and_its_stages_see_the_job(
    tmp_path: Path,
) -> None:
    from pipeflow.job import JobContext

    path = tmp_path / "job.yaml"
    path.write_text(f"output_dir: {tmp_path / 'out'}\nstages:\n"
                    "  - type: silence\n    duration_ms: 20\n    speed: 0\n"
                    "  - type: tests.test_build:JobReader\n")
    seen_jobs.clear()
    result = await JobContext("job-7").run_pipeline(path)
    assert result.ok, result.errors
    assert seen_jobs == [("job-7", str(tmp_path / "out" / "job-7"))]


def test_one_playout_sink_takes_the_place_of_the_files_playout_sinks(tmp_path: Path) -> None:
    from pipeflow.build import playout_realtime

    config = parse_config(
        "stages:\n  - type: tone\n  - type: 'null'\n    realtime: false\n"
        "  - type: passthrough\n  - type: wav_sink\n    path: a.wav\n"
        "  - type: tests.test_build:_Recorder\n"
    )
    own = NullSink(realtime=False)
    built = build(config, Changes(audio_sink=own, output_dir=str(tmp_path)))
    assert [st.name for st in built.stages][:3] == ["tone", "null", "passthrough"]
    assert len(built.stages) == 4
    assert built.stages[1] is own  # where the first playout sink was, the others gone
    assert [spec.type for spec in built.config.stages] == [
        "tone", "passthrough", "tests.test_build:_Recorder"]
    assert len(config.stages) == 5  # the parsed file is left as it was
    assert playout_realtime(config) is False
    # With no playout sink in the file, the caller's goes last.
    bare = parse_config("stages:\n  - type: tone\n  - type: passthrough\n")
    built = build(bare, Changes(audio_sink=own, output_dir=str(tmp_path)))
    assert built.stages[-1] is own and playout_realtime(bare) is True


async def test_a_gateway_call_is_built_with_its_edge_and_never_rewired(tmp_path: Path) -> None:
    from pipeflow.server.calls import CallRegistry
    from pipeflow.server.edges import CallAudioOut
    from pipeflow.server.options import GatewayOptions
    from pipeflow.stages.sinks import AudioSink
    from tests.gateway_util import CALL_YAML, FAST

    calls = CallRegistry(CALL_YAML, GatewayOptions(output_dir=str(tmp_path), overrides=FAST))
    try:
        call = await calls.start("built-1")
        stages = call.session.pipeline.stages  # type: ignore[union-attr]
        playout = [st for st in stages if isinstance(st, AudioSink)]
        assert len(playout) == 1 and isinstance(playout[0], CallAudioOut)
        assert playout[0] is call.audio_out
        assert stages[0].name == "push" and stages[0] is call.session._push  # type: ignore[union-attr]
    finally:
        await calls.close()
