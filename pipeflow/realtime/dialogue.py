"""The script engine: one conversation played from a ``Script``, with no I/O.

``Dialogue`` is what the local Realtime server (``ServerSession``) and the
offline chat model (``ScriptChat``) share, so spoken and typed callers meet
the same agent. The caller's words go in through ``hear``, tool outputs
through ``tool_output``; ``respond`` says what the next response does: the
texts to say, the calls to make (name and arguments, filled from the
captures), and whether the script ends.

State: the dialogue state (``Script.states``), the turns used, the steps
left after a call (they run once its outputs are in) and the last tool
output. A turn's ``then`` moves the state once its tools answered; a tool
answer ``{"ok": false, ...}`` keeps the state and plays the ``refused``
steps, so the caller is asked again. Words no turn explains get the
fallback and change nothing; so do words a turn explains only in part (the
``unexplained`` steps, which can name what was not understood).
"""

from __future__ import annotations

from typing import Any

import msgspec

from pipeflow.realtime.script import Choice, Script, Step, Unexplained, fill_arguments, render

__all__ = ["Call", "Dialogue", "Plan"]


class Call(msgspec.Struct, frozen=True):
    """A function call the response makes."""

    name: str
    arguments: dict[str, Any]


class Plan(msgspec.Struct):
    """What one response does: say ``text``, then make ``calls``; ``end`` ends the script."""

    text: str = ""
    calls: list[Call] = msgspec.field(default_factory=list)
    end: bool = False
    turn: int | None = None
    """The script turn it plays (None: greeting, fallback or given text)."""


class _Heard(msgspec.Struct):
    words: str
    choice: Choice | Unexplained | None


class _Pending(msgspec.Struct):
    """Steps waiting for the outputs of the calls before them."""

    steps: list[Step]
    turn: int | None
    values: dict[str, Any]


class Dialogue:
    """One conversation with a script.

    Args:
        script: what the agent says and does.

    Attributes:
        state: the current dialogue state (None when the script has none).
        ended: whether the script ended (later inputs get the fallback).
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self.state: str | None = script.initial
        self.ended = False
        self._used: set[int] = set()
        self._heard: _Heard | None = None
        self._after: _Pending | None = None
        self._outputs: list[str] = []
        self._result: str | None = None
        self._words = ""
        self._responses = 0

    @property
    def expect(self) -> str | None:
        """What the caller is expected to say next (the state's ``expect``)."""
        state = self.script.states.get(self.state or "")
        return state.expect if state else None

    def hear(self, words: str | None) -> str:
        """The caller said ``words`` (None: audio whose words are not known).

        Returns:
            The words to report as the caller's transcript: ``words``, or the
            ``user`` text of the turn taken in order when they are unknown.
        """
        choice = None if self.ended else self.script.understand(words, self._used, self.state)
        self._take(choice)
        self._heard = _Heard(words or "", choice)
        if words is None:
            return self.script.turns[choice.turn].user if isinstance(choice, Choice) else ""
        return words

    def tool_output(self, output: str) -> None:
        """A call's output arrived (the JSON or text the tool returned)."""
        self._outputs.append(output)
        self._result = output

    def cancel(self) -> None:
        """The response was cancelled: the steps waiting for its calls are dropped."""
        self._after = None
        self._outputs.clear()

    def respond(self, outputs_in: bool = True) -> Plan:
        """The next response.

        Args:
            outputs_in: whether every call of the last response has its output;
                when not and the caller spoke again, the new words are answered
                and the steps waiting for the outputs are dropped.
        """
        after, self._after = self._after, None
        self._responses += 1
        if after is not None and (outputs_in or self._heard is None):
            return self._continue(after)
        heard, self._heard = self._heard, None
        self._outputs.clear()
        if heard is None and self._responses == 1 and self.script.greeting:
            return self._play([], None, {}, greeting=self.script.greeting)
        if heard is None:
            choice = None if self.ended else self.script.match(None, self._used, self.state)
            self._take(choice)
            heard = _Heard("", choice)
        self._words = heard.words
        if heard.choice is None:
            return self._play(self._fallback(), None, {})
        if isinstance(heard.choice, Unexplained):
            return self._play(self._unexplained(), None, {"unexplained": heard.choice.words})
        index = heard.choice.turn
        readings = [found.values for found in heard.choice.found] or [{}]
        return self._play(list(self.script.turns[index].steps), index, readings[0], readings)

    # -- playing steps ------------------------------------------------------------

    def _continue(self, after: _Pending) -> Plan:
        outputs, self._outputs = self._outputs, []
        refusal = next((out for out in outputs if _refused(out)), None)
        steps = after.steps
        if refusal is not None:
            self._result = refusal
            turn = self.script.turns[after.turn] if after.turn is not None else None
            refused = (turn.refused if turn else None) or self.script.refused
            if refused is not None:
                steps = list(refused)
            return self._play(steps, None, after.values)
        return self._play(steps, after.turn, after.values)

    def _play(self, steps: list[Step], turn: int | None, values: dict[str, Any],
              readings: list[dict[str, Any]] | None = None, greeting: str | None = None
              ) -> Plan:
        """Leading says as one text, then the calls (once per reading); the rest waits."""
        says: list[str] = [render(greeting, self._result, self._words)] if greeting else []
        rest = list(steps)
        while rest and rest[0].say is not None:
            says.append(render(rest.pop(0).say or "", self._result, self._words, values))
        calls: list[Call] = []
        call_steps: list[Step] = []
        while rest and rest[0].call is not None:
            call_steps.append(rest.pop(0))
        for reading in readings or [values]:
            for step in call_steps:
                arguments = fill_arguments(step.arguments or {}, self._result, self._words,
                                           reading)
                calls.append(Call(step.call or "", arguments))
        if readings:
            values = readings[-1]
        plan = Plan(text=" ".join(says), calls=calls, turn=turn)
        if calls:
            self._after = _Pending(rest, turn, values)
            return plan
        if rest and rest[0].end:
            self.ended = plan.end = True
        if turn is not None and self.script.turns[turn].then:
            self.state = self.script.turns[turn].then
        return plan

    def _fallback(self) -> list[Step]:
        state = self.script.states.get(self.state or "")
        if state is not None and state.fallback is not None and not self.ended:
            return list(state.fallback)
        return list(self.script.fallback)

    def _unexplained(self) -> list[Step]:
        """The state's, else the script's steps for words explained in part; else the fallback."""
        state = self.script.states.get(self.state or "")
        if state is not None and state.unexplained is not None:
            return list(state.unexplained)
        if self.script.unexplained is not None:
            return list(self.script.unexplained)
        return self._fallback()

    def _take(self, choice: Choice | Unexplained | None) -> None:
        if isinstance(choice, Choice) and not self.script.turns[choice.turn].repeat:
            self._used.add(choice.turn)


def _refused(output: str) -> bool:
    """Whether a tool output is ``{"ok": false, ...}`` (the tool said no)."""
    if '"ok"' not in output:
        return False
    try:
        data = msgspec.json.decode(output)
    except msgspec.DecodeError:
        return False
    return isinstance(data, dict) and data.get("ok") is False
