"""The offline chat model: the local server's script engine as Chat Completions chunks.

``ScriptChat`` answers a message list with the same ``Dialogue`` the local
Realtime server plays (turn choice, typed captures, dialogue states, the
fallback), so a typed or cascaded call meets the same agent as a Realtime
one, and writes the answer as the ``chat.completion.chunk`` objects OpenAI
streams: content deltas word by word, then tool calls (id and name first,
the arguments in pieces), then the ``finish_reason``. The cascade parses
them with the same ``ChatStream`` it uses for a real provider.

It is stateful per conversation (the dialogue state, turns used, steps left
after a tool call), like a ``ServerSession``: one ``ScriptChat`` per call.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import msgspec

from pipeflow.realtime.dialogue import Call, Dialogue
from pipeflow.realtime.script import DEFAULT_SCRIPT, Script

__all__ = ["ScriptChat"]

_ids = itertools.count(1)


class ScriptChat:
    """Plays a ``Script`` as a chat model, one completion per call of ``complete``."""

    def __init__(self, script: Script | None = None, model: str = "pipeflow-script") -> None:
        self.script = script or DEFAULT_SCRIPT
        self.model = model
        self.dialogue = Dialogue(self.script)
        self._seen = 0  # messages already read

    def _read(self, messages: list[dict[str, Any]]) -> bool:
        """Feed the new messages to the dialogue; whether the last ones are tool outputs."""
        outputs_in = False
        for message in messages[self._seen:]:
            role = message.get("role")
            if role == "user":
                self.dialogue.hear(str(message.get("content") or ""))
                outputs_in = False
            elif role == "tool":
                self.dialogue.tool_output(str(message.get("content") or ""))
                outputs_in = True
        self._seen = len(messages)
        return outputs_in

    def complete(self, messages: list[dict[str, Any]],
                 tools: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The chunks of the answer to ``messages`` (the whole conversation so far).

        ``tools`` is the request's ``tools``: a call of the script to a function
        the request does not declare is left out, as a chat model never calls one
        (None: no request to hold it to, every call is made).
        """
        plan = self.dialogue.respond(self._read(messages))
        calls = plan.calls
        if tools is not None:
            declared = {tool.get("function", {}).get("name") for tool in tools
                        if isinstance(tool, dict) and isinstance(tool.get("function"), dict)}
            calls = [call for call in calls if call.name in declared]
        return self._chunks(plan.text, calls)

    def _chunks(self, text: str, calls: list[Call]) -> list[dict[str, Any]]:
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
            arguments = msgspec.json.encode(step.arguments).decode()
            call_id = f"call_pf{next(_ids)}"
            out.append(chunk({"tool_calls": [{
                "index": index, "id": call_id, "type": "function",
                "function": {"name": step.name, "arguments": ""}}]}))
            for start in range(0, len(arguments), 8):
                out.append(chunk({"tool_calls": [{
                    "index": index, "function": {"arguments": arguments[start:start + 8]}}]}))
        out.append(chunk({}, "tool_calls" if calls else "stop"))
        return out
