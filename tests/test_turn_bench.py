"""A small version of the turn-taking benchmark: the goals hold on part of the corpus."""

from __future__ import annotations

import pytest

from benchmarks.bench_turns import run, score
from benchmarks.turn_corpus import CONDITIONS, build_cases, sentences
from pipeflow.turn_detect.options import TurnOptions
from tests.speech import need_tts


@pytest.fixture(scope="module")
def cases():  # type: ignore[no-untyped-def]
    need_tts()
    return build_cases((CONDITIONS[0], CONDITIONS[5]), small=True)


@pytest.fixture(scope="module")
def words():  # type: ignore[no-untyped-def]
    pytest.importorskip("pocketsphinx")
    from benchmarks.turn_sim import CachedTranscriber
    from pipeflow.asr.pocketsphinx import PocketsphinxTranscriber

    return CachedTranscriber(PocketsphinxTranscriber(sentences=sentences()))


def test_the_corpus_carries_its_truth(cases) -> None:  # type: ignore[no-untyped-def]
    kinds = {c.kind for c in cases}
    assert kinds == {"pause", "short", "backchannel", "noise", "cough", "barge_in"}
    for case in cases:
        assert case.samples.dtype.name == "int16" and case.samples.size > case.rate * 3
        assert all(0 < a < b for a, b in case.sounds)
        if case.kind == "pause":
            assert len(case.pauses_ms) == len(case.sounds) - 1
            assert all(200 <= p <= 800 for p in case.pauses_ms)
    assert {c.rate for c in cases} == {16000, 8000}


def test_over_the_agent_no_false_interruption_and_a_fast_stop(cases) -> None:  # type: ignore[no-untyped-def]
    over = [c for c in cases if c.over_agent]
    s = score(run(over, TurnOptions(), None))
    assert s["false_interruptions"] == 0, s
    assert s["false_turns"] == 0, s  # nothing a cough or a "mhmm" said was answered
    clean = score(run([c for c in over if c.condition.snr_db is None], TurnOptions(), None))
    assert clean["reaction_p95"] is not None and clean["reaction_p95"] < 0.15, clean
    # At 10 dB SNR the VAD hears speech late (the reaction is slower) and in fragments:
    # its voicing bridges them, so long barge-ins are caught, not missed.
    noisy = [c for c in over if c.condition.snr_db == 10 and c.kind == "barge_in"]
    long_ones = [c for c in noisy if c.end - c.onset >= 1.0]
    assert long_ones
    caught = score(run(long_ones, TurnOptions(), None))
    assert caught["missed_barge_ins"] < len(long_ones), caught
    assert caught["reaction_p95"] is not None and caught["reaction_p95"] < 0.5, caught
    plain = score(run(long_ones, TurnOptions(interrupt_voicing=0.0), None))
    assert plain["missed_barge_ins"] > caught["missed_barge_ins"], plain


def test_with_words_short_answers_are_quick_and_pauses_are_not_cut(cases, words) -> None:  # type: ignore[no-untyped-def]
    # Words come 200 ms after each pause (the decode's p95 on an idle 2-core machine is
    # under that), so a loaded test machine does not change the verdict.
    s = score(run([c for c in cases if not c.over_agent], TurnOptions(), words, decode_s=0.2))
    assert s["false_cutoffs_le_600"] == 0, s
    assert s["short_delay_p50"] is not None and s["short_delay_p50"] < 0.5, s
    assert s["missed_turn_ends"] == 0, s
