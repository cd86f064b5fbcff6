"""Where a cascade stage's model is: a server named in the YAML, OpenAI, or offline.

One rule for the ``stt``, ``llm`` and ``tts`` stages: ``base_url`` when it is
set (any OpenAI-compatible server), else the OpenAI API when the key's
variable is set, else the offline engine in-process. The key is read from
the environment only, and never written to a log or a frame.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pipeflow.cascade.chat import ChatError
from pipeflow.cascade.retry import RetryPolicy, retry_delay

__all__ = ["OPENAI_BASE_URL", "Endpoint", "endpoint", "with_retries"]

OPENAI_BASE_URL = "https://api.openai.com/v1"

T = TypeVar("T")


class Endpoint:
    """A model's API root and key; an empty ``base_url`` means offline."""

    __slots__ = ("api_key", "base_url")

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.api_key = api_key

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"Endpoint({self.base_url or 'offline'!r})"


def endpoint(base_url: str, api_key_env: str) -> Endpoint:
    """The endpoint a stage with these options talks to (see the module docstring)."""
    key = os.environ.get(api_key_env, "") if api_key_env else ""
    return Endpoint(base_url or (OPENAI_BASE_URL if key else ""), key)


async def with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy,
                       on_retry: Callable[[ChatError, float], None] | None = None) -> T:
    """``await call()``, tried again as ``policy`` says while it raises ``ChatError``.

    ``on_retry(error, delay)`` is told of each retry before its wait.

    Raises:
        ChatError: the last failure, when it is not retried.
    """
    attempt = 1
    while True:
        try:
            return await call()
        except ChatError as exc:
            delay = retry_delay(exc, attempt, policy)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(exc, delay)
            await asyncio.sleep(delay)
            attempt += 1
