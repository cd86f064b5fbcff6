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
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from pipeflow.asr.options import TranscriberOptions, build_transcriber
from pipeflow.errors import ConfigError, LocalError

__all__ = [
    "ProcessTranscriber",
    "child_main",
    "decode_in_processes",
    "decoding_in_processes",
    "shared_process_transcriber",
    "transcriber_for",
]

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
        timeout_s: longest one decode may take; past it the child is
            killed and the call fails with ``LocalError``.

    Each child is a fresh interpreter (``python -c``, like the worker
    pool's processes), so nothing of this process's state and none of its
    ``__main__`` is run again. Calls may come from several threads at once;
    a child that dies is replaced on the next call.
    """

    def __init__(self, options: TranscriberOptions, where: str = "script", *,
                 processes: int | None = None, timeout_s: float = 120.0) -> None:
        self.options = options
        self.where = where
        self.concurrency = processes or min(2, os.cpu_count() or 1)
        """How many decodes run at once (servers size their queue by it)."""
        self.timeout_s = timeout_s
        self._slots = threading.Semaphore(self.concurrency)
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._all: set[_Child] = set()

    @property
    def expectations(self) -> tuple[str, ...]:
        """Names of the expectations the options give a model of their own."""
        return tuple(self.options.expectations)

    def _call(self, *args: Any) -> Any:
        with self._slots:
            with self._lock:
                child = self._idle.pop() if self._idle else None
            if child is None:
                child = _Child(self.options, self.where)
                with self._lock:
                    self._all.add(child)
            try:
                kind, value = child.ask(args, self.timeout_s)
            except BaseException:
                with self._lock:
                    self._all.discard(child)
                child.kill()
                raise
            with self._lock:
                self._idle.append(child)
        if kind == "config":
            raise ConfigError(value)
        if kind == "error":
            raise LocalError(value)
        return value

    @property
    def pids(self) -> list[int]:
        """Process ids of the children running now."""
        with self._lock:
            return [child.process.pid for child in self._all]

    def warm(self) -> None:
        """Start a child and build its models now (a server does it when it starts).

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
            children, self._all, self._idle = list(self._all), set(), []
        for child in children:
            child.kill()


class _Child:
    """One decoding process and the pipe to it."""

    def __init__(self, options: TranscriberOptions, where: str) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from pipeflow.asr.process import child_main; child_main()",
                 str(theirs.fileno())], pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        self.conn.send((options, where, list(sys.path)))

    def ask(self, args: tuple[Any, ...], timeout_s: float) -> tuple[str, Any]:
        try:
            self.conn.send(args)
            if not self.conn.poll(timeout_s):
                raise LocalError(f"decoding took over {timeout_s:g} s; the decoding process "
                                 "was replaced")
            return self.conn.recv()
        except (EOFError, OSError) as exc:
            code = self.process.poll()
            raise LocalError(f"the decoding process died (exit status {code}); the next call "
                             "starts a new one") from exc

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self.conn.close()


def child_main() -> None:
    """Entry of a decoding process: build the transcriber once, answer calls until EOF.

    The pipe's end is how it learns its parent is gone (no PR_SET_PDEATHSIG:
    that fires when the parent *thread* that started it ends, and servers
    start their decoders from short-lived worker threads).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the parent decides
    conn = Connection(int(sys.argv[1]))
    options, where, path = conn.recv()
    sys.path[:] = path
    transcriber: Any = None
    while True:
        try:
            pcm, sample_rate, kwargs = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if transcriber is None:
                transcriber = build_transcriber(options, where)
            answer: tuple[str, Any] = (
                ("ok", None) if pcm is None
                else ("ok", transcriber.transcribe(pcm, sample_rate, **kwargs)))
        except ConfigError as exc:
            answer = ("config", str(exc))
        except Exception as exc:  # the parent re-raises it as LocalError
            answer = ("error", f"decoding failed: {type(exc).__name__}: {exc}")
        conn.send(answer)
