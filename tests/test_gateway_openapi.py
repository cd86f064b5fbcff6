"""The OpenAPI document: it covers every route, and schemathesis finds no server error."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient

from pipeflow.server import GatewayOptions, create_app
from pipeflow.server.openapi import openapi_document

LIGHT = Path(__file__).parent / "data" / "gateway" / "light.yaml"
STREAMS = {"streamEvents", "streamAgentAudio"}
"""Operations that stream until the call ends: tested in test_gateway_api instead."""

_OUT = tempfile.mkdtemp(prefix="pipeflow-openapi-")
APP = create_app(LIGHT, GatewayOptions(token="fuzz", output_dir=_OUT, max_calls=10_000,
                                       max_body_bytes=65536))
AUTH = {"Authorization": "Bearer fuzz"}
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


def test_every_route_is_documented() -> None:
    document = openapi_document()
    paths = document["paths"]
    for route in APP.routes:
        assert isinstance(route, Route | WebSocketRoute)
        assert route.path in paths, route.path
        methods = {"get"} if isinstance(route, WebSocketRoute) else {
            m.lower() for m in route.methods or () if m != "HEAD"}
        assert methods <= set(paths[route.path]), route.path
    for path, operations in paths.items():
        for name, operation in operations.items():
            assert operation["responses"], (path, name)
            assert operation.get("summary"), (path, name)


def test_the_document_is_served_and_valid_openapi_3_1() -> None:
    with TestClient(APP, base_url="http://127.0.0.1") as client:
        served = client.get("/openapi.json").json()
    assert served["openapi"] == "3.1.0"
    assert served == openapi_document()
    documented = {op["operationId"] for ops in served["paths"].values() for op in ops.values()}
    loaded = {result.ok().definition.raw["operationId"] for result in schema.get_all_operations()}
    assert loaded | {"openapi"} == documented  # schemathesis leaves the schema's own path out


@schema.exclude(operation_id=list(STREAMS)).parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    """Random valid and invalid requests to every operation never get a 5xx."""
    case.call_and_validate(headers=AUTH, checks=[not_a_server_error])


@pytest.fixture(scope="module", autouse=True)
def _close_calls():
    yield
    # the lifespan's end closes every call the fuzzing started
    with TestClient(APP, base_url="http://127.0.0.1"):
        pass
