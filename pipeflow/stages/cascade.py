"""The ``cascade`` type, now three stages: a clear error that says what to write instead.

The cascade is the ``stt``, ``llm`` and ``tts`` stages in a row, so each
model can be chosen on its own (a provider's recogniser, another's LLM, a
local voice). A file that still says ``type: cascade`` is refused at
validation with the three stages to write, its own options placed where
they now belong.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pipeflow.asr.options import TranscriberOptions
from pipeflow.stage import Frames, Stage

__all__ = ["CascadeOptions", "CascadeReplaced"]

_STT = ("transcriber",)
_TTS = ("voice", "words_per_minute", "output_rate", "chunk_ms")
_GONE = ("rate_limit_wait_max_s",)


class CascadeOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The options the ``cascade`` stage had; reading them explains the split."""

    base_url: str = ""
    """Now an option of the ``llm`` stage."""
    model: str = "gpt-4o-mini"
    """Now an option of the ``llm`` stage."""
    api_key_env: str = "OPENAI_API_KEY"
    """Now an option of the ``llm`` stage."""
    instructions: str | None = None
    """Now an option of the ``llm`` stage."""
    script: str | None = None
    """Now an option of the ``llm`` stage (and stt, for its transcriber)."""
    transcriber: TranscriberOptions | None = None
    """Now an option of the ``stt`` stage."""
    voice: str = "en-us"
    """Now an option of the ``tts`` stage."""
    words_per_minute: int = 175
    """Now an option of the ``tts`` stage."""
    output_rate: int = 24000
    """Now an option of the ``tts`` stage."""
    chunk_ms: int = 100
    """Now an option of the ``tts`` stage."""
    response_on_start: bool = False
    """Now an option of the ``llm`` stage."""
    tool_timeout_s: float | None = 60.0
    """Now an option of the ``llm`` stage."""
    drain_timeout_s: float = 10.0
    """Now an option of the ``llm`` stage."""
    rate_limit_wait_max_s: float = 0.0
    """Now the ``llm`` stage's ``retry`` (``max_wait_s``)."""
    offline_chunk_delay_ms: float = 0.0
    """Now an option of the ``llm`` stage."""

    def __post_init__(self) -> None:
        raise ValueError(replacement(self))


def replacement(options: CascadeOptions) -> str:
    """The sentence that says which three stages to write for ``options``."""
    given = {f: getattr(options, f) for f in options.__struct_fields__
             if getattr(options, f) != getattr(_DEFAULTS, f)}

    def listed(names: tuple[str, ...]) -> str:
        parts = [f"{name}: {msgspec.json.encode(given[name]).decode()}"
                 for name in names if name in given]
        return " {" + ", ".join(parts) + "}" if parts else ""

    llm = tuple(f for f in options.__struct_fields__ if f not in _STT + _TTS + _GONE)
    stt = ("script", *_STT) if "script" in given else _STT
    return (
        "the cascade stage is now three stages, one per model; replace it with "
        f"'- type: stt{listed(stt)}', '- type: llm{listed(llm)}', "
        f"'- type: tts{listed(_TTS)}' in that order (see docs/cascade.md)"
        + ("; rate_limit_wait_max_s is now retry: {max_wait_s: ...} of llm"
           if "rate_limit_wait_max_s" in given else ""))


_DEFAULTS: Any = type("_CascadeDefaults", (), {
    f: d for f, d in zip(CascadeOptions.__struct_fields__, CascadeOptions.__struct_defaults__,
                         strict=True)})()


class CascadeReplaced(Stage):
    """Refused at validation: write ``stt``, ``llm`` and ``tts`` instead."""

    name = "cascade"
    Options = CascadeOptions

    async def process(self, frames: Frames) -> Frames:  # never built: the options refuse
        async for frame in frames:
            yield frame
