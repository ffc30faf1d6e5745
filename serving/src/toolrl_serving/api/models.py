"""GET /v1/models: the one model this server serves."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from toolrl_serving.deps import Authorized, EngineDep, SettingsDep
from toolrl_serving.errors import ERROR_RESPONSES

router = APIRouter(tags=["openai"])


class ModelCard(BaseModel):
    id: str = Field(description="Send this as `model` in requests.")
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the server started.")
    owned_by: str = Field("toolrl", description="Always 'toolrl'.")
    root: str = Field(description="The checkpoint, folder or model name the server loaded.")
    max_model_len: int | None = Field(None, description="The model's context length, when known.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(description="The served models (one).")


@router.get("/v1/models", response_model=ModelList, dependencies=[Authorized],
            responses={401: ERROR_RESPONSES[401]}, summary="List the served model")
async def list_models(settings: SettingsDep, engine: EngineDep, request: Request) -> ModelList:
    return ModelList(data=[ModelCard(id=settings.model_name, created=request.app.state.started, root=settings.model,
                                     max_model_len=engine.context_length)])
