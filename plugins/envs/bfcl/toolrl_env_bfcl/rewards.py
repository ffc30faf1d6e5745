"""BFCL rewards: `bfcl_ast` (single-turn calls match a possible answer), `bfcl_state` (multi-turn final state),
and `bfcl`, which applies the right one to each task (for files that mix both kinds)."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from toolrl.errors import RewardError

from toolrl_env_bfcl.ast_match import calls_match
from toolrl_env_bfcl.multi_turn import ground_truth_outcome

_STATE_CACHE: OrderedDict[str, tuple[dict[str, Any], list[str]]] = OrderedDict()
_CACHE_SIZE = 4096
_lock = threading.Lock()


def _model_calls(traj: Any, state: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """The calls the episode made: as recorded by the bfcl environment, else as parsed by the loop."""
    if isinstance(state, Mapping) and isinstance(state.get("calls"), list):
        return [(c["name"], c.get("arguments") or {}) for c in state["calls"]]
    return [(c.name, c.arguments) for c in getattr(traj, "tool_calls", ())]


def bfcl_ast(trajectories: Sequence[Any], *, tasks: Sequence[Any], metadata: Sequence[Mapping[str, Any]],
             env_states: Sequence[Any]) -> list[float]:
    """1.0 when the episode's calls match one of BFCL's possible answers (AST match), else 0.0.

    Args:
        trajectories: the batch.
        tasks: per trajectory; `tools` gives the parameter schemas for the type checks.
        metadata: per task; `ground_truth` is BFCL's list of `{function: {param: [acceptable values]}}`
            (None for irrelevance: the model must not call anything).
        env_states: per trajectory, the `bfcl` environment's state; its `calls` are the calls made (in
            ast mode the episode ends after the first turn with calls, which is the turn BFCL scores).

    Returns:
        One value per trajectory, 1.0 or 0.0.

    Example:
        >>> from toolrl.types import Task
        >>> t = Task(id="x", messages=({"role": "user", "content": "5!"},),
        ...          tools=({"type": "function", "function": {"name": "math.factorial", "parameters": {
        ...              "type": "object", "properties": {"number": {"type": "integer"}}}}},))
        >>> bfcl_ast([None], tasks=[t], metadata=[{"ground_truth": [{"math.factorial": {"number": [5]}}]}],
        ...          env_states=[{"calls": [{"name": "math.factorial", "arguments": {"number": 5}}]}])
        [1.0]
    """
    out: list[float] = []
    for traj, task, meta, state in zip(trajectories, tasks, metadata, env_states):
        if "ground_truth" not in meta:
            raise RewardError("bfcl_ast needs metadata.ground_truth (BFCL's possible answer)",
                              where=f"task {task.id}", fix="make tasks with `toolrl data make bfcl`")
        if _is_multi_turn(task):
            raise RewardError("bfcl_ast scores single-turn tasks; this is a multi-turn task", where=f"task {task.id}",
                              fix="use bfcl_state for multi-turn tasks, or the `bfcl` reward for a mixed file")
        schemas = {t["function"]["name"]: t["function"].get("parameters") or {} for t in task.tools}
        result = calls_match(_model_calls(traj, state), meta["ground_truth"], schemas)
        out.append(1.0 if result.ok else 0.0)
    return out


def _expected(task: Any, ground_truth: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    key = task.id + "\x00" + json.dumps(list(ground_truth)) + "\x00" + json.dumps(task.env_args, sort_keys=True)
    with _lock:
        if key in _STATE_CACHE:
            _STATE_CACHE.move_to_end(key)
            return _STATE_CACHE[key]
    outcome = ground_truth_outcome(task.env_args, ground_truth)
    with _lock:
        _STATE_CACHE[key] = outcome
        if len(_STATE_CACHE) > _CACHE_SIZE:
            _STATE_CACHE.popitem(last=False)
    return outcome


def _contains_all(got: Sequence[str], want: Sequence[str]) -> bool:
    """Every expected result appears among the episode's results (any order; each used once)."""
    pool = list(got)
    for w in want:
        if w not in pool:
            return False
        pool.remove(w)
    return True


