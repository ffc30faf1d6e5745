"""The `memory_recall` reward: did the agent's recalls retrieve the notes the answer needs?"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from toolrl.errors import RewardError


def memory_recall(trajectories: Sequence[Any], *, metadata: Sequence[Mapping[str, Any]],
                  env_states: Sequence[Any], tasks: Sequence[Any]) -> list[float]:
    """Recall accuracy: the fraction of the task's relevant notes that any `recall` call returned.

    Args:
        trajectories: the batch.
        metadata: per task; `relevant_memory_ids` lists the ids of the notes that hold the needed fact
            (the `memory` suite writes it).
        env_states: per trajectory, the `memory` environment's `state()`; its `recalled_ids` are the
            ids every recall returned.
        tasks: per trajectory, for error messages.

    Returns:
        One value in [0, 1] per trajectory: 1.0 when every relevant note was retrieved, 0.0 when the
        agent never recalled or retrieved none of them.

    Example:
        >>> class T: id = "t"
        >>> memory_recall([None], metadata=[{"relevant_memory_ids": ["s1-0", "s2-1"]}],
        ...               env_states=[{"recalled_ids": ["s1-0", "s1-2"]}], tasks=[T()])
        [0.5]
    """
    out: list[float] = []
    for traj, meta, state, task in zip(trajectories, metadata, env_states, tasks):
        relevant = meta.get("relevant_memory_ids")
        if not isinstance(relevant, Sequence) or isinstance(relevant, str) or not relevant:
            raise RewardError("memory_recall needs metadata.relevant_memory_ids (a non-empty list of note ids)",
                              where=f"task {task.id}", fix="make tasks with `toolrl data make memory`, or add the ids")
        if not isinstance(state, Mapping) or "recalled_ids" not in state:
            raise RewardError("memory_recall needs the memory environment's state (env_states[i]['recalled_ids'])",
                              where=f"task {task.id}", fix='run the task with "env": "memory"')
        got = set(state["recalled_ids"])
        out.append(sum(1 for r in relevant if r in got) / len(relevant))
    return out
