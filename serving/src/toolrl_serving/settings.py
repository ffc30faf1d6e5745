"""What a server is started with: the model, the engine, security and request limits.

`ServerSettings` is plain data (no torch, no FastAPI), so the CLI, tests and
benchmarks build one and hand it to `create_app(settings)`.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from toolrl.errors import ToolrlError


class Limits(BaseModel):
    """Per-request limits. A request over one is refused with a 4xx naming the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_prompt_tokens: int = Field(
        4096, ge=1, description="Most prompt tokens (after the chat template) a request may carry."
    )
    max_tokens: int = Field(1024, ge=1, description="Largest `max_tokens` a request may ask for.")
    default_max_tokens: int = Field(
        256, ge=1, description="`max_tokens` of a chat request that gives none (capped by `max_tokens`)."
    )
    max_n: int = Field(8, ge=1, description="Largest `n` (choices per request).")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body in bytes (413 above).")
    max_stop: int = Field(4, ge=0, description="Most stop strings per request (OpenAI allows 4).")
    max_prompts: int = Field(32, ge=1, description="Most prompts in one /v1/completions request.")


class ServerSettings(BaseModel):
    """Everything `create_app` needs.

    The model is resolved with `toolrl.models.resolve`, rendered with its own chat
    template and parsed with the training tool-call parser, so what was trained is
    what answers.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="Checkpoint folder, HF folder or offline model name (toolrl.models).")
    served_model_name: str | None = Field(
        None, description="Name clients send as `model`; default: the name or folder given in `model`."
    )
    backend: str = Field("hf", description="Registered rollout backend that generates: hf, vllm, sglang.")
    tool_parser: str = Field("auto", description="Registered tool-call parser (use the one training used).")
    dtype: str = Field("float32", description="Weights dtype for the backend: float32, bfloat16, float16.")
    device: str = Field("auto", description="Device for the backend: auto, cpu, cuda, cuda:N.")
    max_batch_size: int = Field(32, ge=1, description="Most sequences the engine decodes together.")
    max_queue: int = Field(
        256, ge=1, description="Most requests waiting for a batch slot; more get 503 with Retry-After."
    )
    retry_after_s: int = Field(1, ge=1, description="Seconds put in the Retry-After header of a 503.")
    backend_args: dict[str, object] = Field(default_factory=dict, description="Extra backend-specific options.")
    api_keys: tuple[str, ...] = Field(
        (), description="Accepted Bearer keys; empty means no authentication.", repr=False
    )
    seed: int = Field(0, description="Seed of the engine's sampler for requests without `seed`.")
    limits: Limits = Field(default_factory=Limits, description="Per-request limits.")

    @field_validator("api_keys")
    @classmethod
    def _keys_not_empty(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        if any(not k.strip() for k in keys):
            raise ValueError("an API key is empty; remove empty entries (keys are comma-separated)")
        return tuple(k.strip() for k in keys)

    @property
    def model_name(self) -> str:
        """The id `/v1/models` lists and requests must name."""
        if self.served_model_name:
            return self.served_model_name
        p = Path(self.model)
        return p.name if p.is_dir() else self.model


def api_keys_from_env(var: str | None) -> tuple[str, ...]:
    """Keys from the environment variable `var` (comma-separated); () when `var` is None.

    A named variable that is unset or empty is an error: starting without the
    authentication the operator asked for would be worse than not starting.
    """
    if not var:
        return ()
    raw = os.environ.get(var, "")
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    if not keys:
        raise ToolrlError(
            f"--api-key-env names {var!r}, but that environment variable is unset or empty",
            where=var,
            fix=f"export {var}=<key>[,<key2>...]  or drop --api-key-env to serve without authentication",
        )
    return keys
