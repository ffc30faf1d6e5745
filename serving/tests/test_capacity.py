"""A full queue answers 503 with Retry-After; a client that disconnects stops its generation
(real server, real engine: one batch slot, one queue place)."""

from __future__ import annotations

import asyncio
import re
import socket
import time

import httpx
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tight_server(smollm2_path):
    from toolrl_serving.process import start_server

    s = start_server(smollm2_path, "--served-model-name", "smollm2-135m-instruct", "--log-level", "warning",
                     "--max-batch-size", "1", "--max-queue", "1", "--max-tokens", "512", "--num-threads", "1")
    yield s
    s.stop()


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def _wait_idle(base: str, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if httpx.get(base + "/health").json()["active"] == 0:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"the engine still has active sequences {timeout} s after the client left")


async def test_queue_full_gives_503_with_retry_after(tight_server):
    body = {"model": "smollm2-135m-instruct", "prompt": "Once upon a time", "max_tokens": 48, "temperature": 0}
    async with httpx.AsyncClient(base_url=tight_server.base_url, timeout=120) as c:
        rs = await asyncio.gather(*[c.post("/v1/completions", json=body) for _ in range(6)])
    codes = sorted(r.status_code for r in rs)
    assert codes.count(200) >= 1, codes  # the first one always gets the queue place
    assert 503 in codes, codes
    for r in rs:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
            err = r.json()["error"]
            assert err["code"] == "queue_full" and err["type"] == "service_unavailable_error"
        else:
            assert r.status_code == 200, r.text
    assert "toolrl_serving_requests_total{endpoint=\"/v1/completions\",status=\"503\"}" in \
        httpx.get(tight_server.base_url + "/metrics").text


def test_streaming_client_disconnect_cancels_generation(tight_server):
    base = tight_server.base_url
    _wait_idle(base)
    before = httpx.get(base + "/metrics").text
    body = {"model": "smollm2-135m-instruct", "prompt": "Chapter 1. It was a dark and stormy night;",
            "max_tokens": 512, "temperature": 1.0, "seed": 7, "stream": True}
    with httpx.Client(base_url=base, timeout=60) as c:
        with c.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            got = next(line for line in lines if line.startswith("data: {"))
            assert '"text"' in got
            assert httpx.get(base + "/health").json()["active"] == 1
        # leaving the block closes the connection mid-stream
    waited = _wait_idle(base)
    after = httpx.get(base + "/metrics").text
    assert _metric(after, "toolrl_serving_cancelled_total") == _metric(before, "toolrl_serving_cancelled_total") + 1
    generated = (_metric(after, "toolrl_serving_engine_generated_tokens")
                 - _metric(before, "toolrl_serving_engine_generated_tokens"))
    assert generated < 512, "the generation ran to max_tokens although the client had left"
    assert waited < 10


def test_non_streaming_client_disconnect_cancels_generation(tight_server):
    base = tight_server.base_url
    _wait_idle(base)
    before = httpx.get(base + "/metrics").text
    payload = (b'{"model": "smollm2-135m-instruct", "prompt": "Chapter 1. It was a dark and stormy night;", '
               b'"max_tokens": 512, "temperature": 1.0, "seed": 7}')
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    t0 = time.monotonic()
    while httpx.get(base + "/health").json()["active"] == 0:
        assert time.monotonic() - t0 < 30, "the request never reached the engine"
        time.sleep(0.02)
    sock.close()
    _wait_idle(base)
    after = httpx.get(base + "/metrics").text
    assert _metric(after, "toolrl_serving_cancelled_total") == _metric(before, "toolrl_serving_cancelled_total") + 1
    assert (_metric(after, "toolrl_serving_engine_generated_tokens")
            - _metric(before, "toolrl_serving_engine_generated_tokens")) < 512
