"""GET /health (liveness + engine state) and GET /metrics (Prometheus text format)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from toolrl_serving.deps import MetricsDep

router = APIRouter(tags=["operations"])


class HealthResponse(BaseModel):
    status: Literal["ok", "loading"] = Field(description="ok once the model is loaded.")
    model: str = Field(description="The served model id.")
    queue_depth: int = Field(description="Requests waiting for a batch slot.")
    batch_size: int = Field(description="Sequences in the current batch.")
    active: int = Field(description="Sequences queued or being generated.")


@router.get("/health", response_model=HealthResponse, summary="Liveness and engine state",
            responses={503: {"model": HealthResponse, "description": "Still loading."}})
async def health(request: Request) -> HealthResponse | JSONResponse:
    state = request.app.state
    engine = getattr(state, "engine", None)
    if engine is None:
        body = HealthResponse(status="loading", model=state.settings.model_name, queue_depth=0, batch_size=0, active=0)
        return JSONResponse(body.model_dump(), status_code=503)
    s = engine.stats()
    return HealthResponse(status="ok", model=state.settings.model_name, queue_depth=s.queue_depth,
                          batch_size=s.batch_size, active=s.active)


@router.get("/metrics", summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format."}})
async def metrics(m: MetricsDep) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)
