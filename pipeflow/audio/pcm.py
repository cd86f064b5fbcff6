"""PCM16 helpers: checked views, frame sizes, mix-down, gain.

Internal audio is PCM16 little-endian bytes. These helpers turn user input
into that form with errors that name where the bad input came from, so a
mistake never surfaces as a numpy traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import msgspec
import numpy as np

from pipeflow.errors import ConfigError

__all__ = [
    "MAX_RATE",
    "DurationMs",
    "FrameMs",
    "SampleRate",
    "check_pcm",
    "check_rate",
    "frame_samples",
    "from_float",
    "gain",
    "gain_db",
    "mix_down",
    "to_float",
    "view",
]

MAX_RATE = 768_000
"""The highest sample rate accepted, in Hz."""

_LITTLE = sys.byteorder == "little"

# Option types: the bounds are checked when a pipeline file is validated, so
# `pipeflow validate` names the file, line and option of a zero or negative rate
# instead of the run failing later.
SampleRate = Annotated[int, msgspec.Meta(ge=1, le=MAX_RATE)]
"""A sample rate option in Hz (1 to ``MAX_RATE``)."""
FrameMs = Annotated[float, msgspec.Meta(gt=0)]
"""A frame length option in milliseconds (more than 0)."""
DurationMs = Annotated[float, msgspec.Meta(ge=0)]
"""A duration or delay option in milliseconds (0 or more)."""


def check_rate(rate: object, where: str = "audio") -> int:
    """Validate a sample rate.

    Args:
        rate: the rate to check.
        where: names the file, frame or option in the error message.

    Returns:
        The rate as an int.

    Raises:
        ConfigError: not a whole number of Hz between 1 and ``MAX_RATE``.
    """
    if isinstance(rate, bool) or not isinstance(rate, int | np.integer):
        raise ConfigError(f"{where}: the sample rate must be a whole number of Hz, got {rate!r}.")
    if not 0 < int(rate) <= MAX_RATE:
        raise ConfigError(
            f"{where}: the sample rate must be between 1 and {MAX_RATE} Hz, got {rate}."
        )
    return int(rate)


def check_pcm(pcm: bytes, channels: int = 1, where: str = "audio") -> None:
    """Check that ``pcm`` holds whole PCM16 samples for every channel.

    Raises:
        ConfigError: odd length, or a length not a multiple of the channel count.
    """
    if channels < 1:
        raise ConfigError(f"{where}: the channel count must be at least 1, got {channels}.")
    if len(pcm) % (2 * channels):
        raise ConfigError(
            f"{where}: PCM16 audio of {channels} channel(s) needs a multiple of "
            f"{2 * channels} bytes, got {len(pcm)} bytes."
        )


def view(pcm: bytes | bytearray | memoryview, where: str = "audio") -> np.ndarray:
    """A read-only int16 view of little-endian PCM16 bytes (no copy on little-endian).

    Raises:
        ConfigError: an odd number of bytes.
    """
    if len(pcm) % 2:
        raise ConfigError(f"{where}: PCM16 audio needs an even number of bytes, got {len(pcm)}.")
    samples = np.frombuffer(pcm, dtype="<i2")
    return samples if _LITTLE else samples.astype(np.int16)


def to_bytes(samples: np.ndarray) -> bytes:
    """PCM16 little-endian bytes of an int16 array."""
    return np.asarray(samples, dtype="<i2").tobytes()


def frame_samples(sample_rate: int, frame_ms: float) -> int:
    """Samples in one frame of ``frame_ms`` milliseconds (at least one).

    Raises:
        ConfigError: a frame length that is not positive.
    """
    if not frame_ms > 0:
        raise ConfigError(f"frame_ms must be a positive number of milliseconds, got {frame_ms}.")
    return max(1, round(sample_rate * frame_ms / 1000))


def to_float(samples: np.ndarray) -> np.ndarray:
    """int16 samples as float32 in [-1, 1)."""
    return samples.astype(np.float32) * np.float32(1 / 32768)


def from_float(samples: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] as int16, rounded and clipped."""
    scaled = np.rint(np.asarray(samples, dtype=np.float64) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def mix_down(samples: np.ndarray, channels: int, where: str = "audio") -> np.ndarray:
    """Average interleaved channels into mono int16 (no clipping possible).

    Args:
        samples: interleaved samples, any integer or float dtype already
            scaled to the int16 range.
        channels: the number of interleaved channels.
        where: names the file or frame in the error message.

    Raises:
        ConfigError: a channel count below 1, or samples that do not fill
            every channel of the last sample frame.
    """
    if channels == 1:
        return np.asarray(samples).astype(np.int16, copy=False)
    samples = np.asarray(samples)
    if channels < 1:
        raise ConfigError(f"{where}: the channel count must be at least 1, got {channels}.")
    if samples.size % channels:
        raise ConfigError(
            f"{where}: {samples.size} samples do not divide into {channels} channels."
        )
    frames = samples.reshape(-1, channels)
    mixed = frames.astype(np.float64).mean(axis=1)
    return np.clip(np.rint(mixed), -32768, 32767).astype(np.int16)


def gain(samples: np.ndarray, factor: float) -> np.ndarray:
    """Scale int16 samples by ``factor``, rounding and clipping to int16."""
    if factor == 1.0:
        return samples
    scaled = np.rint(samples.astype(np.float32) * np.float32(factor))
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def gain_db(samples: np.ndarray, db: float) -> np.ndarray:
    """Scale int16 samples by ``db`` decibels (clipped)."""
    return gain(samples, 10.0 ** (db / 20.0))
