"""G.711 mu-law and A-law codecs (ITU-T G.711), vectorised with numpy.

Both directions are table lookups: the decode tables have 256 entries and
the encode tables one entry per int16 value (64 KiB each), built once at
import with vectorised code that follows the reference algorithm (Sun's
g711.c, the one CPython's ``audioop`` used), so the output is bit-exact
with it. Telephone gateways (Twilio, SIP) carry 8 kHz G.711.
"""

from __future__ import annotations

import numpy as np

from pipeflow.audio.pcm import view

__all__ = [
    "alaw_decode",
    "alaw_encode",
    "alaw_to_samples",
    "samples_to_alaw",
    "samples_to_ulaw",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_to_samples",
]

_BIAS = 0x84
_CLIP = 8159  # the largest 14-bit magnitude mu-law can carry


def _segment(magnitude: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Index of the first segment end >= magnitude (8 when beyond the last)."""
    return np.searchsorted(ends, magnitude, side="left")


def _build_ulaw_encode() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2  # 14-bit input
    negative = pcm < 0
    mask = np.where(negative, 0x7F, 0xFF)
    magnitude = np.minimum(np.where(negative, -pcm, pcm), _CLIP) + (_BIAS >> 2)
    ends = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    seg = _segment(magnitude, ends)
    code = (np.minimum(seg, 7) << 4) | ((magnitude >> (np.minimum(seg, 7) + 1)) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _build_ulaw_decode() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _BIAS - t, t - _BIAS).astype("<i2")


def _build_alaw_encode() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3  # 13-bit input
    negative = pcm < 0
    mask = np.where(negative, 0x55, 0xD5)
    magnitude = np.where(negative, -pcm - 1, pcm)
    ends = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    seg = _segment(magnitude, ends)
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    code = (np.minimum(seg, 7) << 4) | ((magnitude >> shift) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _build_alaw_decode() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype("<i2")


def _by_bit_pattern(table: np.ndarray) -> np.ndarray:
    """Reorder a table indexed by value + 32768 to be indexed by the uint16 bit pattern."""
    return np.roll(table, -32768)


_ULAW_ENCODE = _by_bit_pattern(_build_ulaw_encode())
_ULAW_DECODE = _build_ulaw_decode()
_ALAW_ENCODE = _by_bit_pattern(_build_alaw_encode())
_ALAW_DECODE = _build_alaw_decode()


def _encode(pcm16: bytes, table: np.ndarray) -> bytes:
    return table[view(pcm16, "G.711 encoder input").view(np.uint16)].tobytes()


def ulaw_encode(pcm16: bytes) -> bytes:
    """Encode PCM16 little-endian bytes as mu-law, one byte per sample.

    Raises:
        ConfigError: an odd number of bytes.
    """
    return _encode(pcm16, _ULAW_ENCODE)


def ulaw_decode(data: bytes) -> bytes:
    """Decode mu-law bytes to PCM16 little-endian bytes."""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()


def alaw_encode(pcm16: bytes) -> bytes:
    """Encode PCM16 little-endian bytes as A-law, one byte per sample.

    Raises:
        ConfigError: an odd number of bytes.
    """
    return _encode(pcm16, _ALAW_ENCODE)


def alaw_decode(data: bytes) -> bytes:
    """Decode A-law bytes to PCM16 little-endian bytes."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()


def ulaw_to_samples(data: bytes) -> np.ndarray:
    """Decode mu-law bytes to an int16 array."""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_to_samples(data: bytes) -> np.ndarray:
    """Decode A-law bytes to an int16 array."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def samples_to_ulaw(samples: np.ndarray) -> bytes:
    """Encode an int16 array as mu-law bytes."""
    return _ULAW_ENCODE[np.asarray(samples, dtype=np.int16).view(np.uint16)].tobytes()


def samples_to_alaw(samples: np.ndarray) -> bytes:
    """Encode an int16 array as A-law bytes."""
    return _ALAW_ENCODE[np.asarray(samples, dtype=np.int16).view(np.uint16)].tobytes()
