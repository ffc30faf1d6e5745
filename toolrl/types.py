"""The data that flows through toolrl: tasks, tool calls, trajectories, rewards.

All are frozen dataclasses. Messages are OpenAI-style chat dicts
(`{"role": ..., "content": ..., "tool_calls": [...]}`), tools are OpenAI-style
function schemas (`{"type": "function", "function": {"name", "description",
"parameters"}}`), so tasks written for other tools load here unchanged.

The JSONL task format (one `Task.to_dict()` per line) is documented in
docs/tasks.md; `Task.from_dict` checks it and names the bad field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from toolrl.errors import TaskFormatError

FinishReason = Literal["stop", "length", "max_turns", "env_done", "error"]
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "max_turns", "env_done", "error")

_ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Task:
    """One prompt for the agent, with everything needed to run and score it.

    Attributes:
        id: unique within its file; shows up in errors and metrics.
        messages: the conversation so far (usually a system and a user message).
        tools: tool schemas offered to the model (OpenAI function format).
        env: name of the registered environment that executes tool calls, or None.
        env_args: keyword arguments for that environment's `reset`.
        metadata: anything rewards need, e.g. `{"answer": "42"}` or test code.
    """

    id: str
    messages: tuple[Mapping[str, Any], ...]
    tools: tuple[Mapping[str, Any], ...] = ()
    env: str | None = None
    env_args: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "messages": [dict(m) for m in self.messages],
            "tools": [dict(t) for t in self.tools],
            "env": self.env,
            "env_args": dict(self.env_args),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "task") -> Task:
        """Build a Task from a JSON object, naming the first bad field."""
        if not isinstance(data, Mapping):
            raise TaskFormatError(
                f"a task must be a JSON object, got {type(data).__name__}",
                where=where,
                fix="write one JSON object per line with at least 'id' and 'messages'",
            )
        known = {"id", "messages", "tools", "env", "env_args", "metadata"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TaskFormatError(
                f"unknown field(s) {unknown}",
                where=where,
                fix=f"use only {sorted(known)}; put extra data under 'metadata'",
            )
        tid = data.get("id")
        if not isinstance(tid, (str, int)) or str(tid) == "":
            raise TaskFormatError(
                f"'id' must be a non-empty string, got {tid!r}", where=where, fix="give every task a unique id"
            )
        where = f"{where} (id={tid})"
        messages = data.get("messages")
        if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
            raise TaskFormatError(
                "'messages' must be a non-empty list of chat messages",
                where=where,
                fix='e.g. "messages": [{"role": "user", "content": "What is 2+2?"}]',
            )
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or m.get("role") not in _ROLES:
                raise TaskFormatError(
                    f"messages[{i}] must be an object with 'role' in {list(_ROLES)}, got {m!r}",
                    where=where,
                    fix='write {"role": "user", "content": "..."}',
                )
            if not isinstance(m.get("content", ""), (str, type(None))):
                raise TaskFormatError(
                    f"messages[{i}].content must be a string", where=where, fix="flatten content to text"
                )
        tools = data.get("tools") or []
        if not isinstance(tools, Sequence) or isinstance(tools, str):
            raise TaskFormatError("'tools' must be a list of tool schemas", where=where, fix="see docs/tasks.md")
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, Mapping) else None
            if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
                raise TaskFormatError(
                    f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., 'parameters': ...}}}}",
                    where=where,
                    fix="use the OpenAI function-tool schema",
                )
        env = data.get("env")
        if env is not None and not isinstance(env, str):
            raise TaskFormatError(f"'env' must be a string or null, got {env!r}", where=where, fix="name a registered environment")
        for key in ("env_args", "metadata"):
            if not isinstance(data.get(key) or {}, Mapping):
                raise TaskFormatError(f"'{key}' must be a JSON object", where=where, fix=f'use "{key}": {{...}}')
        return cls(
            id=str(tid),
            messages=tuple(dict(m) for m in messages),
            tools=tuple(dict(t) for t in tools),
            env=env,
            env_args=dict(data.get("env_args") or {}),
            metadata=dict(data.get("metadata") or {}),
        )


def load_tasks(path: str | Path) -> list[Task]:
    """Read a JSONL task file; errors name the file and line."""
    p = Path(path)
    if not p.exists():
        raise TaskFormatError(
            "task file not found", where=str(p), fix="create it with `toolrl data make <suite> --out FILE`"
        )
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{p}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskFormatError(f"not valid JSON ({exc.msg} at column {exc.colno})", where=where,
                                      fix="write one JSON object per line") from None
            task = Task.from_dict(obj, where=where)
            if task.id in seen:
                raise TaskFormatError(f"duplicate task id {task.id!r} (first on line {seen[task.id]})", where=where,
                                      fix="give every task a unique id")
            seen[task.id] = lineno
            tasks.append(task)
    if not tasks:
        raise TaskFormatError("the task file is empty", where=str(p), fix="add at least one task")
    return tasks


def save_tasks(tasks: Sequence[Task], path: str | Path) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as fh:
        for t in tasks:
            fh.write(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class ToolCall:
    """A tool call parsed from the model's text.

    `arguments` is the decoded JSON object; `raw` is the exact text it came from.
    """

    name: str
    arguments: Mapping[str, Any]
    id: str = ""
    raw: str = ""

    def to_message_dict(self) -> dict[str, Any]:
        """The OpenAI `tool_calls[i]` entry (arguments as an object, as HF templates expect)."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": dict(self.arguments)}}


