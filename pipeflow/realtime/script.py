"""The script the local Realtime server plays: what the "model" says and does.

A script is YAML. It is deterministic by design: the same client events get
the same answers, so tests and demos can rely on them::

    greeting: "Hello! Ask me about the weather."   # first response with no user input
    speed: 1.0                 # audio pacing (1 real time, 0 as fast as possible)
    first_audio_delay_ms: 0    # delay before the first audio of each response
    turns:
      - match: [weather, "forecast|temperature"]   # case-insensitive regexes
        user: "What is the weather in Paris?"       # reported transcript of audio input
        steps:
          - say: "Let me check."
          - call: get_weather
            arguments: {location: "Paris, France"}
          - say: "{result}"                         # the tool's output
      - user: "Goodbye."
        steps:
          - say: "Goodbye!"
          - end: true
    fallback:
      - say: "I did not catch that."
    transcriber:               # optional: hear the caller offline (docs/asr.md)
      type: pocketsphinx
      sentences_from: pipelines.orderline.asr:SENTENCES

Choosing a turn for a user input (``Script.choose``): when the caller's words
are known (text input, or a transcriber), the first unused turn whose
``match`` finds them, else the first unused turn with no ``match``; when they
are not known (audio with no transcriber), the next unused turn in order, and
its ``user`` text is reported as the transcript. With no turn left, the
``fallback`` steps answer.

Steps run in order. Consecutive ``say`` steps make one spoken message; a
``call`` ends the response with a function call (consecutive calls are
parallel calls) and the steps after it run in the next response, once the
client sent the ``function_call_output`` and ``response.create``. In a
``say`` text, ``{result}`` is the last tool output as text and
``{result.total}`` (or ``{result.items.0.name}``) a field of it parsed as
JSON; ``{user}`` is the caller's words; ``{{`` and ``}}`` are literal braces.
``end: true`` ends the script: later inputs get the fallback.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated, Any

import msgspec

from pipeflow.asr.options import TranscriberOptions
from pipeflow.errors import ConfigError
from pipeflow.yamlsource import Located, load_yaml

__all__ = ["DEFAULT_SCRIPT", "Script", "Step", "Turn", "load_script", "parse_script", "render"]

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_NAME = re.compile(r"^(user|result)((?:\.[A-Za-z0-9_-]+)*)$")


class Step(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """One thing the model does: say text, call a tool, or end the script."""

    say: str | None = None
    """Text to speak; may use {result}, {result.field} and {user}."""
    call: str | None = None
    """Name of a function (tool) to call."""
    arguments: dict[str, Any] | None = None
    """Arguments of the call, sent as JSON."""
    end: bool = False
    """End the script after this response: later inputs get the fallback."""


class Turn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The model's answer to one user input."""

    steps: list[Step]
    """What the model does, in order."""
    match: str | list[str] | None = None
    """Case-insensitive regular expressions (plain keywords work); the turn is
    chosen when one is found in the caller's words."""
    user: str = ""
    """The caller's words reported as the input transcription of audio input
    (when no transcriber is configured)."""
    repeat: bool = False
    """The turn may be chosen again (by default each turn is used once)."""


