"""``make audit`` (benchmarks/audit.py) against a local stand-in for PyPI's project JSON."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmarks import audit

PROJECTS = {
    "current": {"info": {"version": "2.0"}, "vulnerabilities": []},
    "flawed": {"info": {"version": "1.4"}, "vulnerabilities": [
        {"id": "PYSEC-1", "fixed_in": ["1.5"], "withdrawn": None},
        {"id": "PYSEC-OLD", "fixed_in": [], "withdrawn": "2024-01-01T00:00:00Z"}]},
    "behind": {"info": {"version": "3.1"}, "vulnerabilities": []},
}


class _Index(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if len(parts) != 3 or parts[2] != "json" or parts[1] not in PROJECTS:
            self.send_error(404)  # the per-release endpoint too, as here
            return
        body = json.dumps(PROJECTS[parts[1]]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("PIPEFLOW_AUDIT_INDEX", f"http://127.0.0.1:{server.server_port}/pypi")
    yield
    server.shutdown()
    server.server_close()


def test_the_latest_release_is_audited_and_older_ones_never_called_clean(index: None) -> None:
    assert audit.audit("current", "2.0").result == "clean"
    flawed = audit.audit("flawed", "1.4")
    assert flawed.result == "VULNERABLE: PYSEC-1 (fixed in 1.5)"  # the withdrawn one left out
    behind = audit.audit("behind", "3.0")
    assert behind.result == ("not audited: installed 3.0, latest 3.1"
                             " (nothing installed requires it)")
    assert not behind.vulnerabilities
    missing = audit.audit("nowhere", "1.0")
    assert missing.result.startswith("not audited: nowhere is not on PyPI")


def test_exit_status_and_table(index: None, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(audit, "installed", lambda: [("current", "2.0"), ("behind", "3.0")])
    assert audit.main([]) == 2  # an unaudited package fails the audit
    out = capsys.readouterr().out
    assert "| behind | 3.0 | 3.1 | not audited: installed 3.0, latest 3.1 (nothing" in out
    assert "1 clean" in out and "1 not audited" in out
    assert audit.main(["--allow-unaudited"]) == 0
    monkeypatch.setattr(audit, "installed", lambda: [("flawed", "1.4"), ("behind", "3.0")])
    assert audit.main(["--allow-unaudited"]) == 1


def test_an_index_that_does_not_answer_audits_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.gateway_util import free_port

    monkeypatch.setenv("PIPEFLOW_AUDIT_INDEX", f"http://127.0.0.1:{free_port()}/pypi")
    found = audit.audit("current", "2.0")
    assert found.unaudited and "127.0.0.1" in found.unaudited and not found.vulnerabilities


def test_the_installed_set_leaves_out_the_project_itself() -> None:
    names = {name.lower() for name, _ in audit.installed()}
    assert "pipeflow" not in names and {"numpy", "websockets", "msgspec"} <= names


def test_what_holds_a_package_behind_its_latest_release_is_named() -> None:
    import platform

    here = platform.python_version()
    assert audit.held_back("no-such-dist", "2.0", ">=99") == [
        f"2.0 requires Python >=99, this is {here}", "nothing installed requires it"]
    assert audit.held_back("numpy", "99.0", f"=={here}") == []  # pipeflow: numpy>=1.26
    # the editable project's extras count as installed: make setup installs .[dev]
    assert "pipeflow 0.1.0 requires schemathesis>=3.30" in audit.held_back(
        "schemathesis", "3.0", "")
    # another distribution's extras do not: only contourpy[bokeh] and [mypy] want bokeh
    assert audit.held_back("bokeh", "0.1", "") == ["nothing installed requires it"]
