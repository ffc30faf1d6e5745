"""Schemas shared by the OpenAI endpoints: sampling fields, usage, stream options.

Request models forbid unknown fields (OpenAI answers those with a 400 too), so
a misspelt option is an error that names it instead of being ignored.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from toolrl.rollout.base import SamplingParams

from toolrl_serving.errors import APIError, invalid
from toolrl_serving.settings import Limits

# request bodies: unknown fields and wrong JSON types ("5" for an integer) are errors, as in OpenAI's API
STRICT = ConfigDict(extra="forbid", strict=True)


def _integral(v: object) -> object:
    """JSON Schema counts 2.0 as an integer; accept it as 2 (2.5 and "2" stay errors)."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


Int = Annotated[int, BeforeValidator(_integral)]

StopField = Annotated[
    str | list[Annotated[str, Field(min_length=1)]] | None,
    Field(None, description="Up to 4 strings; generation stops before the first one (not included in the text)."),
]


class StreamOptions(BaseModel):
    model_config = STRICT

    include_usage: bool = Field(False, description="Send a last chunk with token usage before `data: [DONE]`.")
    continuous_usage_stats: bool = Field(False, description="Accepted for compatibility; ignored.")


class SamplingRequest(BaseModel):
    """Fields every generating endpoint accepts (OpenAI names, OpenAI ranges)."""

    model_config = STRICT

    model: str = Field(description="The served model's id (see GET /v1/models).")
    temperature: float | None = Field(1.0, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
    top_p: float | None = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: Int | None = Field(None, ge=0, description="Keep the k most likely tokens (0 or null = off). Extension.")
    n: Int = Field(1, ge=1, description="Number of choices to generate.")
    stop: StopField = None
    seed: Int | None = Field(None, ge=-(2**63), le=2**63 - 1, description="Seed for reproducible sampling.")
    stream: bool | None = Field(False, description="Send the answer as server-sent events ending in `data: [DONE]`.")
    stream_options: StreamOptions | None = Field(None, description="Options for streaming (only with stream).")
    presence_penalty: float | None = Field(0.0, ge=-2.0, le=2.0, description="Only 0 is supported.")
    frequency_penalty: float | None = Field(0.0, ge=-2.0, le=2.0, description="Only 0 is supported.")
    logit_bias: dict[str, float] | None = Field(None, description="Not supported; must be empty.")
    user: str | None = Field(None, description="End-user id; accepted and ignored.")

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> list[str] | None:
        if v is None:
            return None
        if isinstance(v, str):
            if not v:
                raise ValueError("a stop string must not be empty")
            return [v]
        return v

    def stop_list(self) -> list[str]:
        return list(self.stop or [])

    def check_common(self, limits: Limits, max_tokens: int | None) -> None:
        """Limits and unsupported options, each refused with a 400 naming the field."""
        if max_tokens is not None and max_tokens > limits.max_tokens:
            raise invalid("max_tokens", f"max_tokens is {max_tokens}, above this server's limit of "
                          f"{limits.max_tokens}; ask for at most {limits.max_tokens}", code="limit_exceeded")
        if self.n > limits.max_n:
            raise invalid("n", f"n is {self.n}, above this server's limit of {limits.max_n}", code="limit_exceeded")
        if len(self.stop_list()) > limits.max_stop:
            raise invalid("stop", f"{len(self.stop_list())} stop strings given; at most {limits.max_stop} allowed",
                          code="limit_exceeded")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise invalid(name, f"{name} is not supported by this server; leave it at 0", code="unsupported")
        if self.logit_bias:
            raise invalid("logit_bias", "logit_bias is not supported by this server; leave it out",
                          code="unsupported")
        if self.stream_options is not None and not self.stream:
            raise invalid("stream_options", "stream_options is only allowed with stream: true")

    def sampling(self, max_tokens: int) -> SamplingParams:
        top_p = 1.0 if self.top_p is None else float(self.top_p)
        return SamplingParams(
            temperature=effective_temperature(1.0 if self.temperature is None else float(self.temperature), top_p),
            top_p=top_p,
            top_k=self.top_k or 0,
            max_tokens=max_tokens,
            stop=tuple(self.stop_list()),
            seed=self.seed,
        )


# below this a temperature or top_p means greedy: dividing logits by ~0 overflows to inf/nan, and a top_p
# that rounds to 0 in float32 would drop every token (vLLM draws the same line for temperature)
GREEDY_BELOW = 1e-5


def effective_temperature(temperature: float, top_p: float = 1.0) -> float:
    return 0.0 if temperature < GREEDY_BELOW or top_p < GREEDY_BELOW else temperature


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Tokens in the prompt (after the chat template).")
    completion_tokens: int = Field(description="Tokens generated, over all choices.")
    total_tokens: int = Field(description="prompt_tokens + completion_tokens.")


FinishReason = Literal["stop", "length", "tool_calls", "abort"]


def check_model(requested: str, served: str) -> None:
    if requested != served:
        raise APIError(404, f"the model {requested!r} does not exist on this server; it serves {served!r} "
                       "(GET /v1/models lists it)", param="model", code="model_not_found", type="not_found_error")


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())
