"""WAV files: read any common encoding into PCM16 mono, write PCM16.

Reading parses the RIFF chunks itself (the stdlib ``wave`` module reads only
integer PCM) and accepts 8/16/24/32-bit integer PCM, 32/64-bit float, mu-law
and A-law, plain or WAVE_FORMAT_EXTENSIBLE, any rate and channel count.
Every malformed file is reported as a ``ConfigError`` that names it.

Decoded files are cached (read-only arrays keyed by path, size and mtime),
so a thousand sessions playing one prompt hold it in memory once.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pipeflow.audio.g711 import alaw_to_samples, ulaw_to_samples
from pipeflow.audio.pcm import check_rate, from_float, mix_down
from pipeflow.errors import ConfigError, LocalError

__all__ = ["WavAudio", "WavWriter", "decode_wav", "read_wav", "write_wav"]

_PCM, _FLOAT, _ALAW, _ULAW, _EXTENSIBLE = 0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE
_NAMES = {_PCM: "pcm", _FLOAT: "float", _ALAW: "alaw", _ULAW: "ulaw"}
_UNKNOWN_SIZE = 0xFFFFFFFF


@dataclass(frozen=True)
class WavAudio:
    """A decoded WAV file.

    Attributes:
        samples: int16 mono samples (read-only), mixed down from ``channels``.
        sample_rate: samples per second.
        channels: channel count of the file.
        encoding: "pcm", "float", "ulaw" or "alaw".
        bits: bits per sample in the file.
    """

    samples: np.ndarray
    sample_rate: int
    channels: int
    encoding: str
    bits: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples.size / self.sample_rate

    @property
    def pcm(self) -> bytes:
        """The samples as PCM16 little-endian bytes."""
        return self.samples.astype("<i2", copy=False).tobytes()


def _chunks(data: bytes, where: str) -> dict[bytes, tuple[int, int]]:
    """Offsets and sizes of the top-level chunks of a RIFF/WAVE file."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        kind = "is empty" if not data else "is not a WAV file (no RIFF/WAVE header)"
        raise ConfigError(f"{where} {kind}.")
    chunks: dict[bytes, tuple[int, int]] = {}
    offset = 12
    while offset + 8 <= len(data):
        tag = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        start = offset + 8
        if tag == b"data" and (size == _UNKNOWN_SIZE or (size == 0 and len(data) > start)):
            size = len(data) - start  # written by a streaming recorder that never patched it
        chunks.setdefault(tag, (start, size))
        offset = start + size + (size & 1)
    return chunks


def decode_wav(data: bytes, where: str = "WAV data") -> WavAudio:
    """Decode a whole WAV file held in memory.

    Args:
        data: the file's bytes.
        where: names the file in error messages.

    Raises:
        ConfigError: not a WAV file, truncated, or an encoding not supported.
    """
    chunks = _chunks(data, where)
    if b"fmt " not in chunks:
        raise ConfigError(f"{where} has no 'fmt ' chunk; it is truncated or not a WAV file.")
    fmt_start, fmt_size = chunks[b"fmt "]
    if fmt_size < 16 or fmt_start + 16 > len(data):
        raise ConfigError(f"{where} has a truncated 'fmt ' chunk ({fmt_size} bytes).")
    if b"data" not in chunks:
        raise ConfigError(f"{where} has no 'data' chunk; it is truncated or holds no audio.")
    tag, channels, rate, _byte_rate, block, bits = struct.unpack_from("<HHIIHH", data, fmt_start)
    if tag == _EXTENSIBLE:
        if fmt_size < 40 or fmt_start + 40 > len(data):
            raise ConfigError(f"{where} has a truncated WAVE_FORMAT_EXTENSIBLE header.")
        (tag,) = struct.unpack_from("<H", data, fmt_start + 24)  # first 2 bytes of SubFormat
    encoding = _NAMES.get(tag)
    if encoding is None:
        raise ConfigError(
            f"{where} uses WAV format tag 0x{tag:04x}, which is not supported; "
            "use PCM (8/16/24/32-bit), float (32/64-bit), mu-law or A-law."
        )
    check_rate(rate, where)
    if channels < 1:
        raise ConfigError(f"{where} declares {channels} channels.")
    width = _width(encoding, bits, where)
    if block != width * channels:
        block = width * channels  # some writers get block_align wrong; the sample width rules
    start, size = chunks[b"data"]
    available = len(data) - start
    if size > available:
        raise ConfigError(
            f"{where} is truncated: its data chunk declares {size} bytes but only "
            f"{available} are present."
        )
    body = data[start : start + size - size % block]
    samples = _to_int16(body, encoding, width)
    mono = mix_down(samples, channels) if channels > 1 else samples
    mono.setflags(write=False)
    return WavAudio(mono, rate, channels, encoding, bits)


