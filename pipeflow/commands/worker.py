"""Worker commands: ``worker``, ``dev``, ``start``, ``submit``, ``status``, ``cancel``, ``health``.

``worker`` and ``start`` run a pool of worker processes under one supervisor
(``--processes``, default one per core; ``--no-pool`` runs the jobs in the
command's own process); they differ in how they log (``start``: JSON lines
for production). ``dev`` runs one process, with debug text and reload on
edits. Options come from ``--config FILE`` < environment < flags.
``submit`` puts a job on the shared queue; ``health`` asks a running
worker whether it is ready and exits 0 (yes) or 1 (no, with the reason).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from typing import Any

import msgspec
import yaml

from pipeflow.errors import ConfigError

__all__ = ["register"]

log = logging.getLogger("pipeflow.worker")

# flag -> option name, help (the option's own docstring is the long form)
_FLAGS: dict[str, tuple[str, str]] = {
    "--entry": ("entry", "pipeline YAML file or 'module:function' each job runs"),
    "--agent-name": ("agent_name", "agent served (each agent has its own queue)"),
    "--max-jobs": ("max_jobs", "most jobs running at once"),
    "--job-timeout": ("job_timeout", "seconds a job may run (0: no limit)"),
    "--queue": ("queue_url", "memory:// or redis://host:port/db"),
    "--health-host": ("health_host", "address of /healthz, /readyz, /metrics"),
    "--health-port": ("health_port", "port of the health server (0: any, 'off': none)"),
    "--drain-timeout": ("drain_timeout", "seconds running jobs get on SIGTERM"),
    "--load-threshold": ("load_threshold", "load above which /readyz says unavailable"),
    "--max-attempts": ("max_attempts", "deliveries before a job is dead-lettered"),
    "--visibility-timeout": ("visibility_timeout", "seconds before a silent job is reclaimed"),
    "--queue-prefix": ("queue_prefix", "namespace of the Redis keys"),
    "--processes": ("processes", "worker processes in the pool (0: one per core)"),
    "--lag-kill": ("lag_kill", "seconds a blocked event loop lasts before its process is killed"),
    "--recycle-jobs": ("recycle_jobs", "jobs after which a process is replaced (0: never)"),
    "--recycle-memory-mb": ("recycle_memory_mb", "MiB above which a process is replaced"),
    "--server-url": ("server_url", "URL of the model server jobs talk to (ctx.info)"),
}


def _seed_flags(p: argparse.ArgumentParser, command: str) -> None:
    """The reference library's flags for ``command`` that change nothing here
    (``dev --hot-reload``, ``start --production``): accepted, documented as such."""
    from pipeflow.seednames import SEED_NAMES

    for row in SEED_NAMES:
        if row.seed.startswith("--") and not row.ours and command in row.where.split(", "):
            p.add_argument(row.seed, action="store_true", help=f"accepted for compatibility: "
                           f"{row.note}")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "--config-file", "-c", metavar="FILE",
                   help="worker options file (JSON or YAML)")


def _add_options(p: argparse.ArgumentParser, *, all_flags: bool = True) -> None:
    _add_config(p)
    for flag, (name, text) in _FLAGS.items():
        if all_flags or name in ("agent_name", "queue_url", "queue_prefix"):
            p.add_argument(flag, dest=f"opt_{name}", default=None, metavar=name.upper(), help=text)
    if all_flags:
        p.add_argument("--no-pool", dest="opt_pool", action="store_const", const=False,
                       default=None, help="run jobs in this process, with no supervisor")
        p.add_argument(
            "--log-level", dest="opt_log_level", default=None, metavar="LEVEL",
            help="debug, info, warning, error (default: the options' log_level)",
        )


def _options(args: argparse.Namespace) -> Any:
    from pipeflow.worker.options import load_options

    flags = {key[4:]: value for key, value in vars(args).items() if key.startswith("opt_")}
    return load_options(args.config, flags=flags)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the worker commands."""
    modes = {
        "worker": ("run a worker: take jobs from the queue, one pipeline per job", cmd_worker),
        "dev": ("run a worker for development: debug logs, reload on edits", cmd_dev),
        "start": ("run a worker in production: JSON logs", cmd_start),
    }
    for name, (text, func) in modes.items():
        p = subparsers.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        _add_options(p)
        _seed_flags(p, name)
        if name == "dev":
            p.add_argument("--watch", action="append", default=[], metavar="DIR",
                           help="folder to watch for edits (default: the current one); repeatable")
        p.set_defaults(func=func)

    s = subparsers.add_parser("submit", help="put a job on the queue",
                              description="Put a job on the worker queue and print its id.")
    s.add_argument("entry", nargs="?", default="", metavar="FILE",
                   help="pipeline YAML or 'module:function' the job runs "
                        "(default: the worker's entry point)")
    s.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                   help="job parameter (STAGE.OPTION=VALUE overrides a pipeline option); "
                        "repeatable")
    s.add_argument("--key", default="",
                   help="idempotency key (default: the job id); a key held by a queued, "
                        "running or completed job returns that job instead of a new one")
    s.add_argument("--wait", type=float, nargs="?", const=300.0, default=None, metavar="SECONDS",
                   help="wait for the job to finish and print its status (exit 1 unless it "
                        "completed)")
    _add_options(s, all_flags=False)
    s.set_defaults(func=cmd_submit)

    for name, text, func in (
        ("status", "print a job's status", cmd_status),
        ("cancel", "cancel a job (waiting or running)", cmd_cancel),
    ):
        p = subparsers.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("job_id", metavar="JOB_ID")
        _add_options(p, all_flags=False)
        p.set_defaults(func=func)

    h = subparsers.add_parser(
        "health", help="check a running worker (exit 0 when ready, 1 otherwise)",
        description="Ask a worker's /readyz (or /healthz with --live); exit 0 when it "
                    "answers 200, 1 otherwise, printing the reason.",
    )
    h.add_argument("--url", default=None,
                   help="worker base URL (default: http://HEALTH_HOST:HEALTH_PORT of the options)")
    h.add_argument("--live", action="store_true", help="check liveness (/healthz) only")
    h.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")
    _add_config(h)
    h.set_defaults(func=cmd_health)


