"""Schemathesis over the OpenAPI schema: generated requests never get a 5xx and responses match the
schema. Writes are exercised without a key (they must answer 401, never touch the index)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from api_fixtures import build_library
from vidsearch.search.service import create_app

EXAMPLES_PER_OPERATION = 110  # 10 operations -> >= 1000 generated cases


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_backbone):
    settings, _ = build_library(tmp_path_factory.mktemp("fuzz"), tiny_backbone)
    return create_app(settings)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_request_gets_a_server_error(case):
    case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])


def test_the_fuzz_run_made_at_least_1000_requests(app):
    """Runs after the fuzz test (same module): count what the app's latency histogram saw."""
    registry = app.state.vidsearch.registry
    total = sum(
        s.value for m in registry.collect() for s in m.samples if s.name == "vidsearch_request_seconds_count"
    )
    assert total >= 1000, total
