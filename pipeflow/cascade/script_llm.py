"""The offline chat model: the local server's script engine as Chat Completions chunks.

``ScriptChat`` answers a message list the way the local Realtime server's
script would answer the same conversation (``Script.choose`` picks the turn
for the caller's words, ``render`` fills ``{result}`` and ``{user}``), and
writes the answer as the ``chat.completion.chunk`` objects OpenAI streams:
content deltas word by word, then tool calls (id and name first, the
arguments in pieces), then the ``finish_reason``. The cascade parses them
with the same ``ChatStream`` it uses for a real provider.

It is stateful per conversation (turns used, steps left after a tool
call), like a ``ServerSession``: one ``ScriptChat`` per call.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import msgspec

from pipeflow.realtime.script import DEFAULT_SCRIPT, Script, Step, render

__all__ = ["ScriptChat"]

_ids = itertools.count(1)


class ScriptChat:
    """Plays a ``Script`` as a chat model, one completion per call of ``complete``."""

    def __init__(self, script: Script | None = None, model: str = "pipeflow-script") -> None:
        self.script = script or DEFAULT_SCRIPT
        self.model = model
        self._seen = 0  # messages already read
        self._used: set[int] = set()
        self._ended = False
        self._words = ""
        self._result: str | None = None
        self._continuation: list[Step] | None = None
        self._pending: tuple[str, int | None] | None = None
        self._responses = 0

    def _read(self, messages: list[dict[str, Any]]) -> None:
        for message in messages[self._seen:]:
            role = message.get("role")
            if role == "user":
                words = str(message.get("content") or "")
                turn = None if self._ended else self.script.choose(words, self._used)
                if turn is not None and not self.script.turns[turn].repeat:
                    self._used.add(turn)
                self._pending = (words, turn)
                self._continuation = None
            elif role == "tool":
                self._result = str(message.get("content") or "")
        self._seen = len(messages)

    def _steps(self) -> list[Step]:
        cont, self._continuation = self._continuation, None
        if cont is not None:
            return cont
        pending, self._pending = self._pending, None
        if pending is None and self._responses == 0 and self.script.greeting:
            return [Step(say=self.script.greeting)]
        if pending is None:
            return list(self.script.fallback)
        self._words, turn = pending
        if turn is None:
            return list(self.script.fallback)
        return list(self.script.turns[turn].steps)

    def complete(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The chunks of the answer to ``messages`` (the whole conversation so far)."""
        self._read(messages)
        steps = self._steps()
        self._responses += 1
        says: list[str] = []
        calls: list[Step] = []
        rest = list(steps)
        while rest and rest[0].say is not None:
            says.append(render(rest.pop(0).say or "", self._result, self._words))
        while rest and rest[0].call is not None:
            calls.append(rest.pop(0))
        if rest and rest[0].end and not calls:
            self._ended = True
            rest = []
        self._continuation = rest if calls else None
        return self._chunks(" ".join(says), calls)

    def _chunks(self, text: str, calls: list[Step]) -> list[dict[str, Any]]:
        cid = f"chatcmpl-pf{next(_ids)}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": self.model, "system_fingerprint": "fp_pipeflow",
                    "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                 "finish_reason": finish}]}

        out = [chunk({"role": "assistant", "content": "" if text or not calls else None,
                      "refusal": None})]
        words = text.split(" ") if text else []
        for i, word in enumerate(words):
            out.append(chunk({"content": word if i == 0 else " " + word}))
        for index, step in enumerate(calls):
            arguments = msgspec.json.encode(step.arguments or {}).decode()
            call_id = f"call_pf{next(_ids)}"
            out.append(chunk({"tool_calls": [{
                "index": index, "id": call_id, "type": "function",
                "function": {"name": step.call, "arguments": ""}}]}))
            for start in range(0, len(arguments), 8):
                out.append(chunk({"tool_calls": [{
                    "index": index, "function": {"arguments": arguments[start:start + 8]}}]}))
        out.append(chunk({}, "tool_calls" if calls else "stop"))
        return out
