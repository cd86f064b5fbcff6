"""Decoding in a child process, so a process that serves calls keeps its event loop.

pocketsphinx holds the GIL while it decodes. In a thread of a process that
serves calls (the gateway, a worker, the standalone local Realtime server),
a long turn of noise froze every other call's audio and ``/healthz`` for
the whole decode. ``ProcessTranscriber`` has the same ``transcribe`` as the
transcriber it wraps, built in a child process from the same
``TranscriberOptions``; the calling thread only waits on a pipe, with the
GIL released. Decoders of one process are shared: every server of a process
that asks for the same options gets the same pool (``transcriber_for``).

Processes that serve calls switch it on once (``decode_in_processes()``);
a single ``pipeflow run`` keeps decoding in a thread, where a child process
would only add its start-up time.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from pipeflow.asr.options import TranscriberOptions, build_transcriber
from pipeflow.errors import ConfigError, LocalError

__all__ = ["ProcessTranscriber", "decode_in_processes", "decoding_in_processes",
           "shared_process_transcriber", "transcriber_for"]

_ENV = "PIPEFLOW_ASR_PROCESSES"
_switch = {"on": os.environ.get(_ENV, "") not in ("", "0")}


def decode_in_processes(on: bool = True) -> None:
    """Have every transcriber built from now on (``transcriber_for``) decode in child processes."""
    _switch["on"] = on


def decoding_in_processes() -> bool:
    """Whether ``transcriber_for`` gives process transcribers (or ``PIPEFLOW_ASR_PROCESSES=1``)."""
    return _switch["on"]


def transcriber_for(options: TranscriberOptions, where: str = "script") -> Any:
    """The transcriber a script's ``transcriber`` section describes.

    In a process that decodes in child processes, a ``ProcessTranscriber``
    shared by everything asking for the same options; else the transcriber
    itself (``build_transcriber``).
    """
    if decoding_in_processes():
        return shared_process_transcriber(options, where)
    return build_transcriber(options, where)


@functools.lru_cache(maxsize=8)
def shared_process_transcriber(options: TranscriberOptions, where: str = "script"
                               ) -> ProcessTranscriber:
    """The one ``ProcessTranscriber`` of this process for these options."""
    return ProcessTranscriber(options, where)


class ProcessTranscriber:
    """A transcriber whose decoding runs in child processes.

    Args:
        options: the ``transcriber`` section the children build their
            transcriber from (``build_transcriber``).
        where: the script file, for error messages.
        processes: decodes that can run at once (each child holds its own
            models); default: 2, or 1 on a one-core machine.
        timeout_s: longest one decode may take; past it the children are
            replaced and the call fails with ``LocalError``.

    Calls may come from several threads at once. A child that dies is
    replaced on the next call.
    """

    def __init__(self, options: TranscriberOptions, where: str = "script", *,
                 processes: int | None = None, timeout_s: float = 120.0) -> None:
        self.options = options
        self.where = where
        self.concurrency = processes or min(2, os.cpu_count() or 1)
        """How many decodes run at once (servers size their queue by it)."""
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.concurrency, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_child_start, initargs=(self.options, self.where))
            return self._pool

    def _reset(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        _kill(pool)
        pool.shutdown(wait=False, cancel_futures=True)

    def _call(self, *args: Any) -> Any:
        pool = self._executor()
        try:
            kind, value = pool.submit(_child_call, *args).result(self.timeout_s)
        except BrokenProcessPool as exc:
            self._reset(pool)
            raise LocalError("the decoding process died; the next call starts a new one") from exc
        except TimeoutError as exc:
            self._reset(pool)
            raise LocalError(f"decoding took over {self.timeout_s:g} s; the decoding "
                             "processes were replaced") from exc
        if kind == "config":
            raise ConfigError(value)
        if kind == "error":
            raise LocalError(value)
        return value

    def warm(self) -> None:
        """Start the children and build their models now (a server does it when it starts).

        Raises:
            ConfigError: the options name no usable sentences.
            LocalError: pocketsphinx is missing or cannot load its models.
        """
        self._call(None, 0, {})

    def transcribe(self, pcm: bytes, sample_rate: int = 24000, **kwargs: Any) -> str:
        """The words spoken in ``pcm``, as the wrapped transcriber's ``transcribe``
        says them; other keyword arguments are passed on to it.

        Raises:
            ConfigError: what the wrapped transcriber refuses (odd bytes, a bad rate).
            LocalError: the decoding process died or took too long.
        """
        return self._call(bytes(pcm), sample_rate, kwargs)

    def close(self) -> None:
        """Stop the children (a later call starts new ones)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _kill(pool: ProcessPoolExecutor) -> None:
    """Kill a pool's children (one stuck in a decode never reads its queue again)."""
    for process in list(getattr(pool, "_processes", {}).values()):
        with contextlib.suppress(Exception):
            process.kill()


_child: dict[str, Any] = {}


def _child_start(options: TranscriberOptions, where: str) -> None:
    """In the child: die with the parent, ignore Ctrl-C (the parent decides), build lazily."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _child["options"] = (options, where)


def _child_call(pcm: bytes | None, sample_rate: int, kwargs: dict[str, Any]) -> tuple[str, Any]:
    """In the child: build the transcriber once, decode; errors go back as text."""
    try:
        transcriber = _child.get("transcriber")
        if transcriber is None:
            transcriber = _child["transcriber"] = build_transcriber(*_child["options"])
        if pcm is None:
            return "ok", None
        return "ok", transcriber.transcribe(pcm, sample_rate, **kwargs)
    except ConfigError as exc:
        return "config", str(exc)
    except Exception as exc:  # the parent re-raises it as LocalError
        return "error", f"decoding failed: {type(exc).__name__}: {exc}"
