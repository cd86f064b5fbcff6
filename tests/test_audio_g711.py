"""G.711 codecs: bit-exact against the stdlib reference, bounded round-trip error."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeflow.audio import g711
from pipeflow.errors import ConfigError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # removed in Python 3.13
        audioop = None

ALL_PCM = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))
needs_audioop = pytest.mark.skipif(audioop is None, reason="stdlib audioop (the reference) is gone")


@needs_audioop
def test_ulaw_is_bit_exact_with_the_stdlib_for_every_sample_and_code():
    assert g711.ulaw_encode(ALL_PCM) == audioop.lin2ulaw(ALL_PCM, 2)
    assert g711.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


@needs_audioop
def test_alaw_is_bit_exact_with_the_stdlib_for_every_sample_and_code():
    assert g711.alaw_encode(ALL_PCM) == audioop.lin2alaw(ALL_PCM, 2)
    assert g711.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_known_code_points():
    # ITU-T G.711: mu-law 0xFF and A-law 0xD5 are the codes for zero.
    assert g711.ulaw_encode(b"\0\0") == b"\xff"
    assert g711.alaw_encode(b"\0\0") == b"\xd5"
    assert np.frombuffer(g711.ulaw_decode(b"\x00\x80"), "<i2").tolist() == [-32124, 32124]


@pytest.mark.parametrize(
    ("encode", "decode"),
    [(g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)],
)
@given(samples=st.lists(st.integers(-32768, 32767), max_size=400))
def test_round_trip_error_is_within_the_logarithmic_step(encode, decode, samples):
    x = np.array(samples, dtype="<i2")
    coded = encode(x.tobytes())
    assert len(coded) == x.size
    y = np.frombuffer(decode(coded), "<i2").astype(np.int64)
    error = np.abs(y - x.astype(np.int64))
    assert np.all(error <= np.abs(x.astype(np.int64)) / 32 + 8)


@given(codes=st.binary(max_size=300))
def test_decode_then_encode_is_the_identity_on_codes(codes):
    assert g711.alaw_encode(g711.alaw_decode(codes)) == codes
    # mu-law has two codes for zero (0x7F and 0xFF); both decode to 0 and encode to 0xFF.
    again = g711.ulaw_encode(g711.ulaw_decode(codes))
    assert again == codes.replace(b"\x7f", b"\xff")


def test_odd_length_pcm_is_a_clear_error():
    with pytest.raises(ConfigError, match="even number of bytes"):
        g711.ulaw_encode(b"\x01\x02\x03")
