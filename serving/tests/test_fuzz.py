"""Schemathesis against the server's own OpenAPI schema (positive and negative examples, at most 50 each
per operation): no 5xx, and responses match the documented status codes, content types and schemas.

(Driven through hypothesis directly: schemathesis' lazy pytest fixture does not support pytest 9.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.integration

KEY = "sk-fuzz"
MAX_EXAMPLES = 50
MAX_BODY_BYTES = 32768
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


@pytest.fixture(scope="module")
def fuzz_server(smollm2_path):
    from toolrl_serving.process import start_server

    # tiny generation limits keep every accepted request cheap
    s = start_server(smollm2_path, "--served-model-name", "smollm2-135m-instruct", "--log-level", "warning",
                     "--max-tokens", "2", "--max-n", "2", "--max-prompt-tokens", "256",
                     "--max-body-bytes", str(MAX_BODY_BYTES),
                     "--num-threads", "1", "--api-key-env", "TOOLRL_FUZZ_KEY", env={"TOOLRL_FUZZ_KEY": KEY})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def operations(fuzz_server):
    schema = schemathesis.openapi.from_url(fuzz_server.base_url + "/openapi.json")
    ops = {f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in schema.get_all_operations())}
    assert set(ops) == {"POST /v1/chat/completions", "POST /v1/completions", "GET /v1/models", "POST /generate",
                        "GET /health", "GET /metrics"}
    return ops


def fit_limits(body: dict) -> None:
    """Bring most positive examples within the server's limits, so they reach the model (the rest still
    test the limit errors): the served model id, max_tokens and n within the limits, no penalties."""
    if hash(repr(sorted(body.items(), key=str))) % 4 == 0:
        return
    if "model" in body:
        body["model"] = "smollm2-135m-instruct"
    for key, limit in (("max_tokens", 2), ("max_completion_tokens", 2), ("n", 2), ("best_of", 2)):
        if isinstance(body.get(key), int):
            body[key] = max(1, min(body[key], limit))
    if "best_of" in body and "n" in body:
        body["best_of"] = body["n"]
    for key in ("presence_penalty", "frequency_penalty", "logit_bias", "top_logprobs", "response_format",
                "tool_choice", "suffix", "echo", "stream_options", "logprobs"):
        body.pop(key, None)
    if isinstance(body.get("stop"), list):
        body["stop"] = body["stop"][:4]


def refused_for_size(group: FailureGroup, response, mode: GenerationMode) -> bool:
    """A negative example over the server's --max-body-bytes is refused with 413 before it is parsed (its own
    error, documented in the schema). schemathesis' negative_data_rejection counts only 400, 401, 403-406, 409,
    415, 422, 428 and 429 as rejections; a 413 for a body really over the limit is one too."""
    return (mode is GenerationMode.NEGATIVE and response.status_code == 413
            and len(response.request.body or b"") > MAX_BODY_BYTES
            and all(failure.code == "ST201" for failure in group.exceptions))


WITH_INPUT = ["POST /v1/chat/completions", "POST /v1/completions", "GET /v1/models", "POST /generate"]
CASES = ([(op, GenerationMode.POSITIVE) for op in [*WITH_INPUT, "GET /health", "GET /metrics"]]
         + [(op, GenerationMode.NEGATIVE) for op in WITH_INPUT])  # /health and /metrics take no input to break


@pytest.mark.parametrize("operation, mode", CASES, ids=[f"{o}-{m.value}" for o, m in CASES])
def test_no_server_errors(operations, fuzz_server, operation, mode):
    op = operations[operation]
    seen: list[int] = []

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def run(case):
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
            fit_limits(case.body)
        response = case.call(base_url=fuzz_server.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            if not refused_for_size(group, response, mode):
                raise
        seen.append(response.status_code)
        assert response.status_code < 500, response.text[:500]

    run()
    assert seen, "no request was sent"
    print(operation, mode.value, {c: seen.count(c) for c in sorted(set(seen))})
