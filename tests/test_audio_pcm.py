"""PCM helpers: validation messages, mix-down and gain."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeflow.audio import pcm
from pipeflow.errors import ConfigError


@pytest.mark.parametrize("rate", [0, -8000, 8000.5, "16k", True, 10_000_000])
def test_bad_rates_are_config_errors_naming_the_place(rate):
    with pytest.raises(ConfigError, match="frame 7: the sample rate"):
        pcm.check_rate(rate, "frame 7")


def test_good_rate_passes():
    assert pcm.check_rate(np.int64(24000)) == 24000


def test_odd_length_pcm_names_the_frame():
    with pytest.raises(ConfigError, match=r"audio frame at 1\.5 s: .*got 3 bytes"):
        pcm.check_pcm(b"abc", 1, "audio frame at 1.5 s")
    with pytest.raises(ConfigError, match="multiple of 4 bytes"):
        pcm.check_pcm(b"ab" * 3, 2)


def test_view_is_int16_and_rejects_odd_lengths():
    assert pcm.view(b"\x01\x00\xff\xff").tolist() == [1, -1]
    with pytest.raises(ConfigError, match="even number of bytes"):
        pcm.view(b"\x01")


def test_frame_samples():
    assert pcm.frame_samples(16000, 20) == 320
    assert pcm.frame_samples(22050, 20) == 441
    with pytest.raises(ConfigError, match="frame_ms"):
        pcm.frame_samples(16000, 0)


def test_mix_down_averages_channels():
    stereo = np.array([100, 300, -32768, -32768, 32767, -32767], dtype=np.int16)
    assert pcm.mix_down(stereo, 2).tolist() == [200, -32768, 0]


@pytest.mark.parametrize(
    ("size", "channels", "message"),
    [(4, 0, "the channel count must be at least 1, got 0"), (5, 2, "5 samples do not divide")],
)
def test_mix_down_bad_channels_name_where(size, channels, message):
    with pytest.raises(ConfigError, match=f"frame 7: {message}"):
        pcm.mix_down(np.zeros(size, np.int16), channels, "frame 7")


@given(st.lists(st.integers(-32768, 32767), max_size=200), st.floats(-40, 40))
def test_gain_clips_and_scales(samples, db):
    x = np.array(samples, dtype=np.int16)
    y = pcm.gain_db(x, db)
    assert y.dtype == np.int16
    expected = np.clip(np.rint(x.astype(np.float64) * 10 ** (db / 20)), -32768, 32767)
    assert np.all(np.abs(y - expected) <= 1 + np.abs(expected) * 1e-6)


def test_float_round_trip():
    x = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    assert pcm.from_float(pcm.to_float(x)).tolist() == x.tolist()
    assert pcm.from_float(np.array([2.0, -2.0])).tolist() == [32767, -32768]
