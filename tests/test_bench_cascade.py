"""The cascade benchmark's accounting: what it calls the models' time is theirs.

Speed is not asserted (the machines are shared); what is tested is that each
run times its own models, and that the Realtime path's model time is the
server's own span, taken in its process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import bench_cascade
from pipeflow.audio.tts import synthesize


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "script.yaml"
    path.write_text(bench_cascade.SCRIPT)
    return path


async def test_a_models_instant_run_leaves_the_next_run_s_recogniser_real(script: Path) -> None:
    """The recogniser is shared by the process: an instant run's kept answers must not
    answer the next run's turns (they did, and half the cascade turns had a 0 ms model)."""
    pcm = synthesize(bench_cascade.QUESTION, 16000).tobytes()
    instant = await bench_cascade.cascade(script, pcm, 1, instant=True)
    real = await bench_cascade.cascade(script, pcm, 1, instant=False)
    assert instant["stt_model"][0] < 0.002  # kept from the warm-up turn
    assert real["stt_model"][0] > 0.02  # pocketsphinx decoded it again
    for got in (instant, real):
        parts = got["stt_model"][0] + got["llm_model"][0] + got["tts_model"][0]
        assert got["pipeflow"][0] == pytest.approx(got["total"][0] - parts)


async def test_the_realtime_model_time_is_the_server_s_span_in_its_own_process(
        script: Path) -> None:
    pcm = synthesize(bench_cascade.QUESTION, 24000).tobytes()
    got = await bench_cascade.realtime(script, pcm, 2)
    assert len(got["total"]) == len(got["model"]) == 2
    for total, model, engines, share in zip(got["total"], got["model"], got["engines"],
                                            got["pipeflow"], strict=True):
        assert 0 < engines <= model < total  # its recogniser and voice run inside its span
        assert share == pytest.approx(total - model)
