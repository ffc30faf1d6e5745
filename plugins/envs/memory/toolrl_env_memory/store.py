"""A per-user memory store: texts with unit vectors, searched by cosine similarity.

The index is FAISS (`IndexFlatIP`, exact inner product) when `faiss` imports,
else a numpy matrix product; both return the same hits (ties broken by
insertion order). A store saves to and loads from a folder
(`memories.jsonl` + `vectors.npy`), which is how memory persists across
sessions when the environment is given `persist_dir`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from toolrl.errors import ToolrlError

logger = logging.getLogger(__name__)

Backend = Literal["auto", "faiss", "numpy"]


@dataclass(frozen=True)
class Memory:
    """One remembered note.

    Attributes:
        id: unique in the store (e.g. "s2-1": session 2, utterance 1; "new-0": saved during the episode).
        text: the note itself.
        session: which session it came from (None if unknown).
        date: the session's date, ISO format ("" if unknown).
    """

    id: str
    text: str
    session: int | None = None
    date: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    memory: Memory
    score: float


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str) -> str:
    if backend not in ("auto", "faiss", "numpy"):
        raise ToolrlError(f"unknown memory index backend {backend!r}", where="envs.memory.backend",
                          fix="use 'auto', 'faiss' or 'numpy'")
    if backend == "auto":
        return "faiss" if faiss_available() else "numpy"
    if backend == "faiss" and not faiss_available():
        raise ToolrlError("the faiss index was asked for but faiss is not installed", where="envs.memory.backend",
                          fix="pip install faiss-cpu (or 'toolrl-env-memory[faiss]'), or set backend=numpy")
    return backend


class MemoryStore:
    """Memories and their vectors, searchable by a query vector."""

    def __init__(self, dim: int, backend: Backend = "auto"):
        self.dim = dim
        self.backend = resolve_backend(backend)
        self._memories: list[Memory] = []
        self._ids: dict[str, int] = {}
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._index: Any = None
        if self.backend == "faiss":
            import faiss

            self._index = faiss.IndexFlatIP(dim)

    def __len__(self) -> int:
        return len(self._memories)

    def __contains__(self, memory_id: object) -> bool:
        return memory_id in self._ids

    @property
    def memories(self) -> list[Memory]:
        return list(self._memories)

    def get(self, memory_id: str) -> Memory:
        return self._memories[self._ids[memory_id]]

    def add(self, memories: Sequence[Memory], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(memories), self.dim)
        for m in memories:
            if m.id in self._ids:
                raise ValueError(f"memory id {m.id!r} is already in the store")
        for m in memories:
            self._ids[m.id] = len(self._memories)
            self._memories.append(m)
        self._vectors = np.concatenate([self._vectors, vectors], axis=0)
        if self._index is not None:
            self._index.add(vectors)

    def search(self, query: np.ndarray, k: int) -> list[Hit]:
        """The k most similar memories, best first (fewer if the store is smaller)."""
        k = min(int(k), len(self._memories))
        if k <= 0:
            return []
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        if self._index is not None:
            scores, idx = self._index.search(q, k)
            pairs = [(int(i), float(s)) for i, s in zip(idx[0], scores[0]) if i >= 0]
        else:
            sims = self._vectors @ q[0]
            # stable sort on -score keeps insertion order among ties, like faiss
            order = np.argsort(-sims, kind="stable")[:k]
            pairs = [(int(i), float(sims[i])) for i in order]
        return [Hit(self._memories[i], s) for i, s in pairs]

    # -- persistence ---------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write `memories.jsonl` and `vectors.npy` into `folder` (each replaced atomically)."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".memories.{os.getpid()}.tmp"
        with tmp.open("w", encoding="utf-8") as fh:
            for m in self._memories:
                fh.write(json.dumps(asdict(m), ensure_ascii=False) + "\n")
        tmp_vec = d / f".vectors.{os.getpid()}.tmp.npy"
        np.save(tmp_vec, self._vectors)
        os.replace(tmp_vec, d / "vectors.npy")
        os.replace(tmp, d / "memories.jsonl")

    @classmethod
    def load(cls, folder: str | Path, dim: int, backend: Backend = "auto") -> MemoryStore:
        d = Path(folder)
        store = cls(dim, backend)
        mem_file, vec_file = d / "memories.jsonl", d / "vectors.npy"
        if not mem_file.exists():
            return store
        memories = [Memory(**json.loads(line)) for line in mem_file.read_text(encoding="utf-8").splitlines()
                    if line.strip()]
        vectors = np.load(vec_file) if vec_file.exists() else np.zeros((0, dim), dtype=np.float32)
        if vectors.shape != (len(memories), dim):
            raise ToolrlError(
                f"the saved memory store is inconsistent ({len(memories)} memories, vectors of shape {vectors.shape})",
                where=str(d), fix="delete the folder to start this user's memory afresh")
        store.add(memories, vectors)
        return store