# --- running a worker --------------------------------------------------------


async def cmd_worker(args: argparse.Namespace) -> int:
    """``pipeflow worker``: text logs at the options' level."""
    from pipeflow.worker.logs import setup_logging

    options = _options(args)
    setup_logging("debug" if getattr(args, "debug", False) else options.log_level)
    return await serve(options)


async def cmd_dev(args: argparse.Namespace) -> int:
    """``pipeflow dev``: debug text logs, reload tools and entry points on edits."""
    from pipeflow.worker.logs import setup_logging

    options = _options(args)
    setup_logging("debug")
    return await serve(options, watch=args.watch or [os.getcwd()])


async def cmd_start(args: argparse.Namespace) -> int:
    """``pipeflow start``: JSON log lines at the options' level."""
    from pipeflow.worker.logs import setup_logging

    options = _options(args)
    setup_logging(options.log_level, json=True)
    return await serve(options, json_logs=True)


async def serve(options: Any, watch: list[str] | None = None, json_logs: bool = False) -> int:
    """Run a worker (a pool unless ``options.pool`` is off or ``watch`` is given)
    with its health server until SIGTERM/SIGINT, then drain.

    Raises:
        ConfigError: the entry point or the health address is invalid.
        RemoteError: the queue cannot be reached.
    """
    from pipeflow.worker.health import HealthServer
    from pipeflow.worker.runner import Worker

    sys.path.insert(0, os.getcwd())
    if options.pool and not watch:
        return await serve_pool(options, json_logs)
    from pipeflow.asr.process import decode_in_processes

    decode_in_processes()  # jobs' local servers decode off this process's event loop
    worker = Worker(options)
    if options.entry:
        entry = worker.entry_for("")  # a bad entry point fails here, before any job
        log.debug("entry point %s resolved to %r", options.entry, entry)
    await worker.queue.stats()  # the queue answers, or a clear RemoteError
    log.info("worker %s: %s", worker.id, options)
    remove_handlers = worker.install_signal_handlers()
    health = None
    tasks: list[asyncio.Task[None]] = []
    try:
        if options.health_port is not None:
            health = HealthServer(worker, options.health_host, options.health_port)
            await health.start()
            log.info("health server at %s (/healthz /readyz /metrics)", health.url)
        if watch:
            from pipeflow.worker.reload import watch_and_reload

            tasks.append(asyncio.get_running_loop().create_task(watch_and_reload(worker, watch)))
        await worker.run()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if health is not None:
            await health.stop()
        await worker.queue.close()
        remove_handlers()
    return 0


