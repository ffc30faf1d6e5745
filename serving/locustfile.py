"""Locust load test for a toolrl server: chat, chat with tools, streaming, /generate, and a share of
malformed requests that must be refused with a 4xx (counted as expected, under their own names).

    locust -f serving/locustfile.py --headless -u 32 -r 8 -t 60s -H http://127.0.0.1:8000

`make loadtest` (scripts/loadtest.sh) starts the server, runs this, and writes the CSV and a summary
under benchmarks/results/. Environment:

    TOOLRL_LOADTEST_MODEL       model id the server serves (default smollm2-135m-instruct)
    TOOLRL_LOADTEST_API_KEY     Bearer key, if the server wants one
    TOOLRL_LOADTEST_MAX_TOKENS  max_tokens per request (default 32)
"""

from __future__ import annotations

import json
import os
import random

from locust import FastHttpUser, between, task

MODEL = os.environ.get("TOOLRL_LOADTEST_MODEL", "smollm2-135m-instruct")
API_KEY = os.environ.get("TOOLRL_LOADTEST_API_KEY", "")
MAX_TOKENS = int(os.environ.get("TOOLRL_LOADTEST_MAX_TOKENS", "32"))

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a list comprehension is in Python.",
    "Give me three tips for better sleep.",
    "What is 17 times 23?",
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "Name a few prime numbers.",
    "How do I reverse a string in Python?",
]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CITIES = ["Paris", "Rome", "Tokyo", "Lima", "Oslo", "Cairo"]

# requests a correct server refuses with a 4xx: (label, body bytes or JSON object, content type)
MALFORMED: list[tuple[str, object, str]] = [
    ("broken json", b'{"model": "m", "messages": [', "application/json"),
    ("empty messages", {"model": MODEL, "messages": []}, "application/json"),
    ("wrong type", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
     "application/json"),
    ("unknown model", {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
     "application/json"),
    ("max_tokens over limit", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                               "max_tokens": 10**9}, "application/json"),
    ("unknown field", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temprature": 1},
     "application/json"),
    ("not json", b"hello", "text/plain"),
]


def _json(r) -> dict:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _headers(content_type: str = "application/json") -> dict[str, str]:
    h = {"Content-Type": content_type}
    if API_KEY:
        h["Authorization"] = f"Bearer {API_KEY}"
    return h


class ChatUser(FastHttpUser):
    wait_time = between(0.05, 0.5)
    # a CPU server at 32 users answers in seconds to tens of seconds; a timeout is not the server's error
    network_timeout = 600.0
    connection_timeout = 30.0

    def _chat(self, body: dict, name: str) -> None:
        with self.client.post("/v1/chat/completions", data=json.dumps(body), headers=_headers(), name=name,
                              catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {r.text[:200]}")
                return
            try:
                choice = _json(r)["choices"][0]
            except (KeyError, IndexError):
                r.failure("not a chat completion")
                return
            if choice["finish_reason"] not in ("stop", "length", "tool_calls"):
                r.failure(f"finish_reason {choice['finish_reason']}")

    @task(5)
    def chat(self) -> None:
        self._chat({"model": MODEL, "messages": [{"role": "user", "content": random.choice(QUESTIONS)}],
                    "max_tokens": MAX_TOKENS, "temperature": 0.7}, "chat")

    @task(2)
    def chat_with_tools(self) -> None:
        city = random.choice(CITIES)
        self._chat({"model": MODEL, "tools": [WEATHER_TOOL], "max_tokens": MAX_TOKENS, "temperature": 0.7,
                    "messages": [{"role": "user", "content": f"What is the weather in {city}?"}]}, "chat+tools")

    @task(2)
    def chat_stream(self) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": random.choice(QUESTIONS)}],
                "max_tokens": MAX_TOKENS, "temperature": 0.7, "stream": True}
        with self.client.post("/v1/chat/completions", data=json.dumps(body), headers=_headers(),
                              name="chat stream", catch_response=True) as r:
            text = r.text or ""
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {text[:200]}")
            elif not text.rstrip().endswith("data: [DONE]"):
                r.failure("the stream did not end with data: [DONE]")
            elif '"error"' in text:
                r.failure("error event in the stream")

    @task(1)
    def generate(self) -> None:
        with self.client.post("/generate", data=json.dumps({"prompt": random.choice(QUESTIONS),
                                                            "max_tokens": MAX_TOKENS}),
                              headers=_headers(), name="generate", catch_response=True) as r:
            if r.status_code != 200 or "response" not in _json(r):
                r.failure(f"status {r.status_code}")

    @task(1)
    def malformed(self) -> None:
        label, body, ctype = random.choice(MALFORMED)
        data = body if isinstance(body, bytes) else json.dumps(body)
        with self.client.post("/v1/chat/completions", data=data, headers=_headers(ctype),
                              name=f"malformed: {label} (4xx expected)", catch_response=True) as r:
            if 400 <= r.status_code < 500 and "error" in _json(r):
                r.success()
            else:
                r.failure(f"expected a 4xx with an error body, got {r.status_code}")
