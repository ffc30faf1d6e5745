"""Load what a server needs, once: the model folder, tokenizer, tool parser and the rollout backend."""

from __future__ import annotations

import logging
import time

from toolrl_serving.engine import ServingEngine
from toolrl_serving.settings import ServerSettings

logger = logging.getLogger(__name__)


def preflight(settings: ServerSettings) -> None:
    """Fail fast, before the server starts: an unknown backend, tool parser or model is one clear error
    (listing what exists), not a traceback from the startup hook."""
    from toolrl import models, plugins

    plugins.registry("rollout_backends").get(settings.backend)
    plugins.registry("tool_parsers").get(settings.tool_parser)
    models.resolve(settings.model)


def load_engine(settings: ServerSettings) -> ServingEngine:
    """Resolve the model (name, folder or checkpoint), load the tokenizer, start the backend."""
    from transformers import AutoConfig, AutoTokenizer

    from toolrl import models, plugins
    from toolrl.chat.parsers import get_parser
    from toolrl.rollout.base import BackendSettings

    t0 = time.perf_counter()
    path = models.resolve(settings.model)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    config = AutoConfig.from_pretrained(str(path))
    context = getattr(config, "max_position_embeddings", None)
    extra = {"max_queue": settings.max_queue, **settings.backend_args}
    backend = plugins.registry("rollout_backends").get(settings.backend)(BackendSettings(
        model_path=str(path), dtype=settings.dtype, device=settings.device, max_batch_size=settings.max_batch_size,
        tokenizer=tokenizer, seed=settings.seed, extra=extra))
    parser = get_parser(settings.tool_parser)
    logger.info("loaded %s (%s backend) in %.1f s", path, settings.backend, time.perf_counter() - t0)
    return ServingEngine(backend=backend, tokenizer=tokenizer, parser=parser, settings=settings,
                         context_length=int(context) if context else None)