async def serve_pool(options: Any, json_logs: bool = False) -> int:
    """Run a pool of worker processes and its one health server until SIGTERM/SIGINT.

    Raises:
        ConfigError: the entry point or the health address is invalid.
        RemoteError: the queue cannot be reached.
    """
    from pipeflow.worker.health import HealthServer
    from pipeflow.worker.pool import Pool
    from pipeflow.worker.runner import resolve_entry

    if options.entry:
        resolve_entry(options.entry)  # a bad entry point fails here, not in every process
    pool = Pool(options, json_logs=json_logs)
    health = None
    remove_handlers = pool.install_signal_handlers()
    try:
        await pool.queue.stats()  # the queue answers, or a clear RemoteError
        log.info("pool %s: %s", pool.id, options)
        if options.health_port is not None:
            health = HealthServer(pool, options.health_host, options.health_port)
            await health.start()
            log.info("health server at %s (/healthz /readyz /metrics)", health.url)
        await pool.run()
    finally:
        if health is not None:
            await health.stop()
        await pool.queue.close()
        remove_handlers()
    return 0


# --- jobs ------------------------------------------------------------------


def _parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE")
        try:
            params[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            params[key] = raw
    return params


def _shared_queue(options: Any) -> Any:
    from pipeflow.worker.queues import open_queue

    if options.queue_url.startswith("memory") or not options.queue_url:
        raise ConfigError(
            "this command needs the workers' shared queue, but the queue is memory:// "
            "(in-process); pass --queue redis://host:port/db or set PIPEFLOW_QUEUE_URL"
        )
    return open_queue(options.queue_url, **options.queue_options())


async def cmd_submit(args: argparse.Namespace) -> int:
    """Validate and enqueue one job; print its id (and its status with --wait)."""
    from pipeflow.worker.queues import Job

    options = _options(args)
    entry = args.entry
    if entry.endswith((".yaml", ".yml")):
        from pipeflow.config import load_config
        from pipeflow.job import params_to_overrides

        overrides = {k: v for k, v in _parse_params(args.param).items() if "." in k}
        load_config(entry, params_to_overrides(overrides, "--param"))
    params = _parse_params(args.param)
    queue = _shared_queue(options)
    try:
        submitted = Job(entry=entry, params=params, key=args.key)
        job = await queue.submit(submitted)
        if job.id != submitted.id:
            held = await queue.status(job.id)
            print(f"key {args.key!r} is already held by job {job.id} "
                  f"({held.state if held else 'unknown'}): nothing new was queued",
                  file=sys.stderr, flush=True)
        print(job.id, flush=True)
        if args.wait is None:
            return 0
        status = await _wait_final(queue, job.id, args.wait)
    finally:
        await queue.close()
    print(msgspec.json.encode(status).decode() if status else "{}")
    return 0 if status is not None and status.state == "completed" else 1


async def _wait_final(queue: Any, job_id: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        status = await queue.status(job_id)
        if (status is not None and status.final) or time.monotonic() >= deadline:
            return status
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def cmd_status(args: argparse.Namespace) -> int:
    """Print a job's status as JSON; exit 1 when the job is unknown."""
    queue = _shared_queue(_options(args))
    try:
        status = await queue.status(args.job_id)
    finally:
        await queue.close()
    if status is None:
        print(f"no job {args.job_id} (unknown, or its status expired)", file=sys.stderr)
        return 1
    print(msgspec.json.encode(status).decode())
    return 0


async def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a job: at once when it waits, by its worker when it runs."""
    queue = _shared_queue(_options(args))
    try:
        status = await queue.cancel(args.job_id)
    finally:
        await queue.close()
    if status is None:
        print(f"no job {args.job_id} (unknown, or its status expired)", file=sys.stderr)
        return 1
    if status.final and status.state != "cancelled":
        print(f"job {args.job_id} already ended: {status.state}", file=sys.stderr)
        return 1
    print(f"job {args.job_id}: {'cancelled' if status.final else 'cancel requested'}")
    return 0


# --- health ----------------------------------------------------------------


async def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when the worker answers 200, else 1 with the reason."""
    import httpx

    url = args.url
    if url is None:
        from pipeflow.worker.options import load_options

        options = load_options(args.config)
        if options.health_port is None:
            raise ConfigError("the worker options turn the health server off (health_port: null)")
        url = f"http://{options.health_host}:{options.health_port}"
    path = "/healthz" if args.live else "/readyz"
    target = url.rstrip("/") + path
    try:
        async with httpx.AsyncClient(timeout=args.timeout) as client:
            response = await client.get(target)
    except httpx.HTTPError as exc:
        print(f"unhealthy: no answer from {target}: {exc or type(exc).__name__}")
        return 1
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code == 200:
        print(f"healthy: {body.get('reason', 'ok')} (load {body.get('load', '?')}, "
              f"{body.get('running', '?')}/{body.get('max_jobs', '?')} jobs)")
        return 0
    reason = body.get("reason") or f"HTTP {response.status_code}"
    print(f"unhealthy: {reason}")
    return 1
