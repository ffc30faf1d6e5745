"""The `memory` environment: `remember(text)` and `recall(query, k)` over a per-user store.

One environment per episode (`factory(ctx, **args)`); the embedding model is
shared by the run through `ctx`. What the user said in earlier sessions comes
in `env_args.sessions` and is loaded into the store at `reset`; with
`persist_dir` set, the user's store is also read from and written back to
`persist_dir/<user>/`, so memory carries over from one episode (session) to
the next.

`state()` reports every recall (query, k, the ids and texts it returned) and
every note saved, which the `memory_recall` reward reads.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from toolrl.errors import ToolrlError
from toolrl.types import Task, ToolCall, ToolResult

from toolrl_env_memory.embedder import Embedder, shared_embedder
from toolrl_env_memory.store import Memory, MemoryStore, resolve_backend

logger = logging.getLogger(__name__)

ENV_NAME = "memory"

REMEMBER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "remember",
        "description": "Save a note about the user to long-term memory, for later sessions.",
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string", "description": "The note, one self-contained sentence."}},
            "required": ["text"],
        },
    },
}

RECALL_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "recall",
        "description": "Search the user's long-term memory (notes from earlier sessions) and return the most "
                       "relevant notes.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to look for, e.g. 'the user's phone model'."},
                "k": {"type": "integer", "description": "How many notes to return (default 3).", "minimum": 1},
            },
            "required": ["query"],
        },
    },
}

TOOLS: tuple[dict[str, Any], ...] = (RECALL_TOOL, REMEMBER_TOOL)

_SAFE_USER = re.compile(r"[^A-Za-z0-9_.-]")


def parse_sessions(sessions: Any, where: str) -> list[Memory]:
    """`[{"date": "2024-03-02", "notes": ["...", ...]}, ...]` -> notes with ids `s<session>-<j>` (sessions from 1)."""
    if sessions is None:
        return []
    if not isinstance(sessions, Sequence) or isinstance(sessions, str):
        raise ToolrlError("env_args.sessions must be a list of sessions", where=where,
                          fix='write "sessions": [{"date": "2024-03-02", "notes": ["I have a Pixel 7."]}]')
    out: list[Memory] = []
    for i, s in enumerate(sessions, 1):
        if not isinstance(s, Mapping) or not isinstance(s.get("notes"), Sequence) or isinstance(s.get("notes"), str):
            raise ToolrlError(f"env_args.sessions[{i - 1}] must be an object with a 'notes' list", where=where,
                              fix='write {"date": "2024-03-02", "notes": ["..."]}')
        for j, note in enumerate(s["notes"]):
            if not isinstance(note, str) or not note.strip():
                raise ToolrlError(f"env_args.sessions[{i - 1}].notes[{j}] must be a non-empty string", where=where,
                                  fix="remove empty notes")
            out.append(Memory(id=f"s{i}-{j}", text=note, session=i, date=str(s.get("date", ""))))
    return out


class MemoryEnv:
    """One episode with one user's memory.

    Args (from the task's `env_args` over the config's `envs.memory`):
        user: whose memory this is (names the folder under `persist_dir`).
        sessions: earlier sessions, `[{"date": ..., "notes": [...]}]`, loaded into the store at reset.
        k: default number of notes `recall` returns.
        max_k: the most notes one `recall` may return.
        backend: index backend, "auto" (faiss if installed), "faiss" or "numpy".
        persist_dir: if set, load `persist_dir/<user>/` at reset and save it back at close.
        embedding_model: name for `toolrl.models.resolve_embedding_model`, or a folder.
        max_note_chars: longest note `remember` accepts.
    """

    def __init__(self, ctx: Any, *, user: str = "user", sessions: Any = (), k: int = 3, max_k: int = 10,
                 backend: str = "auto", persist_dir: str | None = None,
                 embedding_model: str = "all-minilm-l6-v2", max_note_chars: int = 1000):
        if not isinstance(k, int) or not isinstance(max_k, int) or not 1 <= k <= max_k:
            raise ToolrlError(f"memory env: need 1 <= k <= max_k, got k={k!r}, max_k={max_k!r}",
                              where="envs.memory", fix="e.g. envs.memory.k=3 envs.memory.max_k=10")
        self.ctx = ctx
        self.user = str(user)
        self.sessions = sessions
        self.k = k
        self.max_k = max_k
        self.backend = resolve_backend(backend)
        self.persist_dir = Path(persist_dir) if persist_dir else None
        self.embedding_model = embedding_model
        self.max_note_chars = max_note_chars
        self.embedder: Embedder | None = None
        self.store: MemoryStore | None = None
        self.task_id: str | None = None
        self._recalls: list[dict[str, Any]] = []
        self._remembered: list[dict[str, Any]] = []
        self._errors = 0

    # -- episode -------------------------------------------------------------
    async def reset(self, task: Task) -> None:
        self.task_id = task.id
        where = f"task {task.id} env_args"
        seeded = parse_sessions(self.sessions, where)
        self.embedder = await shared_embedder(self.ctx, self.embedding_model)
        store: MemoryStore | None = None
        if self.persist_dir is not None:
            folder = self._user_dir()
            store = MemoryStore.load(folder, self.embedder.dim, self.backend)
        if store is None:
            store = MemoryStore(self.embedder.dim, self.backend)
        fresh = [m for m in seeded if m.id not in store]
        if fresh:
            store.add(fresh, await self.embedder.aencode([m.text for m in fresh]))
        self.store = store
        self._recalls, self._remembered, self._errors = [], [], 0

    async def step(self, call: ToolCall) -> ToolResult:
        if self.store is None or self.embedder is None:
            return ToolResult("The memory is not ready (reset was not called).", infra_error=True,
                              info={"status": "not_reset"})
        if call.name == "recall":
            return await self._recall(call.arguments)
        if call.name == "remember":
            return await self._remember(call.arguments)
        self._errors += 1
        return ToolResult(f"Unknown tool {call.name!r}. The tools are recall(query, k) and remember(text).",
                          info={"status": "unknown_tool", "error": True})

    def state(self) -> dict[str, Any]:
        recalled: list[str] = []
        for r in self._recalls:
            recalled.extend(h["id"] for h in r["hits"])
        return {
            "user": self.user,
            "recalls": [dict(r) for r in self._recalls],
            "recalled_ids": list(dict.fromkeys(recalled)),
            "remembered": [dict(m) for m in self._remembered],
            "num_memories": len(self.store) if self.store is not None else 0,
            "tool_errors": self._errors,
        }

    async def close(self) -> None:
        if self.persist_dir is not None and self.store is not None:
            self.store.save(self._user_dir())

    # -- tools ---------------------------------------------------------------
    async def _recall(self, args: Mapping[str, Any]) -> ToolResult:
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            self._errors += 1
            return ToolResult('recall needs a non-empty "query" string, e.g. {"query": "the user\'s phone model"}.',
                              info={"status": "bad_arguments", "error": True})
        k = args.get("k", self.k)
        try:
            k = int(k)
        except (TypeError, ValueError):
            self._errors += 1
            return ToolResult(f'recall: "k" must be a whole number, got {k!r}.',
                              info={"status": "bad_arguments", "error": True})
        k = max(1, min(k, self.max_k))
        assert self.store is not None and self.embedder is not None
        try:
            qvec = await self.embedder.aencode([query])
        except Exception as exc:  # the embedding model broke: not the policy's fault
            logger.exception("embedding the recall query failed")
            return ToolResult(f"memory search failed: {type(exc).__name__}", infra_error=True,
                              info={"status": "infra_error"})
        hits = self.store.search(qvec[0], k)
        self._recalls.append({
            "query": query, "k": k,
            "hits": [{"id": h.memory.id, "text": h.memory.text, "score": round(h.score, 4)} for h in hits],
        })
        if not hits:
            return ToolResult("No memories stored for this user yet.", info={"status": "ok", "hits": 0})
        lines = [f"{len(hits)} note(s) from memory, most relevant first:"]
        for i, h in enumerate(hits, 1):
            when = ", ".join(p for p in (f"session {h.memory.session}" if h.memory.session else "",
                                         h.memory.date) if p)
            lines.append(f"{i}. {f'({when}) ' if when else ''}{h.memory.text}")
        return ToolResult("\n".join(lines), info={"status": "ok", "hits": len(hits)})

    async def _remember(self, args: Mapping[str, Any]) -> ToolResult:
        text = args.get("text")
        if not isinstance(text, str) or not text.strip():
            self._errors += 1
            return ToolResult('remember needs a non-empty "text" string.',
                              info={"status": "bad_arguments", "error": True})
        text = text.strip()
        if len(text) > self.max_note_chars:
            self._errors += 1
            return ToolResult(f"remember: the note has {len(text)} characters; keep it under {self.max_note_chars}.",
                              info={"status": "bad_arguments", "error": True})
        assert self.store is not None and self.embedder is not None
        try:
            vec = await self.embedder.aencode([text])
        except Exception as exc:
            logger.exception("embedding a note failed")
            return ToolResult(f"saving to memory failed: {type(exc).__name__}", infra_error=True,
                              info={"status": "infra_error"})
        n = sum(1 for m in self.store.memories if m.id.startswith("new-"))
        memory = Memory(id=f"new-{n}", text=text, session=None, date="")
        self.store.add([memory], vec)
        self._remembered.append({"id": memory.id, "text": text})
        return ToolResult(f"Saved to memory (note {memory.id}).", info={"status": "ok"})

    def _user_dir(self) -> Path:
        assert self.persist_dir is not None
        return self.persist_dir / (_SAFE_USER.sub("_", self.user) or "user")


def memory_env(ctx: Any, **args: Any) -> MemoryEnv:
    """Factory registered as environment `memory`."""
    import inspect

    allowed = [p for p in inspect.signature(MemoryEnv.__init__).parameters if p not in ("self", "ctx")]
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ToolrlError(f"memory env: unknown argument(s) {unknown}", where="task env_args / envs.memory",
                          fix=f"valid arguments: {', '.join(allowed)}")
    return MemoryEnv(ctx, **args)
