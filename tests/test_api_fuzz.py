"""Schemathesis over the OpenAPI schema: generated requests never get a 5xx and responses match the
schema. Writes are exercised without a key (they must answer 401, never touch the index).

One test runs every operation and counts the requests it made itself, so the ">= 1000 generated
requests" it promises holds when it runs alone or in any order."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from vidsearch.server import create_app

EXAMPLES_PER_OPERATION = 130  # of the 19 operations (HEAD of media, clips and thumbnails among them), those with inputs to vary reach the cap: >= 10 x 130 >= 1000


def test_generated_requests_never_get_a_server_error(shared_library):
    settings_, _ = shared_library
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings_))
    made: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        made[operation.label] = 0

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def check(case):
            made[case.operation.label] += 1
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

        check()
    assert len(made) == 19 and sum(made.values()) >= 1000, made