def bfcl_state(trajectories: Sequence[Any], *, tasks: Sequence[Any], metadata: Sequence[Mapping[str, Any]],
               env_states: Sequence[Any], partial: bool = False, check_responses: bool = True) -> list[float]:
    """Multi-turn: does the environment end in the ground truth's state, having produced its results?

    BFCL's two multi-turn checks. State: every public attribute of every tool instance equals that of a
    fresh world that replayed the earlier turns and then ran this turn's ground-truth calls. Responses:
    every result of those ground-truth calls is among the results of the episode's calls (so a turn that
    only reads, e.g. "show my order", is not passed by doing nothing).

    Args:
        trajectories: the batch.
        tasks: per trajectory; `env_args` (involved_classes, initial_config, replay) rebuilds the world.
        metadata: per task; `ground_truth` lists this turn's calls as Python call strings.
        env_states: per trajectory, the `bfcl` environment's state (`instances`: the final snapshot).
        partial: score the fraction of checks passed (each tool instance's state, and the responses)
            instead of all-or-nothing.
        check_responses: also require the ground truth's results (BFCL's response check).

    Returns:
        One value per trajectory in [0, 1] (0.0 or 1.0 unless partial).
    """
    out: list[float] = []
    for task, meta, state in zip(tasks, metadata, env_states):
        if not _is_multi_turn(task):
            raise RewardError("bfcl_state scores multi-turn tasks; this is a single-turn task", where=f"task {task.id}",
                              fix="use bfcl_ast for single-turn tasks, or the `bfcl` reward for a mixed file")
        gt = meta.get("ground_truth")
        if not isinstance(gt, list) or not all(isinstance(c, str) for c in gt):
            raise RewardError("bfcl_state needs metadata.ground_truth as a list of call strings",
                              where=f"task {task.id}",
                              fix="make tasks with `toolrl data make bfcl categories=multi_turn`")
        if not isinstance(state, Mapping) or "instances" not in state:
            raise RewardError("bfcl_state needs the bfcl environment's multi-turn state (env_states[i]['instances'])",
                              where=f"task {task.id}",
                              fix='run the task with "env": "bfcl" and env_args.mode "multi_turn"')
        expected, want = _expected(task, gt)
        got = state["instances"]
        same = [got.get(name) == snap for name, snap in expected.items()]
        if check_responses:
            results = [c["result"] for c in state.get("calls", ()) if "result" in c]
            same.append(_contains_all(results, want))
        if partial:
            out.append(sum(same) / len(same) if same else 1.0)
        else:
            out.append(1.0 if all(same) else 0.0)
    return out


def _is_multi_turn(task: Any) -> bool:
    return (task.env_args or {}).get("mode") == "multi_turn"


def bfcl(trajectories: Sequence[Any], *, tasks: Sequence[Any], metadata: Sequence[Mapping[str, Any]],
         env_states: Sequence[Any]) -> list[float]:
    """BFCL's verdict per task: `bfcl_state` for multi-turn tasks, `bfcl_ast` for the others.

    Args and returns as for those two; use this reward when one file holds both kinds of task.
    """
    out: list[float | None] = [None] * len(trajectories)
    for multi, fn in ((False, bfcl_ast), (True, bfcl_state)):
        idx = [i for i, t in enumerate(tasks) if _is_multi_turn(t) == multi]
        if idx:
            values = fn([trajectories[i] for i in idx], tasks=[tasks[i] for i in idx],
                        metadata=[metadata[i] for i in idx], env_states=[env_states[i] for i in idx])
            for i, v in zip(idx, values):
                out[i] = v
    return [float(v) for v in out]  # type: ignore[arg-type]
