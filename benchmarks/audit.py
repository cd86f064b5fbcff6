"""Known vulnerabilities of the installed packages, from PyPI's project JSON (``make audit``).

pip-audit asks PyPI's per-release endpoint (``/pypi/NAME/VERSION/json``) or
OSV's API; where neither answers (this project's machines reach only the
project endpoint, ``/pypi/NAME/json``) it audits nothing. This audit reads
the project endpoint for every distribution installed in the environment
that runs it (the editable project itself left out). PyPI documents that
endpoint's ``vulnerabilities`` as those "in the most recent release"
(warehouse ``docs/dev/api-reference/json.rst``), so:

- installed version == the latest release: its vulnerabilities (withdrawn
  ones left out) are listed, or it is ``clean``;
- an older version is ``not audited: installed X, latest Y``: nothing the
  endpoint says applies to it, so it is never called clean. What holds it
  back, where this environment says so, is added: the latest release's
  ``requires_python`` excluding this interpreter, or an installed
  distribution's requirement excluding the latest release, or nothing
  installed requiring it at all;
- a name PyPI does not know, or an endpoint that does not answer, is ``not
  audited`` with the reason.

Exit status: 1 when a vulnerability is found, else 2 when a package could
not be audited (``--allow-unaudited``: 0), else 0.

    .venv/bin/python -m benchmarks.audit [--allow-unaudited] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

INDEX = "https://pypi.org/pypi"
"""Base URL of PyPI's JSON API (the project endpoint is ``INDEX/NAME/json``);
``PIPEFLOW_AUDIT_INDEX`` replaces it."""


@dataclass
class Audit:
    """What the audit found for one installed distribution."""

    name: str
    installed: str
    latest: str = ""
    vulnerabilities: list[dict[str, Any]] = field(default_factory=list)
    unaudited: str = ""
    """Why it could not be audited; empty when it was."""

    @property
    def result(self) -> str:
        if self.unaudited:
            return f"not audited: {self.unaudited}"
        if self.vulnerabilities:
            return "VULNERABLE: " + ", ".join(_describe(v) for v in self.vulnerabilities)
        return "clean"


def _describe(vulnerability: dict[str, Any]) -> str:
    fixed = ", ".join(vulnerability.get("fixed_in") or []) or "no fix listed"
    return f"{vulnerability.get('id', '?')} (fixed in {fixed})"


def installed() -> list[tuple[str, str]]:
    """(name, version) of every distribution installed in this environment's
    site-packages, editable ones (the project under audit) left out."""
    found: dict[str, tuple[str, str]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        where = Path(str(dist.locate_file(""))).parts
        if not name or not {"site-packages", "dist-packages"} & set(where):
            continue  # e.g. the checkout's own pipeflow.egg-info, found through the cwd
        direct = dist.read_text("direct_url.json")
        if direct and json.loads(direct).get("dir_info", {}).get("editable"):
            continue  # the project under audit, not a PyPI release
        found[canonicalize_name(name)] = (name, dist.version)
    return sorted(found.values(), key=lambda item: canonicalize_name(item[0]))


def _requirements() -> list[tuple[str, Requirement]]:
    """("NAME VERSION", requirement) for what every distribution installed in
    site-packages requires here: markers evaluated for this environment, an
    editable project's extras counted as installed (``make setup`` installs
    ``.[dev]``), other distributions' extras not."""
    found = []
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name or not {"site-packages", "dist-packages"} & set(
                Path(str(dist.locate_file(""))).parts):
            continue
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        extras = [""]
        if direct.get("dir_info", {}).get("editable"):
            extras += dist.metadata.get_all("Provides-Extra") or []
        for text in dist.requires or []:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in extras):
                found.append((f"{name} {dist.version}", requirement))
    return found


def held_back(name: str, latest: str, requires_python: str) -> list[str]:
    """Why ``name``'s latest release is not what is installed, as far as this
    environment tells: its Requires-Python, installed requirements that exclude
    it, or nothing requiring ``name`` at all (a leftover, such as venv's seeded
    setuptools)."""
    reasons = []
    try:
        if requires_python and platform.python_version() not in SpecifierSet(requires_python):
            reasons.append(f"{latest} requires Python {requires_python}, "
                           f"this is {platform.python_version()}")
    except InvalidSpecifier:
        pass
    wanted = [(who, requirement) for who, requirement in _requirements()
              if canonicalize_name(requirement.name) == canonicalize_name(name)]
    reasons += [f"{who} requires {requirement.name}{requirement.specifier}"
                for who, requirement in wanted
                if not requirement.specifier.contains(latest, prereleases=True)]
    if not wanted:
        reasons.append("nothing installed requires it")
    return reasons


def project_json(name: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """PyPI's project JSON for ``name``.

    Raises:
        LookupError: PyPI has no such project (404).
        OSError: the endpoint did not answer (the reason in the message).
    """
    index = os.environ.get("PIPEFLOW_AUDIT_INDEX") or INDEX
    url = f"{index.rstrip('/')}/{canonicalize_name(name)}/json"
    request = urllib.request.Request(url, headers={"Accept": "application/json",
                                                   "User-Agent": "pipeflow-audit"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise LookupError(f"{name} is not on PyPI ({url}: 404)") from None
        raise OSError(f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        raise OSError(f"{url}: {getattr(exc, 'reason', exc)}") from None


def _same(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def audit(name: str, version: str) -> Audit:
    """Audit one installed distribution against its project JSON."""
    found = Audit(name, version)
    try:
        data = project_json(name)
    except (LookupError, OSError) as exc:
        found.unaudited = str(exc)
        return found
    info = data.get("info") or {}
    found.latest = str(info.get("version") or "")
    if not _same(version, found.latest):
        found.unaudited = f"installed {version}, latest {found.latest or '?'}"
        if found.latest:
            why = held_back(name, found.latest, str(info.get("requires_python") or ""))
            found.unaudited += "".join(f" ({reason})" for reason in why)
        return found
    found.vulnerabilities = [v for v in data.get("vulnerabilities") or []
                             if not v.get("withdrawn")]
    return found


def table(audits: list[Audit]) -> str:
    """The audits as a Markdown table."""
    rows = ["| package | installed | latest | result |", "|---|---|---|---|"]
    rows += [f"| {a.name} | {a.installed} | {a.latest or '-'} | {a.result} |" for a in audits]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.audit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allow-unaudited", action="store_true",
                        help="exit 0 when nothing vulnerable was found, even if some "
                             "packages could not be audited")
    parser.add_argument("--json", action="store_true", help="one JSON line of the results too")
    args = parser.parse_args(argv)
    packages = installed()
    with ThreadPoolExecutor(8) as pool:
        audits = list(pool.map(lambda item: audit(*item), packages))
    print(table(audits))
    vulnerable = [a for a in audits if a.vulnerabilities]
    unaudited = [a for a in audits if a.unaudited]
    clean = len(audits) - len(vulnerable) - len(unaudited)
    print(f"\n{len(audits)} packages: {clean} clean (the latest release, no known "
          f"vulnerabilities), {len(vulnerable)} vulnerable, {len(unaudited)} not audited "
          f"(older than the latest release, or not on PyPI).")
    if args.json:
        print(json.dumps({"packages": len(audits), "clean": clean,
                          "vulnerable": [a.name for a in vulnerable],
                          "unaudited": {a.name: a.unaudited for a in unaudited}}))
    if vulnerable:
        return 1
    if unaudited and not args.allow_unaudited:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
