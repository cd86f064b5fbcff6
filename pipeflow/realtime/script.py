"""The script the local Realtime server plays: what the "model" says and does.

A script is YAML. It is deterministic by design: the same words get the
same answers, so tests and demos can rely on them, and it acts only on what
the caller said: tool arguments come from the caller's words, and words no
turn explains get the fallback, which asks again::

    greeting: "Hello! Ask me about the weather."   # first response with no user input
    vocabularies:              # capture types of words from a list (docs/realtime.md)
      city: weather_tools:CITIES
    states:                    # optional dialogue states; the first is the initial one
      start: {}
      confirm: {expect: yesno}  # what the recogniser should listen for next
    turns:
      - match: ["weather in {city:city}", "forecast for {place:text}"]
        when: start            # only in these states (default: any)
        steps:
          - say: "Let me check."
          - call: get_weather
            arguments: {location: "{city}"}   # one capture alone keeps its type
          - say: "{result}"                   # the tool's output
      - match: ["{count:number} {item:text}"]
        each: true             # every reading of the words: one call each
        then: confirm          # the state once the turn's tools answered ok
        steps:
          - call: add
            arguments: {item: "{item}", count: "{count}"}
          - say: "{result.message}"
    fallback:
      - say: "Sorry, I didn't catch that. Could you say it again?"
    refused:                   # after a tool answered {"ok": false, ...}
      - say: "{result.message}"
    transcriber:               # optional: hear the caller offline (docs/asr.md)
      type: pocketsphinx
      sentences_from: pipelines.orderline.asr:SENTENCES

Choosing a turn (``Script.match``): of the turns valid in the current state
(and not used yet, unless ``repeat``), the one whose pattern explains the
most of the caller's words (letters and digits inside its readings); ties go
to the turn written first. A turn with no ``match`` takes any words no
pattern explains. With ``whole_utterance``, a turn counts only when its
readings leave no word unexplained but fillers; words explained in part get
the ``unexplained`` steps (``{unexplained}``: the words left). With no turn,
the state's (else the script's) ``fallback`` answers and the state stays.
When the words are not known (audio with no transcriber) the next free turn
in order answers, and its ``user`` text is reported as the transcript (its
captures are read from that text).
Patterns and captures: ``pipeflow.realtime.patterns`` and
``pipeflow.realtime.captures``; placeholders: ``pipeflow.realtime.templates``;
the dialogue engine that plays turns: ``pipeflow.realtime.dialogue``.

Steps run in order. Consecutive ``say`` steps make one spoken message; a
``call`` ends the response with a function call (consecutive calls are
parallel calls) and the steps after it run in the next response, once the
client sent the ``function_call_output`` and ``response.create``. In a
``say`` text or an argument, ``{name}`` is a capture, ``{result}`` the last
tool output as text and ``{result.total}`` (or ``{result.items.0.name}``) a
field of it parsed as JSON; ``{user}`` is the caller's words; ``{{`` and
``}}`` are literal braces. ``end: true`` ends the script: later inputs get
the fallback.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated, Any

import msgspec

from pipeflow.asr.options import TranscriberOptions
from pipeflow.errors import ConfigError
from pipeflow.realtime.captures import BUILTIN_TYPES, CaptureType, vocabulary_type
from pipeflow.realtime.patterns import (
    FILLERS,
    Found,
    Pattern,
    PatternError,
    compile_pattern,
    explained,
    unexplained,
)
from pipeflow.realtime.patterns import words_of as _words_of
from pipeflow.realtime.templates import check_template as _check_template
from pipeflow.realtime.templates import fill_arguments, render
from pipeflow.yamlsource import Located, load_yaml

__all__ = [
    "DEFAULT_SCRIPT",
    "Choice",
    "Script",
    "State",
    "Step",
    "Turn",
    "Unexplained",
    "fill_arguments",
    "load_script",
    "parse_script",
    "render",
]

class Step(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """One thing the model does: say text, call a tool, or end the script."""

    say: str | None = None
    """Text to speak; may use captures, {result}, {result.field} and {user}."""
    call: str | None = None
    """Name of a function (tool) to call."""
    arguments: dict[str, Any] | None = None
    """Arguments of the call, sent as JSON; strings may use placeholders, and a
    string that is one capture alone (``"{quantity}"``) gives its typed value."""
    end: bool = False
    """End the script after this response: later inputs get the fallback."""


class Turn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The model's answer to one user input."""

    steps: list[Step]
    """What the model does, in order."""
    match: str | list[str] | None = None
    """Patterns: case-insensitive regular expressions with typed captures
    ``{name:type}``; the turn whose pattern explains most of the words is chosen."""
    user: str = ""
    """The caller's words reported as the input transcription of audio input
    (when no transcriber is configured)."""
    repeat: bool = False
    """The turn may be chosen again (by default each turn is used once)."""
    when: str | list[str] | None = None
    """The dialogue states the turn is valid in (default: every state)."""
    then: str | None = None
    """The state after this turn, once its tools answered without ``ok: false``."""
    each: bool = False
    """Every reading of the words counts: the turn's calls are made once per reading
    ("three salads and four pizzas": two calls)."""
    refused: list[Step] | None = None
    """Steps after a tool answered ``ok: false`` (default: the script's ``refused``)."""


