"""``WorkerOptions`` and where they come from.

Options load from three places, later ones winning: a JSON or YAML config
file, environment variables, then command-line flags. Every value is checked
on its own, so a mistake is reported with where it came from::

    worker.yaml: key 'max_jobs': expected int >= 1, got 0
    environment variable PIPEFLOW_JOB_TIMEOUT: expected float, got 'soon'

The reference library's names (``entry_point``, ``max_concurrent_jobs``,
``timeout`` in milliseconds...: the ``WorkerOptions`` rows of
``pipeflow.seednames.SEED_NAMES``) are read both as keyword arguments of
``WorkerOptions(...)`` and as keys of the file. The environment is read
as ``PIPEFLOW_<OPTION>`` (``PIPEFLOW_MAX_JOBS``...) and, for the connection,
the reference names ``LIVEKIT_URL``, ``LIVEKIT_API_KEY``, ``LIVEKIT_API_SECRET``
(and ``REDIS_URL`` for the queue); a ``PIPEFLOW_`` name wins over them.

Secrets (``api_key``, ``api_secret``, a password in ``queue_url``) never
appear in ``repr``, logs or error messages.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec
import yaml

from pipeflow.errors import ConfigError
from pipeflow.seednames import aliases as seed_aliases

__all__ = ["LOG_LEVELS", "WorkerOptions", "load_options", "option_sources"]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Fraction = Annotated[float, msgspec.Meta(gt=0, le=1)]


class _SeedNamesMeta(type(msgspec.Struct)):  # type: ignore[misc]
    """Reads the reference library's keyword arguments (``entry_point=``...) as ours."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        from pipeflow.seednames import entry_ref, rename

        kwargs = rename(kwargs, "WorkerOptions", set(FIELDS))
        if "entry" in kwargs:
            kwargs["entry"] = entry_ref(kwargs["entry"])
        return super().__call__(*args, **kwargs)


class WorkerOptions(
    msgspec.Struct, kw_only=True, forbid_unknown_fields=True, metaclass=_SeedNamesMeta
):
    """How a worker runs: what each job runs, how many at once, where jobs come from.

    ``entry`` may be given as a module-level function (kept as its
    ``'module:function'`` reference). The reference library's names are
    accepted too: ``WorkerOptions(entry_point=entry, max_concurrent_jobs=5)``.
    """

    entry: str = ""
    """Entry point of a job: a pipeline YAML file or 'module:function' taking a JobContext."""
    agent_name: str = "agent"
    """Name of the agent this worker serves; each agent has its own queue."""
    max_jobs: PositiveInt = 10
    """Most jobs running at once in this worker process."""
    job_timeout: NonNegative = 3600.0
    """Seconds a job may run before it is cancelled and recorded as failed (0: no limit)."""
    queue_url: str = "memory://"
    """Where jobs wait: memory:// (in-process) or redis://host:port/db."""
    health_host: str = "127.0.0.1"
    """Address the health and metrics server listens on."""
    health_port: Port | None = 8081
    """Port of /healthz, /readyz and /metrics (0: any free port; null: no server)."""
    drain_timeout: NonNegative = 30.0
    """Seconds running jobs get to finish on SIGTERM before they are handed back."""
    log_level: str = "info"
    """debug, info, warning, error or critical."""
    load_threshold: Fraction = 0.8
    """Load (running / max_jobs) above which /readyz reports the worker unavailable."""
    max_attempts: PositiveInt = 3
    """Deliveries of one job (reclaims and hand-backs count) before it is dead-lettered."""
    visibility_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """Seconds a job held by a silent worker waits before another worker reclaims it."""
    queue_prefix: str = "pipeflow"
    """Namespace of the queue's Redis keys."""
    result_ttl: PositiveInt = 86400
    """Seconds job statuses, results and idempotency records are kept in Redis."""
    server_url: str = ""
    """URL of the model server jobs talk to (given to jobs as ctx.info['server_url'])."""
    api_key: str = ""
    """API key handed to jobs (ctx.secrets['api_key']); never printed."""
    api_secret: str = ""
    """API secret handed to jobs (ctx.secrets['api_secret']); never printed."""
    processes: NonNegativeInt = 0
    """Worker processes in the pool, each running up to max_jobs jobs (0: one per core)."""
    pool: bool = True
    """Run a supervised pool of processes; false: run jobs in the command's own process."""
    sync_on_loop: bool = False
    """Call synchronous entry points on the event loop instead of in a thread."""
    lag_threshold: Annotated[float, msgspec.Meta(gt=0)] = 0.25
    """Seconds the event loop may stall before the watchdog counts it as blocked."""
    lag_grace: NonNegative = 1.0
    """Seconds a blocked loop is tolerated before the process is unhealthy (takes no jobs)."""
    lag_kill: NonNegative = 30.0
    """Seconds a blocked loop is tolerated before the process is killed (0: never)."""
    recycle_jobs: NonNegativeInt = 0
    """Jobs after which a pool process drains and is replaced (0: never)."""
    recycle_memory_mb: NonNegative = 0.0
    """Resident memory (MiB) above which a pool process drains and is replaced (0: no limit)."""

    def __post_init__(self) -> None:
        level = self.log_level.lower()
        if level == "warn":
            level = "warning"
        if level not in LOG_LEVELS:
            raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        self.log_level = level

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"WorkerOptions({shown})"

    __str__ = __repr__

    def redacted(self) -> dict[str, Any]:
        """Every option, with secrets masked (safe to log or print)."""
        data = msgspec.structs.asdict(self)
        for key in ("api_key", "api_secret"):
            if data[key]:
                data[key] = "***"
        data["queue_url"] = redact_url(self.queue_url)
        return data

    @property
    def secrets(self) -> dict[str, str]:
        """The secrets jobs receive (``ctx.secrets``), empty ones left out."""
        return {k: v for k, v in (("api_key", self.api_key), ("api_secret", self.api_secret)) if v}

    def queue_options(self) -> dict[str, Any]:
        """Keyword arguments of ``open_queue`` for these options."""
        return {
            "agent": self.agent_name,
            "prefix": self.queue_prefix,
            "visibility_timeout": self.visibility_timeout,
            "max_attempts": self.max_attempts,
            "result_ttl": self.result_ttl,
        }


