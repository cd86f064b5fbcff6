"""espeak-ng speech synthesis through espeakng-loader."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pipeflow.audio import tts
from pipeflow.errors import ConfigError
from tests.speech import need_tts


def test_synthesize_speaks_at_the_requested_rate():
    need_tts()
    fast = tts.synthesize("Two large pizzas, please.", 24000)
    assert fast.dtype == np.int16 and fast.ndim == 1
    assert 0.8 < fast.size / 24000 < 4.0
    assert np.abs(fast).max() > 3000  # audible, not silence
    low = tts.synthesize("Two large pizzas, please.", 8000)
    assert low.size == pytest.approx(fast.size / 3, rel=0.01)


def test_slower_speech_is_longer():
    need_tts()
    text = "My phone number is five five five."
    assert (
        tts.synthesize(text, 16000, words_per_minute=120).size
        > tts.synthesize(text, 16000, words_per_minute=260).size
    )


async def test_async_calls_from_threads_do_not_collide():
    need_tts()
    texts = ["one", "two three", "four five six"]
    results = await asyncio.gather(*(tts.synthesize_async(t, 16000) for t in texts))
    alone = [tts.synthesize(t, 16000) for t in texts]
    # espeak-ng varies a few samples between runs; the lock keeps calls whole.
    for together, single in zip(results, alone, strict=True):
        assert together.size == pytest.approx(single.size, rel=0.02)
        assert np.abs(together).max() > 3000


def test_bad_arguments():
    with pytest.raises(ConfigError, match="sample rate"):
        tts.synthesize("hi", 0)
    with pytest.raises(ConfigError, match="words per minute"):
        tts.synthesize("hi", words_per_minute=5)
    need_tts()
    with pytest.raises(ConfigError, match="no voice named"):
        tts.synthesize("hi", voice="no-such-voice")