class State(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A dialogue state: what the caller is expected to say next."""

    expect: str | None = None
    """What the recogniser should listen for (passed to the transcriber)."""
    fallback: list[Step] | None = None
    """Steps when no turn explains the words in this state (default: the script's)."""
    unexplained: list[Step] | None = None
    """Steps when part of the words is unexplained in this state (default: the script's)."""


class Choice(msgspec.Struct):
    """The turn chosen for some words, with its readings (captured values)."""

    turn: int
    found: list[Found]
    score: int = 0


class Unexplained(msgspec.Struct):
    """Turns explained part of the words but not ``words``; ``unexplained`` steps name them."""

    words: str


class Script(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, dict=True):
    """A whole script: greeting, turns, fallback and default pacing."""

    turns: list[Turn] = msgspec.field(default_factory=list)
    """User turns and their answers."""
    greeting: str | None = None
    """Said in the first response the client asks for before any user input."""
    fallback: list[Step] = msgspec.field(
        default_factory=lambda: [Step(say="Sorry, I have nothing more to say.")]
    )
    """Steps used when no turn answers an input; the dialogue state stays."""
    unexplained: list[Step] | None = None
    """Steps when turns explain part of the words but leave others unexplained
    (``{unexplained}`` is what is left); default: the fallback. Nothing is called."""
    whole_utterance: bool = False
    """A turn answers only when its readings explain every word said but fillers;
    words explained in part get ``unexplained`` (else the fallback). Off: the turn
    that explains the most answers, as keywords ("weather") do."""
    tools: list[str] = msgspec.field(default_factory=list)
    """Tool modules (or ``module:name``) the script's calls name, for running the
    script by itself: ``pipeflow chat SCRIPT`` offers them. A pipeline's own
    ``agent.tools`` are what its calls use."""
    fillers: list[str] = msgspec.field(default_factory=list)
    """Words that may go unexplained, besides the built-in ones (``patterns.FILLERS``)."""
    refused: list[Step] | None = None
    """Steps after a tool answered ``ok: false`` (default: the turn's own next steps);
    either way the dialogue state stays, so the caller is asked again."""
    states: dict[str, State] = msgspec.field(default_factory=dict)
    """Dialogue states by name; the first is where a call starts."""
    vocabularies: dict[str, str] = msgspec.field(default_factory=dict)
    """Capture types made from word lists: type name -> ``module:attr`` naming a
    mapping (spoken name -> value), a list of names, or a function returning one."""
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

    @functools.cached_property
    def patterns(self) -> list[list[Pattern]]:
        """Each turn's compiled patterns (a script built in Python compiles on first use)."""
        types = _types(self, None)
        return [_compile_turn(turn, types, None, i) for i, turn in enumerate(self.turns)]

    @property
    def initial(self) -> str | None:
        """The state a call starts in (the first one), or None with no states."""
        return next(iter(self.states), None)

    @functools.cached_property
    def filler_words(self) -> frozenset[str]:
        """The words that may go unexplained: the built-in fillers and the script's."""
        return FILLERS | frozenset(w.casefold() for w in self.fillers)

    def match(self, words: str | None, used: set[int], state: str | None = None
              ) -> Choice | None:
        """The turn that answers ``words`` in ``state``, with its readings, or None.

        Args:
            words: the caller's words, or None when they are not known.
            used: indexes of turns already taken (turns with ``repeat`` stay available).
            state: the dialogue state (None: every turn is valid).
        """
        found = self.understand(words, used, state)
        return found if isinstance(found, Choice) else None

    def understand(self, words: str | None, used: set[int], state: str | None = None
                   ) -> Choice | Unexplained | None:
        """Like ``match``, but when turns explain only part of the words, what is left.

        With ``whole_utterance``, a turn answers only when its readings leave
        no word unexplained but fillers (``patterns.unexplained``); of those,
        the one that explains the most letters wins. When none does, the best
        partial reading's leftover words come back as ``Unexplained``, for the
        ``unexplained`` steps to name.
        """
        free = [i for i, turn in enumerate(self.turns)
                if (turn.repeat or i not in used) and _valid(turn, state)]
        if words is None:
            return next(filter(None, (self._in_order(i) for i in free)), None)
        text = _words_of(words)
        best: Choice | None = None
        partial: tuple[int, str] | None = None
        for i in free:
            for acted, spans in self._readings(i, text):
                score = explained(text, spans)
                rest = (unexplained(text, spans, self.filler_words) if self.whole_utterance
                        else "")
                if rest:
                    if partial is None or score > partial[0]:
                        partial = (score, rest)
                elif best is None or score > best.score:
                    best = Choice(i, acted, score)
        if best is not None:
            return best
        catch_all = next((Choice(i, []) for i in free if self.turns[i].match is None), None)
        if catch_all is not None:
            return catch_all
        return Unexplained(partial[1]) if partial is not None else None

    def _readings(self, index: int, text: str) -> list[tuple[list[Found], list[Found]]]:
        """Per pattern of turn ``index`` that matches: the readings acted on, and the
        spans they explain. Another match of the turn's patterns explains words too
        when it reads the same values (a second "yes", "that's all ... read it
        back"); one with other values does not, as the turn would drop them."""
        matches = [pattern.find(text, True) for pattern in self.patterns[index]]
        out = []
        for found in matches:
            acted = found if self.turns[index].each else found[:1]
            if not acted:
                continue
            values = [f.values for f in acted]
            spans = [f for more in matches for f in more if f.values in values]
            out.append((acted, spans))
        return out

    def _in_order(self, index: int) -> Choice | None:
        """Turn ``index`` taken for unknown words: its ``user`` text is what was said,
        so its captures come from that text. A turn with patterns but no ``user``
        text, or one that captures something its ``user`` text does not hold, is
        passed over (it would act on no words)."""
        patterns = self.patterns[index]
        if patterns and not self.turns[index].user:
            return None
        text = _words_of(self.turns[index].user)
        for pattern in patterns:
            found = pattern.find(text, self.turns[index].each)
            if found:
                return Choice(index, found, explained(text, found))
        if any(pattern.captures for pattern in patterns):
            return None
        return Choice(index, [])

    def choose(self, words: str | None, used: set[int], state: str | None = None) -> int | None:
        """Index of the turn that answers ``words`` (see ``match``), or None."""
        choice = self.match(words, used, state)
        return None if choice is None else choice.turn

    def calls(self) -> list[str]:
        """The function names the script's steps call, in order, each once."""
        steps = [s for turn in self.turns for s in turn.steps + (turn.refused or [])]
        steps += self.fallback + (self.refused or []) + (self.unexplained or [])
        return list(dict.fromkeys(s.call for s in steps if s.call))

    def texts(self) -> list[str]:
        """Every literal text the script says (for warming a speech cache)."""
        steps = [s for turn in self.turns for s in turn.steps + (turn.refused or [])]
        steps += self.fallback + (self.refused or [])
        steps += self.unexplained or []
        steps += [s for state in self.states.values()
                  for s in (state.fallback or []) + (state.unexplained or [])]
        out = [s.say for s in steps if s.say and "{" not in s.say]
        return ([self.greeting] if self.greeting else []) + out


def _valid(turn: Turn, state: str | None) -> bool:
    if turn.when is None or state is None:
        return True
    return state in ([turn.when] if isinstance(turn.when, str) else turn.when)


def _entries(match: str | list[str] | None) -> list[str]:
    return [match] if isinstance(match, str) else list(match or [])


# --- capture types and patterns ----------------------------------------------------


def _types(script: Script, located: Located | None) -> dict[str, CaptureType]:
    """The built-in capture types and the script's vocabularies."""
    types = dict(BUILTIN_TYPES)
    for name, ref in script.vocabularies.items():
        where = located.where(("vocabularies", name)) if located else script.source
        if name in BUILTIN_TYPES or not name.isidentifier():
            raise ConfigError(f"script vocabulary {name!r}: a vocabulary needs a name of its own "
                              f"(not {', '.join(BUILTIN_TYPES)}, letters, digits and _)", where)
        try:
            found = _import_near(ref, script.source)
        except ConfigError as exc:
            raise ConfigError(f"script vocabulary {name!r}: {exc}", where) from None
        if callable(found):
            found = found()
        ok = isinstance(found, dict) or (isinstance(found, list | tuple) and all(
            isinstance(n, str) for n in found))
        if not ok or not found:
            raise ConfigError(f"script vocabulary {name!r}: {ref} must name a mapping of spoken "
                              "names to values or a list of names (or a function returning "
                              f"one), with at least one name; got {type(found).__name__}", where)
        types[name] = vocabulary_type(name, found)
    return types


def _compile_turn(turn: Turn, types: dict[str, CaptureType], located: Located | None,
                  index: int) -> list[Pattern]:
    out = []
    for k, entry in enumerate(_entries(turn.match)):
        try:
            out.append(compile_pattern(entry, types))
        except PatternError as exc:
            path = ("turns", index, "match") + ((k,) if isinstance(turn.match, list) else ())
            where = located.where(path) if located else ""
            raise ConfigError(f"script turn {index + 1}: 'match' {exc}", where) from None
    return out


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
    script = _convert(data, Script, located, (), "script", "field")
    script.source = filename
    types = _types(script, located)
    compiled = [_compile_turn(turn, types, located, i) for i, turn in enumerate(script.turns)]
    script.__dict__["patterns"] = compiled
    for i, turn in enumerate(script.turns):
        if not turn.steps:
            raise ConfigError(f"script turn {i + 1} has no steps",
                              located.where(("turns", i, "steps")))
        _check_states(script, turn, located, i)
        names = _captured(compiled[i])
        for key, steps in (("steps", turn.steps), ("refused", turn.refused or [])):
            for j, step in enumerate(steps):
                _check_step(step, located, ("turns", i, key, j),
                            f"turn {i + 1}, {key.rstrip('s')} step {j + 1}"
                            if key != "steps" else f"turn {i + 1}, step {j + 1}", names)
    for j, step in enumerate(script.fallback):
        _check_step(step, located, ("fallback", j), f"fallback step {j + 1}")
    for j, step in enumerate(script.refused or []):
        _check_step(step, located, ("refused", j), f"refused step {j + 1}")
    left = frozenset({"unexplained"})
    for j, step in enumerate(script.unexplained or []):
        _check_step(step, located, ("unexplained", j), f"unexplained step {j + 1}", left)
    for name, state in script.states.items():
        for j, step in enumerate(state.fallback or []):
            _check_step(step, located, ("states", name, "fallback", j),
                        f"state {name!r}, fallback step {j + 1}")
        for j, step in enumerate(state.unexplained or []):
            _check_step(step, located, ("states", name, "unexplained", j),
                        f"state {name!r}, unexplained step {j + 1}", left)
    if script.greeting is not None:
        _check_template(script.greeting, located.where(("greeting",)), "greeting")
    return script


def _captured(patterns: list[Pattern]) -> frozenset[str]:
    """The captures every pattern of a turn has (the ones its steps may use)."""
    if not patterns:
        return frozenset()
    return frozenset.intersection(*(frozenset(p.captures) for p in patterns))


def _check_states(script: Script, turn: Turn, located: Located, index: int) -> None:
    known = ", ".join(repr(s) for s in script.states) or "none (add a 'states' mapping)"
    for field in ("when", "then"):
        value = getattr(turn, field)
        names = [value] if isinstance(value, str) else list(value or [])
        for k, name in enumerate(names):
            if name not in script.states:
                path: tuple[str | int, ...] = ("turns", index, field)
                path += (k,) if isinstance(value, list) else ()
                raise ConfigError(f"script turn {index + 1}: '{field}' names the state "
                                  f"{name!r}, which is not in 'states'; the states are {known}",
                                  located.where(path))


def _import_near(ref: str, source: str) -> Any:
    """Import ``module:attr``; a module not found is looked for next to the script too."""
    from pipeflow.registry import import_ref, importable

    try:
        return import_ref(ref, "vocabulary")
    except ConfigError:
        script = Path(source)
        if not script.is_file():
            raise
        folder = script.resolve().parent
        with importable(str(folder.parent)), importable(str(folder)):
            return import_ref(ref, "vocabulary")


def _check_step(step: Step, located: Located, path: tuple[str | int, ...], label: str,
                names: frozenset[str] = frozenset()) -> None:
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
        _check_template(step.say, located.where((*path, "say")), label, names)
    for key, value in _strings(step.arguments or {}):
        _check_template(value, located.where((*path, "arguments", key)), label, names)


def _strings(value: Any, key: str = "") -> list[tuple[str, str]]:
    """(top-level argument name, string) of every string inside ``value``."""
    if isinstance(value, str):
        return [(key, value)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(v, key or str(k))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v, key)]
    return []


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
