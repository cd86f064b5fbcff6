"""A small version of the turn-taking benchmark: every goal, on a few cases of each kind.

Two conditions (16 kHz clean, 8 kHz mu-law at 10 dB SNR), the seed's voices and
noises. Words come a fixed time after each decode is asked for, so a loaded
machine does not change the verdict; the words themselves are really decoded.
"""

from __future__ import annotations

import pytest

from benchmarks.bench_turns import BEFORE, recognisers, run, score
from benchmarks.turn_corpus import CONDITIONS, build_cases
from pipeflow.turn_detect.options import TurnOptions
from tests.speech import need_tts

DECODE_S = 0.2
"""Words arrive this long after a pause (a decode's p95 on an idle 2-core machine is under it)."""


@pytest.fixture(scope="module")
def cases():  # type: ignore[no-untyped-def]
    need_tts()
    return build_cases((CONDITIONS[0], CONDITIONS[5]), small=True)


@pytest.fixture(scope="module")
def decoders():  # type: ignore[no-untyped-def]
    pytest.importorskip("pocketsphinx")
    return recognisers()


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
    other = build_cases((CONDITIONS[0],), small=True, seed=7)
    assert [c.text for c in other] == [c.text for c in cases if c.condition == CONDITIONS[0]]
    assert any(a.samples.size != b.samples.size for a, b in zip(other, cases, strict=False))


def test_over_the_agent_commands_stop_it_fast_nothing_else_does(cases, decoders) -> None:  # type: ignore[no-untyped-def]
    over = [c for c in cases if c.over_agent]
    _, spot = decoders
    s = score(run(over, TurnOptions(), None, decode_s=DECODE_S, spotter=spot))
    assert s["false_interruptions"] == 0, s  # no backchannel, noise or cough cut it off
    assert s["false_turns"] == 0, s  # nothing a cough or a "mhmm" said was answered
    assert s["false_pauses"] == 0, s  # the background alone never paused it
    assert s["missed_barge_ins"] == 0, s  # "Stop." and "No, wait." too
    assert s["reaction_p95"] is not None and s["reaction_p95"] < 0.15, s  # at 10 dB SNR too
    before = score(run(over, BEFORE, None))  # onset on the VAD only, no command words
    assert before["missed_barge_ins"] > 0 and before["reaction_p95"] > s["reaction_p95"], before


def test_with_words_short_answers_are_quick_and_pauses_are_not_cut(cases, decoders) -> None:  # type: ignore[no-untyped-def]
    words, spot = decoders
    turns = [c for c in cases if (c.kind == "short" and c.text in ("Yes.", "Two."))
             or (c.kind == "pause" and c.text.startswith("I'd like"))]
    assert len(turns) == 6
    s = score(run(turns, TurnOptions(), words, decode_s=DECODE_S, spotter=spot))
    assert s["false_cutoffs_le_600"] == 0, s
    assert s["short_delay_p50"] is not None and s["short_delay_p50"] < 0.5, s
    assert s["missed_turn_ends"] == 0, s
