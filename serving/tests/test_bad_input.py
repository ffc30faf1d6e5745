"""Bad input gets a 4xx in OpenAI's error shape naming the field, never a 500 or a hang (real server)."""

from __future__ import annotations

import re

import httpx
import pytest

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"


@pytest.fixture
def client(server, auth):
    with httpx.Client(base_url=server.base_url, headers=auth, timeout=60) as c:
        yield c


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def test_malformed_json(client):
    r = client.post(CHAT, content=b'{"model": "x", "messages": [', headers={"content-type": "application/json"})
    err = _error(r, 400)
    assert "not valid JSON" in err["message"]


def test_body_not_an_object(client):
    _error(client.post(CHAT, json=["not", "an", "object"]), 400)
    _error(client.post(CHAT, content=b"hello", headers={"content-type": "text/plain"}), 400)


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": "hi"}, "messages"),
    ({"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"content": "hi"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 0}, "n"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_p": 0}, "top_p"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": ""}, "stop"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]},
     "tools[0].function"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temprature": 0.5}, "temprature"),
])
def test_wrong_types_name_the_field(client, body, param):
    err = _error(client.post(CHAT, json=body), 400)
    assert err["param"] == param, err
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize("extra, param", [
    ({"max_tokens": 33}, "max_tokens"),
    ({"max_completion_tokens": 1000}, "max_tokens"),
    ({"n": 5}, "n"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"presence_penalty": 1.0}, "presence_penalty"),
    ({"logit_bias": {"1": 5}}, "logit_bias"),
    ({"tool_choice": "required", "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
])
def test_limits_and_unsupported_options(client, model_id, extra, param):
    body = {"model": model_id, "messages": [{"role": "user", "content": "hi"}], **extra}
    err = _error(client.post(CHAT, json=body), 400)
    assert err["param"] == param, err


def test_unknown_model_is_404(client):
    err = _error(client.post(CHAT, json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}), 404)
    assert err["code"] == "model_not_found" and err["param"] == "model"


def test_bad_tool_call_arguments_in_history(client, model_id):
    msgs = [{"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                  "function": {"name": "f", "arguments": "{not json"}}]}]
    err = _error(client.post(CHAT, json={"model": model_id, "messages": msgs}), 400)
    assert err["param"] == "messages[1].tool_calls[0].function.arguments"


def test_prompt_too_long(client, model_id):
    body = {"model": model_id, "prompt": "hello " * 1000, "max_tokens": 1}
    err = _error(client.post("/v1/completions", json=body), 400)
    assert err["code"] == "context_length_exceeded" and err["param"] == "prompt"


def test_token_ids_outside_vocabulary(client, model_id):
    err = _error(client.post("/v1/completions", json={"model": model_id, "prompt": [1, 2, 10**9]}), 400)
    assert err["param"] == "prompt"


def test_body_too_large_declared_and_chunked(client, model_id):
    big = {"model": model_id, "messages": [{"role": "user", "content": "x" * 70_000}]}
    err = _error(client.post(CHAT, json=big), 413)
    assert err["param"] == "body"

    def chunks():  # no Content-Length: the server must count what arrives
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(80):
            yield b"y" * 1000
        yield b'"}]}'

    err = _error(client.post(CHAT, content=chunks(), headers={"content-type": "application/json"}), 413)
    assert err["code"] == "body_too_large"


def test_auth_required(server, model_id):
    body = {"model": model_id, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        err = _error(c.post(CHAT, json=body), 401)
        assert err["code"] == "missing_api_key"
        err = _error(c.post(CHAT, json=body, headers={"Authorization": "Bearer sk-test-alph"}), 401)
        assert err["code"] == "invalid_api_key"
        _error(c.post(CHAT, json=body, headers={"Authorization": "Basic c2stdGVzdC1hbHBoYQ=="}), 401)
        _error(c.get("/v1/models"), 401)
        _error(c.post("/generate", json={"prompt": "hi"}), 401)
        # health and metrics stay open (for probes and Prometheus)
        assert c.get("/health").status_code == 200
        assert c.get("/metrics").status_code == 200


def test_unknown_route_and_method(client):
    err = _error(client.get("/v1/nothing-here"), 404)
    assert "/v1/nothing-here" in err["message"]
    _error(client.get(CHAT), 405)


def test_generate_simple_form(client):
    r = client.post("/generate", json={"prompt": "Say hi.", "max_tokens": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["response"] and 0 < body["completion_tokens"] <= 5
    assert _error(client.post("/generate", json={"prompt": ""}), 400)["param"] == "prompt"
    assert _error(client.post("/generate", json={"prompt": "x", "max_tokens": 999}), 400)["param"] == "max_tokens"


def test_metrics_exposed(client, model_id):
    client.post(CHAT, json={"model": model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    r = client.post(CHAT, json={"model": model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                                "stream": True})
    assert r.text.rstrip().endswith("data: [DONE]")
    text = client.get("/metrics").text
    ttft = re.search(r"^toolrl_serving_time_to_first_token_seconds_count ([0-9.e+]+)$", text, re.M)
    assert ttft and float(ttft.group(1)) >= 1
    for name in ("toolrl_serving_requests_total", "toolrl_serving_request_latency_seconds_bucket",
                 "toolrl_serving_generation_tokens_total", "toolrl_serving_prompt_tokens_total",
                 "toolrl_serving_queue_depth", "toolrl_serving_batch_size", "toolrl_serving_active_sequences"):
        assert name in text, name
    assert 'toolrl_serving_requests_total{endpoint="/v1/chat/completions",status="200"}' in text
