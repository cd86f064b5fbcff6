"""The health server: ``/healthz``, ``/readyz`` and ``/metrics`` of a worker or a pool.

- ``/healthz``: 200 while the process and its event loop answer (liveness).
- ``/readyz``: 200 while the worker accepts jobs, 503 with the reason when
  it is draining, full or above its load threshold (readiness); both carry
  the current load as JSON.
- ``/metrics``: the Prometheus text exposition of ``WorkerMetrics``.

A small Starlette app served by uvicorn on the worker's own event loop, so
a blocked loop shows up as a failing health check, which is the point. For
a pool (``pool.Pool``) it runs in the supervisor, whose loop runs no jobs:
it answers while a process is blocked and says which one, and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeflow.errors import ConfigError
from pipeflow.worker.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from pipeflow.worker.pool import Pool
    from pipeflow.worker.runner import Worker

__all__ = ["HealthServer", "health_app"]


def _load(worker: Worker) -> dict[str, Any]:
    ready, reason = worker.readiness()
    return {
        "worker": worker.id,
        "agent": worker.options.agent_name,
        "state": worker.state,
        "ready": ready,
        "reason": reason,
        "running": worker.running,
        "max_jobs": worker.options.max_jobs,
        "load": round(worker.load, 4),
        "load_threshold": worker.options.load_threshold,
        "counts": dict(worker.counts),
    }


def _status(source: Worker | Pool) -> tuple[bool, bool, dict[str, Any]]:
    """``(alive, ready, body)`` of a pool (its own ``health()``) or of one worker."""
    from pipeflow.worker.pool import Pool

    if isinstance(source, Pool):
        return source.health()
    body = _load(source)
    return source.state != "stopped", bool(body["ready"]), body


def health_app(worker: Worker | Pool) -> Starlette:
    """The ASGI app answering for ``worker`` (a ``Worker`` or a ``Pool``)."""

    async def healthz(request: Request) -> Response:
        alive, _ready, body = _status(worker)
        body["status"] = "ok" if alive else "stopped"
        return JSONResponse(body, status_code=200 if alive else 503)

    async def readyz(request: Request) -> Response:
        _alive, ready, body = _status(worker)
        body["status"] = "ready" if ready else "unavailable"
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(worker.metrics.render(), media_type=CONTENT_TYPE)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ]
    )


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the worker (it drains)."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


class HealthServer:
    """Serves ``health_app(worker)`` on ``host:port`` until ``stop()``.

    Args:
        worker: the worker (or pool) to report on.
        host: address to listen on.
        port: port to listen on (0 picks a free one; see ``port`` once started).
    """

    def __init__(self, worker: Worker | Pool, host: str = "127.0.0.1", port: int = 0) -> None:
        self.worker = worker
        self.host = host
        self.port = port
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind the port and start serving in the background.

        Raises:
            ConfigError: the address cannot be bound (in use, not local...).
        """
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"the health server cannot listen on {self.host}:{self.port}: {exc.strerror}; "
                "choose another health_port (0 picks a free one)"
            ) from exc
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            health_app(self.worker), log_level="warning", access_log=False, lifespan="off"
        )
        self._server = _QuietServer(config)
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[sock]), name="health-server"
        )
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()

    async def stop(self) -> None:
        """Stop serving and wait for the server to close."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
