"""`create_app(settings)`: the FastAPI application.

The lifespan loads the model once and keeps the heavy state on `app.state`
(`engine`, `metrics`, `settings`); endpoints reach it through the typed
dependencies in `deps.py`. Importing this module loads neither torch, Ray nor
training code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from toolrl_serving import __version__
from toolrl_serving.api import chat, completions, generate, health, models
from toolrl_serving.engine import EngineStats, ServingEngine
from toolrl_serving.errors import install_handlers
from toolrl_serving.limits import BodyLimitMiddleware, ClientDisconnected
from toolrl_serving.metrics import MetricsMiddleware, ServerMetrics
from toolrl_serving.settings import ServerSettings

logger = logging.getLogger(__name__)

EngineFactory = Callable[[ServerSettings], ServingEngine]


def create_app(settings: ServerSettings, *, engine_factory: EngineFactory | None = None) -> FastAPI:
    """The app for `settings`. `engine_factory` (default: `loading.load_engine`) builds the engine at startup."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        factory = engine_factory
        if factory is None:
            from toolrl_serving.loading import load_engine

            factory = load_engine
        # load in a worker thread so the loop stays responsive (/health answers "loading")
        app.state.engine = await asyncio.to_thread(factory, settings)
        logger.info("serving %s", settings.model_name)
        try:
            yield
        finally:
            engine, app.state.engine = app.state.engine, None
            await asyncio.to_thread(engine.close)

    app = FastAPI(
        title="toolrl serving",
        version=__version__,
        description="OpenAI-compatible API for a toolrl-trained model: the training chat template and tool-call "
        "parser, requests batched by the shared rollout engine.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = None
    app.state.started = int(time.time())

    def _stats() -> EngineStats:
        engine = app.state.engine
        if engine is None:
            raise RuntimeError("no engine")
        return engine.stats()

    app.state.metrics = ServerMetrics(_stats)
    install_handlers(app)

    async def _disconnected(request: Request, exc: ClientDisconnected) -> Response:
        app.state.metrics.cancelled.inc()
        return Response(status_code=499)  # nobody reads it; recorded as 499 (client closed request)

    app.add_exception_handler(ClientDisconnected, _disconnected)  # type: ignore[arg-type]
    for module in (chat, completions, models, generate, health):
        app.include_router(module.router)
    # outermost first: metrics see every request, including the ones refused for size
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=lambda: app.state.metrics)
    return app
