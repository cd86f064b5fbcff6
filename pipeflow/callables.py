"""Calling user code (tools, job entry points) from the event loop without blocking it.

A low-level helper: tools and jobs both use it, so it sits below both.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["call_function", "is_async_callable"]


def is_async_callable(function: Callable[..., Any]) -> bool:
    """Whether calling ``function`` gives a coroutine (async def, or an object whose
    ``__call__`` is one; ``functools.partial`` is seen through)."""
    if inspect.iscoroutinefunction(function):
        return True
    return callable(function) and not inspect.isroutine(function) and (
        inspect.iscoroutinefunction(type(function).__call__)
    )


async def call_function(
    function: Callable[..., Any], /, *args: Any, on_loop: bool = False, **kwargs: Any
) -> Any:
    """Call a sync or async function from the event loop without blocking it.

    An async function is awaited. A plain function runs in the loop's thread
    pool, so a blocking one (``time.sleep``, a slow driver, heavy CPU in C)
    stalls only itself, not every other job and call of the process; what it
    returns is awaited when awaitable. ``on_loop=True`` calls it on the loop
    instead: a little faster, for code known never to block. A plain function
    cancelled (a timeout) while in its thread is no longer awaited, but its
    thread runs on until the function returns: Python cannot stop a thread.
    """
    if is_async_callable(function):
        return await function(*args, **kwargs)
    if on_loop:
        value = function(*args, **kwargs)
    else:
        value = await asyncio.to_thread(function, *args, **kwargs)
    if inspect.isawaitable(value):
        value = await value
    return value
