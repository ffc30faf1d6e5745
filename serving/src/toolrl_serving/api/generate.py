"""POST /generate: the simple form (prompt in, response out) that seed 002's server offered.

Unlike that server, the prompt goes through the model's chat template by default
(`chat: true`) and requests are batched with everyone else's.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from toolrl.rollout.base import SamplingParams

from toolrl_serving.api.common import STRICT, Int, effective_temperature, new_id
from toolrl_serving.deps import Authorized, EngineDep, MetricsDep, SettingsDep
from toolrl_serving.errors import ERROR_RESPONSES, invalid
from toolrl_serving.limits import unless_disconnected

router = APIRouter(tags=["simple"])


class GenerateRequest(BaseModel):
    model_config = STRICT

    prompt: str = Field(min_length=1, description="The user's text.")
    max_tokens: Int | None = Field(None, ge=1, description="Most tokens to generate (default 100, capped by the "
                                   "server's limit).")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature; 0 (default) is greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: Int | None = Field(None, ge=-(2**63), le=2**63 - 1, description="Seed for reproducible sampling.")
    chat: bool = Field(True, description="Wrap the prompt as a user message in the chat template (as in training); "
                       "false sends the raw text.")


class GenerateResponse(BaseModel):
    response: str = Field(description="The generated text.")
    finish_reason: str = Field(description="stop or length.")
    prompt_tokens: int = Field(description="Tokens in the (rendered) prompt.")
    completion_tokens: int = Field(description="Tokens generated.")


@router.post("/generate", response_model=GenerateResponse, dependencies=[Authorized],
             responses={k: v for k, v in ERROR_RESPONSES.items() if k != 404}, summary="Generate (simple form)")
async def generate(body: GenerateRequest, request: Request, engine: EngineDep, settings: SettingsDep,
                   metrics: MetricsDep) -> GenerateResponse:
    limits = settings.limits
    max_tokens = body.max_tokens or min(100, limits.max_tokens)
    if max_tokens > limits.max_tokens:
        raise invalid("max_tokens", f"max_tokens is {max_tokens}, above this server's limit of "
                      f"{limits.max_tokens}", code="limit_exceeded")
    if body.chat:
        ids = engine.render_chat([{"role": "user", "content": body.prompt}], None)
    else:
        ids = engine.encode(body.prompt)
    engine.check_prompt(ids, max_tokens, "prompt")
    sampling = SamplingParams(temperature=effective_temperature(body.temperature, body.top_p), top_p=body.top_p,
                              max_tokens=max_tokens, seed=body.seed)
    if body.chat:
        sampling = engine.chat_sampling(sampling)
    (choice,) = await unless_disconnected(request, engine.generate([ids], sampling, 1, new_id("gen")))
    metrics.count_tokens(len(ids), len(choice.token_ids))
    return GenerateResponse(response=choice.text, finish_reason=choice.finish_reason, prompt_tokens=len(ids),
                            completion_tokens=len(choice.token_ids))
