"""Sentence embeddings with the packaged all-MiniLM-L6-v2, through sentence-transformers.

The model folder is a sentence-transformers layout (transformer, mean pooling,
L2 normalisation), so `SentenceTransformer(folder).encode` gives the vectors the
model was published with; toolrl adds a cache and the async wrapper.

One `Embedder` is loaded per run and shared by every episode through
`EnvContext.shared`; it caches vectors by text, so the same memories seen by
the n samples of a GRPO group are encoded once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SHARED_KEY = "toolrl-env-memory/embedder"


class Embedder:
    """Encodes texts to unit vectors (cosine similarity = dot product).

    Args:
        model: a name known to `toolrl.models.resolve_embedding_model` or a local folder.
        max_length: tokens per text (longer texts are truncated, as sentence-transformers does).
        cache_size: vectors kept by text (least recently used go first).
    """

    def __init__(self, model: str = "all-minilm-l6-v2", *, max_length: int = 256, cache_size: int = 20_000,
                 batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        from toolrl.models import resolve_embedding_model

        path = Path(model) if Path(model).is_dir() else resolve_embedding_model(model)
        self.path = path
        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.model.max_seq_length = max_length
        self.dim: int = int(self.model.get_embedding_dimension())
        self.max_length = max_length
        self.batch_size = batch_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # guards the cache
        self._model_lock = threading.Lock()  # one forward pass at a time (torch already uses all cores)
        logger.info("loaded embedding model %s (%d dims)", path, self.dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 vectors, one row per text (blocking)."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing: list[int] = []
        with self._lock:
            for i, t in enumerate(texts):
                v = self._cache.get(t)
                if v is None:
                    missing.append(i)
                else:
                    self._cache.move_to_end(t)
                    out[i] = v
        todo = list(dict.fromkeys(texts[i] for i in missing))
        if todo:
            vecs = self._encode_uncached(todo)
            with self._lock:
                for t, v in zip(todo, vecs):
                    self._cache[t] = v
                    if len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
            fresh = dict(zip(todo, vecs))
            for i in missing:
                out[i] = fresh[texts[i]]
        return out

    async def aencode(self, texts: Sequence[str]) -> np.ndarray:
        """`encode` in a worker thread, so the event loop keeps serving other episodes."""
        return await asyncio.to_thread(self.encode, list(texts))

    def _encode_uncached(self, texts: list[str]) -> np.ndarray:
        with self._model_lock:
            vecs = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)


async def shared_embedder(ctx, model: str = "all-minilm-l6-v2") -> Embedder:
    """The run's embedder (loaded on first use, in a thread)."""

    async def create() -> Embedder:
        return await asyncio.to_thread(Embedder, model)

    return await ctx.shared(f"{SHARED_KEY}:{model}", create)
