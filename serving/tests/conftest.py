"""Servers started for real: `python -m toolrl_serving` (uvicorn) on 127.0.0.1 and a free port,
serving the real SmolLM2-135M-Instruct through the hf backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from toolrl_serving.process import ServerProcess, start_server

MODEL_ID = "smollm2-135m-instruct"
API_KEYS = ("sk-test-alpha", "sk-test-beta")
KEY_ENV = "TOOLRL_SERVING_TEST_KEYS"
# small limits, so limit errors and fuzzing stay fast
LIMITS = ("--max-tokens", "32", "--max-n", "4", "--max-prompt-tokens", "768", "--max-body-bytes", "65536",
          "--num-threads", "1")


def serve(model, *args: str, keys: tuple[str, ...] = ()) -> ServerProcess:
    extra = ["--served-model-name", MODEL_ID, "--log-level", "warning", *args]
    env = {}
    if keys:
        env[KEY_ENV] = ",".join(keys)
        extra += ["--api-key-env", KEY_ENV]
    return start_server(model, *extra, env=env)


@pytest.fixture(scope="session")
def server(smollm2_path) -> Iterator[ServerProcess]:
    """One server for the session: API keys on, small limits, batches of up to 8."""
    s = serve(smollm2_path, *LIMITS, "--max-batch-size", "8", keys=API_KEYS)
    yield s
    s.stop()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEYS[0]}"}


@pytest.fixture
def openai_client(server):
    import openai

    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=API_KEYS[1], max_retries=0, timeout=120)
    yield client
    client.close()


@pytest.fixture
def model_id() -> str:
    return MODEL_ID


@pytest.fixture
def api_keys() -> tuple[str, ...]:
    return API_KEYS