def _width(encoding: str, bits: int, where: str) -> int:
    allowed = {"pcm": (8, 16, 24, 32), "float": (32, 64), "ulaw": (8,), "alaw": (8,)}[encoding]
    if bits not in allowed:
        raise ConfigError(
            f"{where}: {bits}-bit {encoding} is not supported "
            f"(supported: {', '.join(map(str, allowed))}-bit)."
        )
    return bits // 8


def _to_int16(body: bytes, encoding: str, width: int) -> np.ndarray:
    if encoding == "ulaw":
        return ulaw_to_samples(body)
    if encoding == "alaw":
        return alaw_to_samples(body)
    if encoding == "float":
        values = np.frombuffer(body, dtype="<f4" if width == 4 else "<f8")
        return from_float(np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=-1.0))
    if width == 1:  # 8-bit WAV is unsigned
        return ((np.frombuffer(body, dtype=np.uint8).astype(np.int16) - 128) << 8).astype(np.int16)
    if width == 2:
        return np.frombuffer(body, dtype="<i2").astype(np.int16)
    if width == 3:
        raw = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
        return raw[:, 1:].copy().view("<i2").reshape(-1).astype(np.int16)  # keep top 16 bits
    return (np.frombuffer(body, dtype="<i4") >> 16).astype(np.int16)


_cache: OrderedDict[tuple[str, int, int], WavAudio] = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_BYTES = 64 << 20


def read_wav(path: str | os.PathLike[str]) -> WavAudio:
    """Read and decode a WAV file (cached while it does not change).

    Raises:
        ConfigError: missing, unreadable, not a WAV file, truncated, or an
            unsupported encoding; the message names the file.
    """
    where = f"WAV file {str(path)!r}"
    try:
        stat = os.stat(path)
        key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
        with _cache_lock:
            if key in _cache:
                _cache.move_to_end(key)
                return _cache[key]
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{where} does not exist.") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{where} is a directory, not a file.") from exc
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror or exc}.") from exc
    audio = decode_wav(data, where)
    with _cache_lock:
        _cache[key] = audio
        while sum(a.samples.nbytes for a in _cache.values()) > _CACHE_BYTES and len(_cache) > 1:
            _cache.popitem(last=False)
    return audio


class WavWriter:
    """Writes PCM16 mono (or interleaved) audio to a WAV file as it arrives.

    The header is patched with the final sizes on ``close``, so a crashed
    recording is still readable (its data size says "unknown").

    Args:
        path: the file to create (parent directories are made).
        sample_rate: samples per second.
        channels: interleaved channels in what ``write`` is given.

    Raises:
        ConfigError: a bad rate, or the file cannot be created.
    """

    def __init__(self, path: str | os.PathLike[str], sample_rate: int, channels: int = 1) -> None:
        self.path = Path(path)
        self.sample_rate = check_rate(sample_rate, f"WAV file {str(path)!r}")
        self.channels = channels
        self.frames = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise ConfigError(
                f"cannot create WAV file {str(path)!r}: {exc.strerror or exc}."
            ) from exc
        self._file.write(self._header(_UNKNOWN_SIZE))

    def _header(self, data_size: int) -> bytes:
        block = 2 * self.channels
        riff = 36 + data_size if data_size != _UNKNOWN_SIZE else _UNKNOWN_SIZE
        return struct.pack(
            "<4sI4s4sIHHIIHH4sI",
            b"RIFF",
            riff & 0xFFFFFFFF,
            b"WAVE",
            b"fmt ",
            16,
            _PCM,
            self.channels,
            self.sample_rate,
            self.sample_rate * block,
            block,
            16,
            b"data",
            data_size,
        )

    def write(self, pcm: bytes) -> None:
        """Append PCM16 little-endian bytes."""
        if self._file is None:
            raise LocalError(f"WAV file {str(self.path)!r} is already closed.")
        self._file.write(pcm)
        self.frames += len(pcm) // (2 * self.channels)

    def flush(self) -> None:
        """Put what was written so far on disk (for a reader of a file still being written)."""
        if self._file is not None:
            self._file.flush()

    def write_silence(self, samples: int) -> None:
        """Append ``samples`` frames of silence."""
        if samples > 0:
            self.write(bytes(2 * self.channels * samples))

    def close(self) -> None:
        """Patch the header with the final sizes and close the file."""
        if self._file is None:
            return
        size = self.frames * 2 * self.channels
        try:
            self._file.seek(0)
            self._file.write(self._header(size))
        finally:
            self._file.close()
            self._file = None

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_wav(
    path: str | os.PathLike[str], samples: np.ndarray | bytes, sample_rate: int, channels: int = 1
) -> Path:
    """Write PCM16 samples (an int16 array or little-endian bytes) to a WAV file."""
    pcm = samples if isinstance(samples, bytes) else np.asarray(samples, "<i2").tobytes()
    with WavWriter(path, sample_rate, channels) as out:
        out.write(pcm)
    return out.path
