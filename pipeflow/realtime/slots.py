"""What the Realtime transport can serve in each of an agent's model slots.

An agent names its models LiveKit-style (``llm: openai/gpt-realtime``,
``tts: marin``, ``stt: gpt-4o-mini-transcribe``). pipeflow's one transport is
the OpenAI Realtime API (or the local server that stands in for it), so a
slot naming another provider (``anthropic/claude-sonnet``,
``elevenlabs/rachel``) or a model the API does not serve there is a
configuration error naming what is supported, never a call that quietly runs
on OpenAI's defaults.
"""

from __future__ import annotations

from pipeflow.errors import ConfigError

__all__ = ["PROVIDER", "SUPPORTED", "check_provider", "check_slot"]

PROVIDER = "openai"
"""The one provider the transport speaks to (``openai/NAME`` or a bare ``NAME``)."""

SUPPORTED: dict[str, tuple[str, tuple[str, ...]]] = {
    "llm": ("Realtime model", (
        "gpt-realtime", "gpt-realtime-mini", "gpt-4o-realtime-preview",
        "gpt-4o-mini-realtime-preview",
    )),
    "tts": ("Realtime voice", (
        "alloy", "ash", "ballad", "cedar", "coral", "echo", "marin", "sage", "shimmer", "verse",
    )),
    "stt": ("transcription model", ("gpt-4o-mini-transcribe", "gpt-4o-transcribe", "whisper-1")),
}
"""Slot -> (what it names, the names the transport serves). A model may also be
one of these with a date (``gpt-realtime-2025-08-28``); voices are exact."""


def check_slot(slot: str, value: str) -> str:
    """The name the transport uses for ``value`` in ``slot`` (``openai/`` dropped).

    Raises:
        ConfigError: another provider, or a name the transport does not serve;
            the message lists the supported names.
    """
    what, names = SUPPORTED[slot]
    provider, sep, name = value.partition("/")
    if not sep:
        provider, name = PROVIDER, value
    supported = ", ".join(names)
    if provider.lower() != PROVIDER:
        raise ConfigError(
            f"agent.{slot}: {value!r} asks for provider {provider!r}, but the realtime "
            f"transport speaks only to OpenAI; supported {what}s: {supported} "
            f"(or {PROVIDER}/NAME)"
        )
    dated = slot != "tts" and any(name.startswith(f"{known}-") for known in names)
    if name not in names and not dated:
        raise ConfigError(
            f"agent.{slot}: {value!r} is not a {what} the realtime transport serves; "
            f"supported: {supported}"
        )
    return name


def check_provider(field: str, value: str, slot: str) -> None:
    """Refuse a ``provider/name`` in a raw ``model`` / ``voice`` field for another provider.

    These fields pass a name through unchanged (a dated model, an Azure
    deployment, a compatible server's own names), so only a provider prefix
    can be judged here: ``anthropic/claude-sonnet`` would otherwise run
    silently on the server's default.

    Raises:
        ConfigError: the value names a provider other than OpenAI.
    """
    provider, sep, _name = value.partition("/")
    if sep and provider.lower() != PROVIDER:
        what, names = SUPPORTED[slot]
        raise ConfigError(
            f"{field}: {value!r} asks for provider {provider!r}, but the realtime transport "
            f"speaks only to OpenAI and servers like it; supported {what}s: {', '.join(names)}"
        )