class Script(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A whole script: greeting, turns, fallback and default pacing."""

    turns: list[Turn] = msgspec.field(default_factory=list)
    """User turns and their answers."""
    greeting: str | None = None
    """Said in the first response the client asks for before any user input."""
    fallback: list[Step] = msgspec.field(
        default_factory=lambda: [Step(say="Sorry, I have nothing more to say.")]
    )
    """Steps used when no turn is left for an input."""
    first_audio_delay_ms: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Delay before the first audio of each response (simulated model latency)."""
    speed: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    """Audio pacing: 1 real time, 2 twice as fast, 0 no pacing."""
    voice: str = "en-us"
    """espeak-ng voice of the spoken replies."""
    words_per_minute: Annotated[int, msgspec.Meta(ge=80, le=450)] = 175
    """Speaking rate of the spoken replies."""
    transcriber: TranscriberOptions | None = None
    """Recognise the caller's audio offline so ``match`` sees what was said
    (see docs/asr.md); without it, audio turns are taken in order."""
    source: str = ""
    """Where the script came from (set by the loader)."""

    def choose(self, words: str | None, used: set[int]) -> int | None:
        """Index of the turn that answers ``words`` (``None`` when unknown), or None.

        Args:
            words: the caller's words, or None when they are not known.
            used: indexes of turns already taken (turns with ``repeat`` stay available).
        """
        free = [i for i, turn in enumerate(self.turns) if turn.repeat or i not in used]
        if words is None:
            return free[0] if free else None
        for i in free:
            if any(p.search(words) for p in _patterns(self.turns[i].match)):
                return i
        return next((i for i in free if not self.turns[i].match), None)

    def texts(self) -> list[str]:
        """Every literal text the script says (for warming a speech cache)."""
        steps = [s for turn in self.turns for s in turn.steps] + self.fallback
        out = [s.say for s in steps if s.say and "{" not in s.say]
        return ([self.greeting] if self.greeting else []) + out


def _patterns(match: str | list[str] | None) -> list[re.Pattern[str]]:
    entries = [match] if isinstance(match, str) else (match or [])
    return [_compile(entry) for entry in entries]


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def render(template: str, result: str | None, user: str) -> str:
    """Fill ``{result}``, ``{result.a.0.b}`` and ``{user}`` in a ``say`` text.

    A field missing from the result (or a result that is not JSON) leaves the
    placeholder as written, so the transcript shows what went wrong.
    """
    parsed: Any = _MISSING

    def fill(match: re.Match[str]) -> str:
        nonlocal parsed
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = _NAME.match(match.group(1) or "")
        if name is None:
            return token
        if name.group(1) == "user":
            return user
        if not name.group(2):
            return result or ""
        if parsed is _MISSING:
            try:
                parsed = msgspec.json.decode(result or "")
            except msgspec.DecodeError:
                parsed = None
        value = _lookup(parsed, name.group(2)[1:].split("."))
        if value is _MISSING:
            return token
        return value if isinstance(value, str) else msgspec.json.encode(value).decode()

    return _PLACEHOLDER.sub(fill, template)


_MISSING: Any = object()


def _lookup(value: Any, path: list[str]) -> Any:
    for key in path:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return _MISSING
    return value


# --- loading ---------------------------------------------------------------------


def parse_script(text: str, filename: str = "<script>") -> Script:
    """Validate script YAML text.

    Raises:
        ConfigError: the first mistake, with ``file:line:column`` and the field.
    """
    from pipeflow.config import _convert  # the pipeline loader's error messages

    located = load_yaml(text, filename)
    data = located.data if located.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError("a Realtime script must be a mapping with 'turns'", filename)
    for i, turn in enumerate(data.get("turns") or []):
        _check_patterns(turn, located, i)
    script = _convert(data, Script, located, (), "script", "field")
    for i, turn in enumerate(script.turns):
        if not turn.steps:
            raise ConfigError(f"script turn {i + 1} has no steps",
                              located.where(("turns", i, "steps")))
        for j, step in enumerate(turn.steps):
            _check_step(step, located, ("turns", i, "steps", j), f"turn {i + 1}, step {j + 1}")
    for j, step in enumerate(script.fallback):
        _check_step(step, located, ("fallback", j), f"fallback step {j + 1}")
    if script.greeting is not None:
        _check_template(script.greeting, located.where(("greeting",)), "greeting")
    script.source = filename
    return script


def _check_patterns(turn: Any, located: Located, index: int) -> None:
    match = turn.get("match") if isinstance(turn, dict) else None
    entries = [match] if isinstance(match, str) else match if isinstance(match, list) else []
    for k, entry in enumerate(entries):
        if not isinstance(entry, str):
            continue  # the type check that follows reports it
        try:
            re.compile(entry)
        except re.error as exc:
            path = ("turns", index, "match") + ((k,) if isinstance(match, list) else ())
            raise ConfigError(
                f"script turn {index + 1}: 'match' {entry!r} is not a valid regular "
                f"expression ({exc})", located.where(path)
            ) from None


def _check_step(step: Step, located: Located, path: tuple[str | int, ...], label: str) -> None:
    kinds = [name for name in ("say", "call") if getattr(step, name) is not None]
    kinds += ["end"] if step.end else []
    if len(kinds) != 1:
        found = " and ".join(repr(k) for k in kinds) if kinds else "none of them"
        raise ConfigError(
            f"script {label}: a step has exactly one of 'say', 'call' or 'end: true', "
            f"found {found}", located.where(path)
        )
    if step.arguments is not None and step.call is None:
        raise ConfigError(f"script {label}: 'arguments' belongs to a 'call' step",
                          located.where((*path, "arguments")))
    if step.call is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", step.call):
        raise ConfigError(
            f"script {label}: 'call' must be a function name (letters, digits, _ and -), "
            f"got {step.call!r}", located.where((*path, "call"))
        )
    if step.say is not None:
        _check_template(step.say, located.where((*path, "say")), label)


def _check_template(text: str, where: str, label: str) -> None:
    for match in _PLACEHOLDER.finditer(text):
        inner = match.group(1)
        if inner is not None and not _NAME.match(inner):
            raise ConfigError(
                f"script {label}: unknown placeholder {{{inner}}} in {text!r}; use "
                "{result}, {result.field}, {user}, or {{ and }} for braces", where
            )
    stray = _PLACEHOLDER.sub("", text)
    if "{" in stray or "}" in stray:
        raise ConfigError(f"script {label}: unbalanced brace in {text!r} (write {{{{ or }}}})",
                          where)


def load_script(path: str | Path) -> Script:
    """Read and validate a script file (``pipeflow:NAME``: one that ships with pipeflow).

    Raises:
        ConfigError: the file cannot be read or is invalid.
    """
    file = Path(path)
    if str(path).startswith("pipeflow:"):  # a script that ships with pipeflow
        from pipeflow.examples import SCRIPTS

        name = str(path).removeprefix("pipeflow:")
        file = SCRIPTS / f"{name}.yaml"
        if not name.isidentifier() or not file.is_file():
            shipped = sorted(f"pipeflow:{p.stem}" for p in SCRIPTS.glob("*.yaml"))
            raise ConfigError(f"no shipped Realtime script {path!r}; there are: "
                              f"{', '.join(shipped)}")
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"Realtime script file not found: {file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read Realtime script file {file}: {exc}") from None
    return parse_script(text, str(path))


DEFAULT_SCRIPT = Script(
    greeting="Hello! You are talking to the local Realtime server.",
    turns=[],
    fallback=[Step(say="I heard you. This is a scripted answer from the local server.")],
    source="<built-in>",
)
"""The script used when none is given: a greeting, then the same answer to every input."""
