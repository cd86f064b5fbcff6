"""Check Realtime events against the official ``openai`` SDK's pydantic models.

The SDK's models are generated from the OpenAI API specification: GA under
``openai.types.realtime``, beta under ``openai.types.beta.realtime``. An event
conforms when its union (``RealtimeServerEvent`` / ``RealtimeClientEvent``)
validates it and no object in it has a field its model does not declare (the
SDK's models accept extra fields silently; the check does not, so a field of
the other shape, a misspelling or a stray ``null`` is caught too).

Also here: ``LoggingProxy``, a WebSocket proxy on 127.0.0.1 that keeps every
message of both directions, so a whole call between pipeflow and a server can
be checked event by event.
"""

from __future__ import annotations

import asyncio
import contextlib
import typing
from typing import Any, Literal

import msgspec
import pydantic
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

pytest.importorskip("openai", reason="the openai SDK (a dev dependency) is not installed")

from openai.types import realtime as ga_models
from openai.types.beta import realtime as beta_models

__all__ = [
    "SDK_EXTRAS",
    "LoggingProxy",
    "Shape",
    "Side",
    "conformance_problems",
    "event_types",
]

Shape = Literal["ga", "beta"]
Side = Literal["client", "server"]

_UNIONS: dict[tuple[Shape, Side], Any] = {
    ("ga", "server"): ga_models.RealtimeServerEvent,
    ("ga", "client"): ga_models.RealtimeClientEvent,
    ("beta", "server"): beta_models.RealtimeServerEvent,
    ("beta", "client"): beta_models.RealtimeClientEvent,
}

SDK_EXTRAS: dict[str, set[str]] = {
    "session.created": {"session.id", "session.object"},
    "session.updated": {"session.id", "session.object"},
}
"""Fields the OpenAI API sends that the SDK's session models do not declare
(the API's own examples carry ``"object": "realtime.session"`` and the
``sess_...`` id; the GA model has neither, the beta model lacks ``object``)."""


def _models(annotation: Any) -> list[type[pydantic.BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _by_type(shape: Shape, side: Side) -> dict[str, type[pydantic.BaseModel]]:
    """Event ``type`` -> the SDK's model of it, for one shape and side."""
    found: dict[str, type[pydantic.BaseModel]] = {}
    for model in _models(_UNIONS[shape, side]):
        for name in typing.get_args(model.model_fields["type"].annotation):
            found[name] = model
    return found


_MODELS = {key: _by_type(*key) for key in _UNIONS}


def event_types(shape: Shape, side: Side) -> set[str]:
    """Every event ``type`` the SDK's union of ``shape`` and ``side`` defines."""
    return set(_MODELS[shape, side])


def _extras(value: Any, path: str) -> list[str]:
    """Dotted paths of fields no model declares, anywhere under ``value``."""
    out: list[str] = []
    if isinstance(value, pydantic.BaseModel):
        out += [f"{path}{name}" for name in value.__pydantic_extra__ or {}]
        for name in type(value).model_fields:
            out += _extras(getattr(value, name), f"{path}{name}.")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _extras(item, f"{path[:-1]}[{i}].")
    return out


def conformance_problems(data: str | bytes, shape: Shape, side: Side) -> list[str]:
    """What is wrong with one event against the SDK (empty: it conforms)."""
    try:
        obj = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        return [f"not JSON: {exc}"]
    if not isinstance(obj, dict):
        return ["not a JSON object"]
    kind = obj.get("type")
    models = _MODELS[shape, side]
    if kind not in models:
        return [f"{kind!r} is not a {shape} {side} event of the SDK"]
    try:
        model = models[kind].model_validate(obj)
    except pydantic.ValidationError as exc:
        return [f"{kind}: {err['msg']} at {'.'.join(map(str, err['loc']))}"
                for err in exc.errors()]
    allowed = SDK_EXTRAS.get(kind, set()) if side == "server" else set()
    return [f"{kind}: unexpected field {path!r}" for path in _extras(model, "")
            if path not in allowed]


class LoggingProxy:
    """A WebSocket proxy on 127.0.0.1 that logs every message both ways.

    A connection to ``url`` (same path and query as the upstream server's)
    opens one to ``upstream`` with the client's ``Authorization`` and
    ``OpenAI-Beta`` headers, then copies messages both ways, appending each
    to ``log`` as ``(side, data)`` where ``side`` is who sent it.

    Args:
        upstream: ``ws://HOST:PORT`` of the real server (no path).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.log: list[tuple[Side, str | bytes]] = []
        self._server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The proxy's Realtime URL."""
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    async def __aenter__(self) -> LoggingProxy:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None,
                                   max_size=None)
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def of(self, side: Side) -> list[str | bytes]:
        """The messages one side sent, in order."""
        return [data for who, data in self.log if who == side]

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        headers = {name: ws.request.headers[name] for name in ("Authorization", "OpenAI-Beta")
                   if name in ws.request.headers}
        async with connect(self.upstream + ws.request.path, additional_headers=headers,
                           compression=None, max_size=None) as up:

            async def pump(src: Any, dst: Any, side: Side) -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for message in src:
                        self.log.append((side, message))
                        await dst.send(message)
                await dst.close()

            await asyncio.gather(pump(ws, up, "client"), pump(up, ws, "server"))
