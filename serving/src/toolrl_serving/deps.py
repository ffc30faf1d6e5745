"""Typed dependencies: the engine, settings and metrics live on `app.state` (loaded once by the lifespan)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from toolrl_serving.auth import check_credentials
from toolrl_serving.engine import ServingEngine
from toolrl_serving.errors import APIError
from toolrl_serving.metrics import ServerMetrics
from toolrl_serving.settings import ServerSettings

_bearer = HTTPBearer(auto_error=False, description="An API key from the server's --api-key-env variable.")


def get_settings(request: Request) -> ServerSettings:
    return request.app.state.settings


def get_engine(request: Request) -> ServingEngine:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise APIError(503, "the model is still loading; retry shortly", type="service_unavailable_error",
                       code="model_loading", headers={"Retry-After": "2"})
    return engine


def get_metrics(request: Request) -> ServerMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
EngineDep = Annotated[ServingEngine, Depends(get_engine)]
MetricsDep = Annotated[ServerMetrics, Depends(get_metrics)]


def require_api_key(settings: SettingsDep,
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    check_credentials(credentials, settings.api_keys)


Authorized = Depends(require_api_key)