FIELDS: dict[str, Any] = {f.name: f.type for f in msgspec.structs.fields(WorkerOptions)}
SECRET_FIELDS = frozenset({"api_key", "api_secret"})

# File keys of the reference library that differ from ours: key -> (ours, scale).
FILE_ALIASES: dict[str, tuple[str, float]] = {
    row.seed: (row.ours, row.scale) for row in seed_aliases("WorkerOptions").values()
}

# Reference environment names, read when the PIPEFLOW_ name is not set.
ENV_ALIASES: dict[str, str] = {
    "LIVEKIT_URL": "server_url",
    "LIVEKIT_API_KEY": "api_key",
    "LIVEKIT_API_SECRET": "api_secret",
    "REDIS_URL": "queue_url",
}


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable URL>"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}{port}"))


def _read_file(path: str | Path) -> dict[str, Any]:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"worker config file not found: {file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read worker config file {file}: {exc}") from None
    try:
        if file.suffix.lower() == ".json":
            data = json.loads(text) if text.strip() else {}
        else:
            data = yaml.safe_load(text) or {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", f"{file}:{exc.lineno}:{exc.colno}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {problem}", where) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"a worker config file must be a mapping of option names to values, "
            f"got {type(data).__name__}", str(file)
        )
    return data


def _unknown(key: str, where: str) -> ConfigError:
    names = sorted(set(FIELDS) | set(FILE_ALIASES))
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown option {key!r}{hint}; valid options: {', '.join(names)}", where)


QUEUE_SCHEMES = ("memory", "redis", "rediss", "unix")


def _check_queue_url(url: str) -> None:
    """Raise ValueError (without the URL, which may hold a password) for an unknown scheme."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else url.lower()
    if scheme not in ("", *QUEUE_SCHEMES):
        raise ValueError(
            f"unsupported queue URL scheme {scheme[:20]!r}: use memory:// (in-process) "
            "or redis://host:port/db"
        )


def _check(name: str, value: Any, where: str) -> Any:
    """Convert one value to its field's type, or raise naming where it came from."""
    try:
        if name == "health_port" and isinstance(value, str) and value.lower() in ("off", "none"):
            return None
        converted = msgspec.convert(value, FIELDS[name], strict=False)
        if name == "log_level":
            msgspec.structs.replace(WorkerOptions(), log_level=converted)
        if name == "queue_url":
            _check_queue_url(converted)
        return converted
    except (msgspec.ValidationError, ValueError) as exc:
        if name in SECRET_FIELDS:
            shown = "***"
        elif name == "queue_url" and isinstance(value, str):
            shown = repr(redact_url(value))
        else:
            shown = repr(value)
        message = str(exc).split(" - at ", 1)[0]
        expected = re.match(r"Expected `([^`]*)`(.*?)(?:, got `[^`]*`)?$", message)
        if expected:
            text = f"expected {expected.group(1)}{expected.group(2).replace('`', '')}"
        else:
            text = message[0].lower() + message[1:] if message else "invalid value"
            text = text.split(", got ", 1)[0]
        raise ConfigError(f"{text}, got {shown}", where) from None


def option_sources(
    file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> dict[str, tuple[Any, str]]:
    """Each option that was set, with its checked value and where it came from.

    Raises:
        ConfigError: a file key is unknown or any value is invalid; the
            message names the file and key, the variable or the flag.
    """
    found: dict[str, tuple[Any, str]] = {}
    if file is not None:
        for key, value in _read_file(file).items():
            where = f"{file}: key {key!r}"
            name, scale = FILE_ALIASES.get(str(key), (str(key), 1.0))
            if name not in FIELDS:
                raise _unknown(str(key), str(file))
            checked = _check(name, value, where)
            if scale != 1.0 and checked is not None:
                checked = _check(name, float(checked) * scale, where)
            found[name] = (checked, where)
    environ = os.environ if env is None else env
    for variable, name in ENV_ALIASES.items():
        if environ.get(variable):
            found[name] = (_check(name, environ[variable], f"environment variable {variable}"),
                           f"environment variable {variable}")
    for name in FIELDS:
        variable = f"PIPEFLOW_{name.upper()}"
        if environ.get(variable, "") != "":
            where = f"environment variable {variable}"
            found[name] = (_check(name, environ[variable], where), where)
    for name, value in (flags or {}).items():
        if value is None:
            continue
        if name not in FIELDS:
            raise ConfigError(f"unknown worker option {name!r}")
        where = f"--{name.replace('_', '-')}"
        found[name] = (_check(name, value, where), where)
    return found


def load_options(
    file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> WorkerOptions:
    """Worker options from a config file, then the environment, then flags.

    Args:
        file: a JSON (``.json``) or YAML file of options, or None.
        env: the environment to read (``os.environ`` when None).
        flags: option name -> value from the command line; None values are
            flags that were not given.

    Raises:
        ConfigError: any unknown key or invalid value, naming where it came from.
    """
    found = option_sources(file, env, flags)
    return WorkerOptions(**{name: value for name, (value, _where) in found.items()})