@dataclass(frozen=True)
class ToolResult:
    """What an environment returns for one tool call.

    Attributes:
        text: shown to the model as the tool message.
        done: the episode is over (the loop stops with finish reason `env_done`).
        info: extra data for rewards and metrics (e.g. `{"status": "ok"}`).
        infra_error: the environment's infrastructure failed (not the model's
            fault); the trajectory is masked out of the update instead of scored.
    """

    text: str
    done: bool = False
    info: Mapping[str, Any] = field(default_factory=dict)
    infra_error: bool = False


@dataclass(frozen=True)
class Segment:
    """An earlier, separately rendered part of an agent-program episode (docs/environments.md).

    An agent program that edits or drops earlier messages makes a prompt that does not extend
    the tokens sampled before; the episode then splits into segments, each one token sequence
    of its own with the same fields as a trajectory: `prompt_ids`, then `response_ids` with
    `loss_mask` 1 exactly on sampled tokens and their rollout `logprobs` (0.0 elsewhere).
    The last segment is the `Trajectory` itself; the earlier ones are `Trajectory.segments`.
    """

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    loss_mask: tuple[int, ...]
    logprobs: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.response_ids)
        if len(self.loss_mask) != n or len(self.logprobs) != n:
            raise ValueError(f"segment: response_ids ({n}), loss_mask ({len(self.loss_mask)}) and logprobs "
                             f"({len(self.logprobs)}) must have equal length")


@dataclass(frozen=True)
class Trajectory:
    """One sampled episode of one task, token-exact.

    `response_ids` holds everything after the prompt: sampled assistant tokens
    and appended tool-message tokens. `loss_mask[i]` is 1 exactly where
    `response_ids[i]` was sampled by the model; `logprobs[i]` is the rollout
    log-probability of that token (0.0 where the mask is 0). `weight_version`
    is the number of trainer updates the sampling weights had seen.
    """

    task_id: str
    sample_index: int
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    loss_mask: tuple[int, ...]
    logprobs: tuple[float, ...]
    messages: tuple[Mapping[str, Any], ...]
    num_prompt_messages: int = 0
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: FinishReason = "stop"
    num_turns: int = 1
    malformed_tool_calls: int = 0
    tool_errors: int = 0
    infra_error: bool = False
    error: str | None = None
    env_state: Any = None
    timing: Mapping[str, float] = field(default_factory=dict)
    weight_version: int = 0  # the trainer update count of the weights that sampled it (0 = initial)
    result: Any = None  # what an agent program returned (`env: program`); rewards get it as `result`
    segments: tuple[Segment, ...] = ()  # an agent program's earlier segments (toolrl.rollout.program_record)

    def __post_init__(self) -> None:
        n = len(self.response_ids)
        if len(self.loss_mask) != n or len(self.logprobs) != n:
            raise ValueError(
                f"trajectory {self.task_id}#{self.sample_index}: response_ids ({n}), loss_mask "
                f"({len(self.loss_mask)}) and logprobs ({len(self.logprobs)}) must have equal length"
            )
        if self.finish_reason not in FINISH_REASONS:
            raise ValueError(f"finish_reason must be one of {FINISH_REASONS}, got {self.finish_reason!r}")

    @property
    def num_sampled_tokens(self) -> int:
        return sum(self.loss_mask)

    @property
    def final_text(self) -> str:
        """The content of the last assistant message ('' if none)."""
        for m in reversed(self.messages):
            if m.get("role") == "assistant":
                return m.get("content") or ""
        return ""

    @property
    def completion_messages(self) -> tuple[Mapping[str, Any], ...]:
        """The messages produced during the episode (assistant turns and tool results)."""
        return self.messages[self.num_prompt_messages :]

    @property
    def completion_text(self) -> str:
        """The assistant messages of the episode, joined by newlines (for text rewards)."""
        return "\n".join(m.get("content") or "" for m in self.completion_messages if m.get("role") == "assistant")


@dataclass(frozen=True)
class RewardResult:
    """The composed reward of one trajectory.

    `total` is None when the sample is excluded (a component returned None, or
    failed with `on_error: skip`, or the trajectory hit an infrastructure error).
    """

    total: float | None
    components: Mapping[str, float | None] = field(default_factory=dict)
    excluded_reason: str | None = None
