"""When a failed model request is tried again, and how long to wait first.

A request is retried only before anything of its answer was used (no text
streamed, no audio spoken): a 429 waits what its ``retry-after`` asks, when
that is at most ``max_wait_s``; a 5xx, a timeout or a refused connection
waits an exponential back-off. A 401, a 4xx, a stream cut mid-answer are
never retried. At most ``retries`` more tries, so a call never hangs on a
model that keeps failing. I/O-free: the stage sleeps the delay it is given.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from pipeflow.cascade.chat import ChatError

__all__ = ["RetryPolicy", "retry_delay"]

_RETRIED_CODES = frozenset({"timeout", "unreachable"})


class RetryPolicy(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """How a stage retries a model request that failed before its answer began."""

    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    """More tries after the first (0: report the first failure)."""
    backoff_s: Annotated[float, msgspec.Meta(ge=0)] = 0.25
    """First back-off after a 5xx or a failed connection; doubled each try."""
    max_wait_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    """Longest wait: a 429 asking for more is reported at once, back-offs are capped."""


def retry_delay(error: ChatError, attempt: int, policy: RetryPolicy) -> float | None:
    """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 1), or None.

    Returns:
        None when ``error`` is not worth another try or the tries are used up.
    """
    if attempt > policy.retries:
        return None
    backoff = min(policy.backoff_s * 2 ** (attempt - 1), policy.max_wait_s)
    if error.status == 429:
        if error.retry_after is None:
            return backoff
        return error.retry_after if error.retry_after <= policy.max_wait_s else None
    if error.status >= 500 or error.code in _RETRIED_CODES:
        return backoff
    return None
