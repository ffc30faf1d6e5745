"""The `bfcl` environment, in two modes chosen by the task's `env_args.mode`.

* `ast` (single-turn categories: simple, parallel, multiple, …): the functions
  are not executed; each call is recorded and answered with a short
  acknowledgement, and the episode ends after the first turn with calls
  (`done`), as BFCL scores only that turn. `bfcl_ast` compares the recorded
  calls with the possible answers.
* `multi_turn`: BFCL's simulated APIs run in-process (see multi_turn.py). At
  reset the world is built from `initial_config` and the earlier turns'
  ground-truth calls (`replay`) are executed, so the state matches the history
  shown in the prompt; each call then runs for real and returns its result.
  `bfcl_state` compares the final state with the ground truth's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from toolrl.errors import ToolrlError
from toolrl.types import Task, ToolCall, ToolResult

from toolrl_env_bfcl.multi_turn import World, result_text

logger = logging.getLogger(__name__)

ENV_NAME = "bfcl"


class BfclEnv:
    """One BFCL episode.

    Args (from the task's `env_args` over the config's `envs.bfcl`):
        mode: "ast" or "multi_turn".
        involved_classes, initial_config, replay, functions: multi-turn only; the tool classes, their
            scenario, the earlier turns' ground-truth calls, and the function names offered.
        max_calls: calls allowed per episode (later ones are refused with a message).
        ast_done: in ast mode, end the episode after the first turn with calls (default True).
    """

    def __init__(self, ctx: Any = None, *, mode: str = "ast", involved_classes: Sequence[str] = (),
                 initial_config: Any = None, replay: Sequence[str] = (), functions: Sequence[str] | None = None,
                 max_calls: int = 32, ast_done: bool = True):
        if mode not in ("ast", "multi_turn"):
            raise ToolrlError(f"bfcl env: unknown mode {mode!r}", where="env_args.mode",
                              fix="use 'ast' or 'multi_turn'")
        if mode == "multi_turn" and not involved_classes:
            raise ToolrlError("bfcl env: multi_turn mode needs involved_classes", where="env_args",
                              fix="make tasks with `toolrl data make bfcl categories=multi_turn`")
        self.mode = mode
        self.involved_classes = list(involved_classes)
        self.initial_config = dict(initial_config or {})
        self.replay = list(replay)
        self.functions = list(functions) if functions is not None else None
        self.max_calls = max_calls
        self.ast_done = ast_done
        self.world: World | None = None
        self.task_id: str | None = None
        self._calls: list[dict[str, Any]] = []

    async def reset(self, task: Task) -> None:
        self.task_id = task.id
        self._calls = []
        offered = [t["function"]["name"] for t in task.tools]
        self._offered = set(offered)
        if self.mode == "multi_turn":
            world = World(self.involved_classes, self.initial_config,
                          self.functions if self.functions is not None else offered)
            for i, text in enumerate(self.replay):
                try:
                    world.run_text(text)
                except (ValueError, TypeError) as exc:
                    raise ToolrlError(f"replaying earlier turn call #{i} ({text}) failed: {exc}",
                                      where=f"task {task.id} env_args.replay",
                                      fix="regenerate the task with `toolrl data make bfcl`") from exc
            self.world = world

    async def step(self, call: ToolCall) -> ToolResult:
        if len(self._calls) >= self.max_calls:
            return ToolResult(f"Call limit reached ({self.max_calls} calls); answer the user now.",
                              info={"status": "call_limit", "error": True})
        record: dict[str, Any] = {"name": call.name, "arguments": dict(call.arguments)}
        self._calls.append(record)
        if self.mode == "ast":
            known = call.name in self._offered
            record["status"] = "recorded" if known else "unknown_function"
            text = f"{call.name} was called." if known else \
                f"There is no function {call.name!r}. Available: {', '.join(sorted(self._offered))}."
            return ToolResult(text, done=self.ast_done, info={"status": record["status"], "error": not known})
        assert self.world is not None
        try:
            result = self.world.call(call.name, (), call.arguments)
        except (ValueError, TypeError) as exc:
            record["status"] = "error"
            return ToolResult(f"Error: {exc}", info={"status": "error"})
        except Exception as exc:  # the simulated API itself raised: report it like BFCL does
            record["status"] = "error"
            return ToolResult(f"Error during execution: {type(exc).__name__}: {exc}", info={"status": "error"})
        record["status"] = "ok"
        record["result"] = result_text(result)
        return ToolResult(record["result"], info={"status": "ok"})

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "calls": [dict(c) for c in self._calls]}
        if self.world is not None:
            out["instances"] = self.world.snapshot()
        return out

    async def close(self) -> None:
        """Nothing to release: the world is plain Python objects (kept so state() still works after close)."""


def bfcl_env(ctx: Any, **args: Any) -> BfclEnv:
    """Factory registered as environment `bfcl`."""
    import inspect

    allowed = [p for p in inspect.signature(BfclEnv.__init__).parameters if p not in ("self", "ctx")]
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ToolrlError(f"bfcl env: unknown argument(s) {unknown}", where="task env_args / envs.bfcl",
                          fix=f"valid arguments: {', '.join(allowed)}")
    return BfclEnv(ctx, **args)
