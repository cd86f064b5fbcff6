"""The call registry: lifecycle, the idle reaper on a fake clock, per-call files."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from pipeflow.build import Changes
from pipeflow.config import load_config
from pipeflow.frames import TextInput
from pipeflow.server.calls import TRANSITIONS, Call, CallError, CallRegistry
from pipeflow.server.options import TOKEN_ENV, GatewayOptions
from pipeflow.session import AgentSession
from pipeflow.stages.sinks import AudioSink
from tests.gateway_util import CALL_YAML, FAST

LIGHT = Path(__file__).parent / "data" / "gateway" / "light.yaml"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_idle_calls_are_ended_and_their_data_kept(tmp_path: Path) -> None:
    clock = FakeClock()
    registry = CallRegistry(LIGHT, GatewayOptions(output_dir=str(tmp_path), idle_timeout_s=60),
                            clock=clock)
    quiet = await registry.start("quiet")
    busy = await registry.start("busy")
    await quiet.running_session().send_text("hello")
    await quiet.running_session().wait_for(TextInput, 5, after=0)
    clock.now += 30
    assert await registry.reap() == []
    await busy.running_session().send_text("still here")  # frames keep it busy
    await busy.running_session().wait_for(TextInput, 5, after=0)
    clock.now += 61  # quiet's last frame was seen at the previous look
    assert await registry.reap() == ["quiet"]
    assert quiet.state == "ended" and quiet.end_reason == "idle"
    assert quiet.summary()["transcript"] == "user: hello"
    assert json.loads((tmp_path / "quiet" / "call.json").read_text())["end_reason"] == "idle"
    assert busy.state == "active"
    clock.now += 61
    assert await registry.reap() == ["busy"]
    assert registry.get("busy").summary()["transcript"] == "user: still here"
    await registry.close()


async def test_a_session_that_ends_by_itself_is_recorded_as_finished(tmp_path: Path) -> None:
    registry = CallRegistry(LIGHT, GatewayOptions(output_dir=str(tmp_path)))
    call = await registry.start("self-ending")
    session = call.running_session()
    await session.close()
    assert await registry.reap() == ["self-ending"]
    assert call.summary()["end_reason"] == "finished"


async def test_state_changes_follow_the_table(tmp_path: Path) -> None:
    call = Call("x", tmp_path / "x", 16000, now=0.0)
    assert call.state == "starting" and call.live
    with pytest.raises(Exception, match="cannot go from starting to ended"):
        call.move("ended")
    call.move("active")
    assert TRANSITIONS["ended"] == frozenset()
    with pytest.raises(CallError) as still:
        Call("y", tmp_path / "y", 16000, now=0.0).running_session()
    assert still.value.status == 409 and "still starting" in str(still.value)


async def test_finished_calls_beyond_the_limit_are_forgotten_but_stay_on_disk(
        tmp_path: Path) -> None:
    registry = CallRegistry(LIGHT, GatewayOptions(output_dir=str(tmp_path), keep_finished=1))
    for name in ("one", "two"):
        await registry.start(name)
        await registry.end(name)
    assert [c.id for c in registry.calls()] == ["two"]
    with pytest.raises(CallError) as gone:
        registry.get("one")
    assert gone.value.status == 404
    assert (tmp_path / "one" / "call.json").exists()


def test_file_sinks_write_into_the_call_folder(tmp_path: Path) -> None:
    # Built as the gateway builds a call, with one sink given a path outside output_dir.
    config = load_config(CALL_YAML, ["jsonl.path=/elsewhere/frames.jsonl"])
    changes = Changes(output_dir=str(tmp_path / "c1"), contain_outputs=True)
    session = AgentSession.from_config(config, changes=changes)
    stages = session.pipeline.stages
    folder = Path(session.context.output_dir)
    written = {st.name: folder / st.options.path for st in stages if st.writes}
    assert written["jsonl"] == tmp_path / "c1" / "frames.jsonl"
    assert written["wav_sink"] == tmp_path / "c1" / "agent.wav"
    assert written["transcript"] == tmp_path / "c1" / "transcript.txt"
    assert stages[0].name == "push"


def test_a_pipeline_file_error_is_reported_when_the_gateway_is_made(tmp_path: Path) -> None:
    from pipeflow.errors import ConfigError

    broken = tmp_path / "broken.yaml"
    broken.write_text("stages:\n  - type: no_such_stage\n")
    with pytest.raises(ConfigError, match="unknown stage type 'no_such_stage'"):
        CallRegistry(broken)


def test_the_token_comes_from_the_environment_and_never_shows(monkeypatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert GatewayOptions().auth_token() == "from-env"
    assert GatewayOptions(token="flag").auth_token() == "flag"
    assert "flag" not in repr(GatewayOptions(token="flag"))
    monkeypatch.delenv(TOKEN_ENV)
    assert GatewayOptions().auth_token() is None
    with pytest.raises(Exception, match="public_url"):
        GatewayOptions(public_url="calls.example.com")


async def test_a_call_has_one_playout_clock_and_its_positions_reach_the_model(
    tmp_path: Path,
) -> None:
    # The call's audio sink replaces the file's wav_sink: one clock; a cancel cuts the
    # greeting and the sink's played position truncates the model's item (feedback path).
    registry = CallRegistry(CALL_YAML, GatewayOptions(output_dir=str(tmp_path), overrides=FAST))
    call = await registry.start("playout")
    session = call.running_session()
    assert [st for st in session.pipeline.stages if isinstance(st, AudioSink)] == [call.audio_out]
    assert call.audio_out is not None
    first = await asyncio.wait_for(anext(call.audio_out.listen()), 20)  # the greeting plays
    await session.cancel_response()
    [server] = registry.models.servers
    [model_session] = server.sessions
    for _ in range(500):
        if model_session.truncated:
            break
        await asyncio.sleep(0.01)
    assert set(model_session.truncated) == {first.item_id}
    assert model_session.truncated[first.item_id] < 3000  # cut early, not played out
    await registry.close()
    assert call.state == "ended" and call.end_reason == "shutdown"
    assert (tmp_path / "playout" / "gateway_agent.wav").exists()  # recorded by the sink


async def test_calls_share_one_local_model_server_and_one_parsed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeflow.config
    from pipeflow.realtime.server import LocalRealtimeServer

    registry = CallRegistry(CALL_YAML, GatewayOptions(output_dir=str(tmp_path), overrides=FAST))
    reads: list[str] = []
    real_load = pipeflow.config.load_config
    monkeypatch.setattr(pipeflow.config, "load_config",
                        lambda *a, **k: reads.append(str(a[0])) or real_load(*a, **k))
    own_servers: list[object] = []
    monkeypatch.setattr(LocalRealtimeServer, "__aenter__",
                        lambda self: own_servers.append(self) or LocalRealtimeServer.start(self))
    await registry.open()
    [server] = registry.models.servers
    calls = [await registry.start(f"shared-{n}") for n in range(3)]
    for call in calls:
        model = next(st for st in call.running_session().pipeline.stages if st.name == "realtime")
        assert model.options.url == server.url
    assert own_servers == []  # no call started a model server of its own
    assert reads == []  # nor read the pipeline file again
    assert len(server.sessions) == 3
    ids = {s._session()["id"] for s in server.sessions}
    assert len(ids) == 3
    for call in calls[:2]:
        await registry.end(call.id)
    for _ in range(500):  # the server's side of a closed connection ends a moment later
        if len(server.sessions) == 1:
            break
        await asyncio.sleep(0.01)
    assert [s.number for s in server.sessions] == [3]  # ended calls' sessions are dropped
    await registry.close()
    assert registry.models.servers == [] and server.sessions == []
