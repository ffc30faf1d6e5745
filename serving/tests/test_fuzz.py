"""Schemathesis against the server's own OpenAPI schema (positive and negative examples, bounded):
no 5xx, responses match the documented status codes, content types and schemas."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.integration

KEY = "sk-fuzz"


@pytest.fixture(scope="module")
def fuzz_server(smollm2_path):
    from toolrl_serving.process import start_server

    # tiny generation limits keep every accepted request cheap
    s = start_server(smollm2_path, "--served-model-name", "smollm2-135m-instruct", "--log-level", "warning",
                     "--max-tokens", "2", "--max-n", "2", "--max-prompt-tokens", "256", "--max-body-bytes", "32768",
                     "--api-key-env", "TOOLRL_FUZZ_KEY", env={"TOOLRL_FUZZ_KEY": KEY})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    return schemathesis.openapi.from_url(fuzz_server.base_url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=50, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, fuzz_server):
    response = case.call_and_validate(
        base_url=fuzz_server.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                response_schema_conformance, negative_data_rejection])
    assert response.status_code < 500
