"""Offline text-to-speech with espeak-ng, for tests, demos and the local server.

The ``espeakng-loader`` package ships libespeak-ng and its voice data, so no
system package is needed. The library is driven through ctypes in
synchronous mode: a callback collects the samples espeak produces at its
native 22,050 Hz, and soxr converts them to the requested rate.

espeak-ng keeps global state and is not thread safe, so every call holds one
process-wide lock and the library is initialised once.

``SpeechCache`` keeps synthesised speech by bytes, not by entries: a server
that speaks clients' texts must not keep 256 entries of minutes of audio
each (a 120 KB text is some 300 MB of 24 kHz speech).
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import soxr

from pipeflow.errors import ConfigError, LocalError

__all__ = ["CACHE_BYTES", "NATIVE_RATE", "SpeechCache", "available", "speech_cache",
           "synthesize", "synthesize_async"]

CACHE_BYTES = 16 * 1024 * 1024
"""Bytes of speech the process-wide cache keeps (about 5 minutes at 24 kHz)."""

NATIVE_RATE = 22050
"""The rate espeak-ng synthesises at (replaced by what espeak_Initialize reports)."""

# espeak_AUDIO_OUTPUT, espeak_PARAMETER and flag values from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE = 1
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_EE_OK = 0

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

_lock = threading.Lock()
_state: dict[str, Any] = {}


def _load() -> Any:
    """Load and initialise libespeak-ng once; the caller holds ``_lock``."""
    if "lib" in _state:
        return _state["lib"]
    if "error" in _state:
        raise LocalError(_state["error"])
    try:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data_path = espeakng_loader.get_data_path()
    except (ImportError, OSError) as exc:
        _state["error"] = (
            "cannot load the espeak-ng speech synthesiser from the 'espeakng-loader' "
            f"package ({exc}); install it with 'pip install espeakng-loader'."
        )
        raise LocalError(_state["error"]) from exc
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path).encode(), 0)
    if rate <= 0:
        _state["error"] = (
            f"espeak-ng failed to initialise with its data at {data_path!s} (code {rate})."
        )
        raise LocalError(_state["error"])
    chunks: list[np.ndarray] = []

    def collect(wav: Any, count: int, _events: Any) -> int:
        if count > 0 and wav:
            chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    callback = _SYNTH_CALLBACK(collect)  # kept alive in _state: espeak holds the pointer
    lib.espeak_SetSynthCallback(callback)
    _state.update(lib=lib, rate=rate, chunks=chunks, callback=callback, voice=None)
    return lib


def available() -> bool:
    """Whether espeak-ng can be loaded on this machine."""
    try:
        with _lock:
            _load()
    except LocalError:
        return False
    return True


def synthesize(
    text: str,
    sample_rate: int = 24000,
    voice: str = "en-us",
    words_per_minute: int = 175,
) -> np.ndarray:
    """Speak ``text`` into a mono int16 array.

    Args:
        text: what to say (UTF-8; punctuation shapes the prosody).
        sample_rate: rate of the returned samples in Hz.
        voice: an espeak-ng voice name such as "en-us" or "en-gb".
        words_per_minute: speaking rate, 80 to 450.

    Returns:
        The samples, int16, one channel, at ``sample_rate``.

    Raises:
        ConfigError: a rate or voice that cannot be used.
        LocalError: the espeak-ng library cannot be loaded or failed.
    """
    if sample_rate <= 0:
        raise ConfigError(f"speech sample rate must be a positive number of Hz, got {sample_rate}.")
    if not 80 <= words_per_minute <= 450:
        raise ConfigError(
            f"speech rate must be 80 to 450 words per minute, got {words_per_minute}."
        )
    with _lock:
        lib = _load()
        if _state["voice"] != voice:
            if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise ConfigError(f"espeak-ng has no voice named {voice!r} (try 'en-us').")
            _state["voice"] = voice
        lib.espeak_SetParameter(_ESPEAK_RATE, int(words_per_minute), 0)
        chunks: list[np.ndarray] = _state["chunks"]
        chunks.clear()
        data = text.encode("utf-8") + b"\0"
        buffer = ctypes.create_string_buffer(data, len(data))
        code = lib.espeak_Synth(
            buffer, len(data), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
        )
        if code != _EE_OK:
            raise LocalError(f"espeak-ng could not synthesise {text[:40]!r} (code {code}).")
        lib.espeak_Synchronize()
        native = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        chunks.clear()
        native_rate = int(_state["rate"])
    if native_rate == sample_rate or native.size == 0:
        return native.astype(np.int16, copy=False)
    out = soxr.resample(native, native_rate, sample_rate, quality="HQ")
    return np.asarray(out, dtype=np.int16)


async def synthesize_async(
    text: str,
    sample_rate: int = 24000,
    voice: str = "en-us",
    words_per_minute: int = 175,
) -> np.ndarray:
    """``synthesize`` in a worker thread, so the event loop keeps running."""
    return await asyncio.to_thread(synthesize, text, sample_rate, voice, words_per_minute)


class SpeechCache:
    """A least-recently-used cache of speech bounded by bytes; thread safe.

    Args:
        max_bytes: most bytes kept; the oldest entries go first. An entry
            over an eighth of it is made but not kept, so one long text
            cannot push out every short phrase.
    """

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        """Bytes kept now."""
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: Hashable) -> bytes | None:
        """The bytes kept for ``key`` (now the most recently used), else None."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def get(self, key: Hashable, make: Callable[[], bytes]) -> bytes:
        """The bytes kept for ``key``, else ``make()`` (kept when it fits)."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
        value = make()  # outside the lock: synthesis takes its own
        if len(value) > self.max_bytes // 8:
            return value
        with self._lock:
            if key not in self._entries:
                self._entries[key] = value
                self.bytes += len(value)
            while self.bytes > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self.bytes -= len(old)
        return value

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
            self.bytes = 0


speech_cache = SpeechCache()
"""The process-wide cache the local Realtime server's speaker uses."""
