"""One registry for built-in and custom stages.

A YAML ``type`` is resolved, in order, as:

1. a short name registered by a built-in or an already imported module;
2. a short name published by a plug-in under the ``pipeflow.stages``
   entry-point group;
3. a ``package.module:attr`` reference to a Stage class or ``@stage`` function.

Stage classes with a ``name`` are recorded by ``pipeflow.stage`` as they are
defined; the registry resolves over that record, so the two modules depend
one way only. ``importable(folder)`` lends a pipeline's folder to ``sys.path``
for as long as that pipeline needs it, and no longer.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata
import pkgutil
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pipeflow.stages as builtin_stages
from pipeflow.errors import ConfigError
from pipeflow.stage import NAMED_STAGES, Stage

__all__ = ["StageRegistry", "import_ref", "importable", "registry"]

ENTRY_POINT_GROUP = "pipeflow.stages"

_lent: Counter[str] = Counter()
_lent_lock = threading.Lock()


@contextlib.contextmanager
def importable(folder: str | None) -> Iterator[None]:
    """Put ``folder`` on ``sys.path`` for the ``with`` block only ('' or None: no change).

    Nested and concurrent uses of one folder (many calls of one pipeline
    file) share one entry, removed when the last of them ends; a folder that
    was on ``sys.path`` before is left alone.
    """
    if not folder:
        yield
        return
    with _lent_lock:
        if _lent[folder] or folder not in sys.path:
            if not _lent[folder]:
                sys.path.insert(0, folder)
            _lent[folder] += 1
            owned = True
        else:
            owned = False
    try:
        yield
    finally:
        if owned:
            with _lent_lock:
                _lent[folder] -= 1
                if not _lent[folder]:
                    del _lent[folder]
                    with contextlib.suppress(ValueError):
                        sys.path.remove(folder)


def import_ref(ref: str, what: str = "object") -> Any:
    """Import ``package.module:attr`` (attr may be dotted).

    Raises:
        ConfigError: the module or attribute does not exist.
    """
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{what} reference {ref!r} must look like 'package.module:name'")
    if module_name.startswith("."):
        raise ConfigError(
            f"{what} reference {ref!r} names a relative module; write the full module path"
            " ('package.module:name')"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import module {module_name!r} for {what} {ref!r}: {exc}"
        ) from exc
    except Exception as exc:  # the user's module itself failed while importing
        raise ConfigError(
            f"importing module {module_name!r} for {what} {ref!r} failed:"
            f" {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            names = [n for n in dir(obj) if not n.startswith("_")]
            hint = _did_you_mean(part, names)
            raise ConfigError(f"module {module_name!r} has no {what} {attr!r}{hint}") from exc
    return obj


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class StageRegistry:
    """Maps short names to Stage classes."""

    def __init__(self, stages: dict[str, type[Stage]] | None = None) -> None:
        self._stages: dict[str, type[Stage]] = {} if stages is None else stages
        self._builtins_loaded = False

    def register(self, cls: type[Stage]) -> None:
        """Register a Stage class under its ``name`` (the latest wins)."""
        self._stages[cls.name] = cls

    def load_builtins(self) -> None:
        """Import every module of ``pipeflow.stages`` so their stages register."""
        if self._builtins_loaded:
            return
        self._builtins_loaded = True
        for info in pkgutil.iter_modules(builtin_stages.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{builtin_stages.__name__}.{info.name}")

    def _plugin(self, name: str) -> type[Stage] | None:
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry.name == name:
                where = f"stage {name!r} from entry point {entry.value!r}"
                dist = getattr(entry, "dist", None)
                if dist is not None:
                    where += f" of package {dist.name!r}"
                try:
                    obj = entry.load()
                except Exception as exc:  # a broken plug-in must not crash the CLI
                    raise ConfigError(
                        f"{where} cannot be loaded: {type(exc).__name__}: {exc}"
                    ) from exc
                return self._check(obj, where)
        return None

    def _check(self, obj: Any, where: str) -> type[Stage]:
        if isinstance(obj, type) and issubclass(obj, Stage):
            return obj
        raise ConfigError(
            f"{where} is {type(obj).__name__} {obj!r}, not a stage: "
            "use a Stage subclass or an @stage async generator function"
        )

    def resolve(self, ref: str) -> type[Stage]:
        """Find the Stage class for a YAML ``type``.

        Raises:
            ConfigError: nothing by that name, with a suggestion when close.
        """
        if ":" in ref:
            return self._check(import_ref(ref, "stage"), f"stage reference {ref!r}")
        self.load_builtins()
        if ref in self._stages:
            return self._stages[ref]
        plugin = self._plugin(ref)
        if plugin is not None:
            return plugin
        names = sorted(self.names())
        hint = _did_you_mean(ref, names)
        raise ConfigError(
            f"unknown stage type {ref!r}{hint}; known stages: {', '.join(names)}"
            " (or use 'package.module:Name' for your own)"
        )

    def names(self) -> list[str]:
        """Every known short name: built-ins, imported and plug-ins."""
        self.load_builtins()
        plugins = [e.name for e in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
        return sorted(set(self._stages) | set(plugins))

    def all(self, errors: list[ConfigError] | None = None) -> dict[str, type[Stage]]:
        """Every stage class by short name, plug-ins loaded.

        Args:
            errors: when given, a plug-in that fails to load is added here and
                left out, instead of raising (``pipeflow stages`` lists the rest).
        """
        result = {}
        for name in self.names():
            try:
                result[name] = self.resolve(name)
            except ConfigError as exc:
                if errors is None:
                    raise
                errors.append(exc)
        return result


registry = StageRegistry(NAMED_STAGES)
"""The registry of built-in, imported and plug-in stages."""
