"""Shared test fixtures: service checks and small helpers.

A test that needs a real service (Redis, PostgreSQL, Chromium) calls
``require_service``: it skips with the reason when the service is missing,
except in CI (``CI=true``), where a missing service is a failure.
"""

from __future__ import annotations

import os
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_available(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str, host: str = "127.0.0.1", port: int = 0) -> None:
    """Skip (or fail in CI) when a service is not reachable."""
    if service_available(host, port):
        return
    reason = f"{name} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required services must be running)")
    pytest.skip(reason)


@pytest.fixture
def redis_url() -> str:
    """URL of the real Redis at 127.0.0.1:6379 (skips or fails when it is down)."""
    require_service("Redis", "127.0.0.1", 6379)
    return "redis://127.0.0.1:6379/0"


@pytest.fixture
def postgres_dsn() -> str:
    """DSN of the real PostgreSQL at 127.0.0.1:5432 (skips or fails when it is down)."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return os.environ.get("PIPEFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
