"""Development reload: pick up edited tools, entry points and pipelines without a restart.

Pipelines are read from their YAML file for every job, so an edited
pipeline is used by the next job on its own. Python is different: modules
stay imported. When a ``.py`` file changes, every loaded module from that
file is reloaded and the worker forgets its resolved entry points, so the
next job imports the new code (jobs already running keep the old code).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeflow.worker.runner import Worker

__all__ = ["reload_changed", "watch_and_reload"]

log = logging.getLogger("pipeflow.worker.reload")


def reload_changed(paths: Iterable[str | Path], worker: Worker | None = None) -> list[str]:
    """Reload the modules loaded from ``paths``; returns their names.

    A module that fails to reload (a syntax error mid-edit) is logged and
    left as it was; the next save tries again.
    """
    changed = {Path(p).resolve() for p in paths}
    reloaded = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file is None or Path(file).resolve() not in changed:
            continue
        try:
            importlib.reload(module)
        except Exception as exc:
            log.error("cannot reload %s: %s", name, exc)
            continue
        reloaded.append(name)
    if worker is not None:
        worker.forget_entries()
    for path in changed:
        if path.suffix in (".yaml", ".yml"):
            log.info("pipeline %s changed; the next job uses it", path)
    if reloaded:
        log.info("reloaded %s", ", ".join(sorted(reloaded)))
    return reloaded


async def watch_and_reload(worker: Worker, roots: Iterable[str | Path]) -> None:
    """Watch ``roots`` for edited ``.py`` and YAML files and reload them until cancelled."""
    try:
        from watchfiles import awatch
    except ImportError:
        log.warning("reloading needs the watchfiles package (pip install 'pipeflow[dev]')")
        return
    folders = sorted({str(Path(r).resolve()) for r in roots})
    log.info("watching %s for changes", ", ".join(folders))

    def wanted(_change: object, path: str) -> bool:
        return path.endswith((".py", ".yaml", ".yml")) and "/." not in path

    async for changes in awatch(*folders, watch_filter=wanted):
        reload_changed([path for _change, path in changes], worker)
