"""WAV reading of every supported encoding, writing, and clear errors for bad files."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from pipeflow.audio import g711
from pipeflow.audio.wav import WavWriter, decode_wav, read_wav, write_wav
from pipeflow.errors import ConfigError

RATE = 11025
SIGNAL = (np.sin(np.arange(2000) * 0.05) * 20000).astype(np.int16)


def riff(tag: int, channels: int, rate: int, bits: int, body: bytes, extensible: bool = False):
    block = channels * bits // 8
    if extensible:
        fmt = struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * block, block, bits)
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + guid_tail
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"LIST" + struct.pack("<I", 5) + b"odd!!\x00"  # an odd-sized chunk to skip
    chunks += b"data" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def close(a: np.ndarray, b: np.ndarray, tolerance: int) -> bool:
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= tolerance


def test_pcm16_written_by_the_stdlib(tmp_path: Path):
    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(SIGNAL.tobytes())
    audio = read_wav(path)
    assert (audio.sample_rate, audio.channels, audio.encoding) == (RATE, 1, "pcm")
    assert np.array_equal(audio.samples, SIGNAL)


@pytest.mark.parametrize("extensible", [False, True])
def test_every_encoding(extensible: bool):
    cases = {
        "pcm8": (1, 8, ((SIGNAL >> 8) + 128).astype(np.uint8).tobytes(), 256),
        "pcm24": (
            1,
            24,
            b"".join(struct.pack("<i", int(s) << 8)[:3] for s in SIGNAL),
            0,
        ),
        "pcm32": (1, 32, (SIGNAL.astype("<i4") << 16).tobytes(), 0),
        "float32": (3, 32, (SIGNAL / 32768).astype("<f4").tobytes(), 1),
        "float64": (3, 64, (SIGNAL / 32768).astype("<f8").tobytes(), 1),
        "ulaw": (7, 8, g711.ulaw_encode(SIGNAL.tobytes()), 700),
        "alaw": (6, 8, g711.alaw_encode(SIGNAL.tobytes()), 700),
    }
    for name, (tag, bits, body, tolerance) in cases.items():
        audio = decode_wav(riff(tag, 1, RATE, bits, body, extensible), name)
        assert audio.sample_rate == RATE, name
        assert close(audio.samples, SIGNAL, tolerance), name


def test_stereo_is_mixed_down():
    stereo = np.stack([SIGNAL, np.zeros_like(SIGNAL)], axis=1).reshape(-1)
    audio = decode_wav(riff(1, 2, 48000, 16, stereo.astype("<i2").tobytes()))
    assert audio.channels == 2
    assert close(audio.samples, SIGNAL // 2, 1)


def test_streaming_header_with_unknown_size_reads_to_the_end():
    data = bytearray(riff(1, 1, 8000, 16, SIGNAL.tobytes()))
    data[data.index(b"data") + 4 : data.index(b"data") + 8] = b"\xff\xff\xff\xff"
    assert np.array_equal(decode_wav(bytes(data)).samples, SIGNAL)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"ID3\x03 this is an mp3", "not a WAV file"),
        (riff(1, 1, 8000, 16, SIGNAL.tobytes())[:-100], "truncated: its data chunk declares"),
        (riff(1, 1, 8000, 16, b"")[:20], "truncated 'fmt ' chunk"),
        (riff(0x55, 1, 8000, 16, b"\0\0"), "format tag 0x0055, which is not supported"),
        (riff(1, 1, 8000, 12, b"\0\0\0"), "12-bit pcm is not supported"),
        (riff(3, 1, 8000, 16, b"\0\0"), "16-bit float is not supported"),
        (riff(1, 1, 0, 16, b"\0\0"), "sample rate must be between 1"),
    ],
)
def test_bad_files_are_config_errors_naming_the_file(data: bytes, message: str, tmp_path: Path):
    path = tmp_path / "bad.wav"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=message) as info:
        read_wav(path)
    assert "bad.wav" in str(info.value)


def test_missing_file_and_directory(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_wav(tmp_path / "nope.wav")
    with pytest.raises(ConfigError, match="is a directory"):
        read_wav(tmp_path)


def test_writer_output_reads_back_with_the_stdlib(tmp_path: Path):
    path = tmp_path / "sub" / "out.wav"
    with WavWriter(path, 22050) as out:
        out.write(SIGNAL[:1000].tobytes())
        out.write_silence(50)
        out.write(SIGNAL[1000:].tobytes())
    with wave.open(str(path), "rb") as back:
        assert (back.getframerate(), back.getnchannels(), back.getnframes()) == (22050, 1, 2050)
        samples = np.frombuffer(back.readframes(2050), "<i2")
    assert np.array_equal(samples[1050:], SIGNAL[1000:])
    assert not samples[1000:1050].any()


def test_cache_sees_a_changed_file(tmp_path: Path):
    path = write_wav(tmp_path / "c.wav", SIGNAL, 8000)
    assert read_wav(path) is read_wav(path)
    write_wav(path, SIGNAL[:100], 16000)
    assert read_wav(path).sample_rate == 16000
