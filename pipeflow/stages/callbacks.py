"""The ``callbacks`` stage: delivers conversation events to callbacks and webhooks.

Frames pass through untouched and without waiting: events go into a queue
that one task drains in order, so a slow callback or webhook never delays
audio. At the end of the stream the queue is drained (bounded) before the
end is passed on, so ``session_closed`` callbacks run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec

from pipeflow.errors import ConfigError
from pipeflow.events import EVENT_NAMES, Event, EventBus, check_event_name, event_for, make_event
from pipeflow.frames import EndOfStream, Frame
from pipeflow.registry import import_ref
from pipeflow.stage import Frames, Stage

__all__ = ["Callbacks", "CallbacksOptions", "post_webhook"]

log = logging.getLogger("pipeflow.callbacks")


class CallbacksOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Options of the ``callbacks`` stage."""

    callbacks: dict[str, str | list[str]] = msgspec.field(default_factory=dict)
    """Event name -> 'module:function' (added to the agent's callbacks)."""
    webhook: str | None = None
    """URL that receives each event as a JSON POST."""
    webhook_events: list[str] = msgspec.field(default_factory=lambda: list(EVENT_NAMES))
    """Which events are posted to the webhook."""
    webhook_retries: int = 3
    """Attempts after the first failure, with exponential backoff."""
    webhook_timeout_s: float = 5.0
    """Timeout of one POST."""
    webhook_backoff_s: float = 0.25
    """First retry delay; doubles each attempt."""
    webhook_headers: dict[str, str] = msgspec.field(default_factory=dict)
    """Extra HTTP headers (e.g. an Authorization token from ${ENV})."""
    drain_timeout_s: float = 10.0
    """How long to wait for queued events at the end of the stream."""


class Callbacks(Stage):
    """Calls event callbacks (Python or YAML ``module:function``) and posts webhooks."""

    name = "callbacks"
    Options = CallbacksOptions
    consumes = (Frame,)
    produces = (Frame,)

    def _bus(self) -> EventBus:
        bus = self.ctx.pipeline.event_bus()
        for event, refs in self.options.callbacks.items():
            check_event_name(event)
            for ref in [refs] if isinstance(refs, str) else refs:
                fn = import_ref(ref, f"callback for {event!r}")
                if not callable(fn):
                    raise ConfigError(f"callbacks.{event}: {ref!r} is not callable")
                bus.on(event, fn)
        for event in self.options.webhook_events:
            check_event_name(event)
        return bus

    async def process(self, frames: Frames) -> Frames:
        bus = self._bus()
        hooked = set(self.options.webhook_events) if self.options.webhook else set()
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        worker = self.ctx.spawn(self._deliver(queue, bus), name=f"{self.ctx.name}.deliver")
        session_id = self.ctx.pipeline.session_id
        closed = False
        try:
            async for frame in frames:
                name = event_for(frame)
                if name is not None and (bus.wants(name) or name in hooked):
                    if name == "session_closed":
                        if closed:
                            yield frame
                            continue
                        closed = True
                    queue.put_nowait(make_event(name, frame, session_id))
                if isinstance(frame, EndOfStream):
                    queue.put_nowait(None)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(asyncio.shield(worker), self.options.drain_timeout_s)
                yield frame
        finally:
            worker.cancel()

    async def _deliver(self, queue: asyncio.Queue[Event | None], bus: EventBus) -> None:
        opts = self.options
        hooked = set(opts.webhook_events)
        client = None
        if opts.webhook:
            import httpx

            client = httpx.AsyncClient(timeout=opts.webhook_timeout_s)
        try:
            while (event := await queue.get()) is not None:
                await bus.dispatch(event)
                if client is not None and event.name in hooked:
                    await post_webhook(client, opts, event)
        finally:
            if client is not None:
                await client.aclose()


async def post_webhook(client: Any, opts: CallbacksOptions, event: Event) -> bool:
    """POST one event as JSON, retrying with backoff; returns whether it was delivered."""
    body = msgspec.json.encode(event)
    headers = {"content-type": "application/json", **opts.webhook_headers}
    delay = opts.webhook_backoff_s
    for attempt in range(opts.webhook_retries + 1):
        try:
            response = await client.post(opts.webhook, content=body, headers=headers)
            if response.status_code < 500 and response.status_code != 429:
                if response.status_code >= 400:
                    log.warning("webhook refused event %r: HTTP %d", event.name,
                                response.status_code)
                    return False
                return True
            reason = f"HTTP {response.status_code}"
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if attempt < opts.webhook_retries:
            log.info("webhook attempt %d for event %r failed (%s); retrying", attempt + 1,
                     event.name, reason)
            await asyncio.sleep(delay)
            delay *= 2
        else:
            log.warning("webhook gave up on event %r after %d attempts: %s", event.name,
                        attempt + 1, reason)
    return False
