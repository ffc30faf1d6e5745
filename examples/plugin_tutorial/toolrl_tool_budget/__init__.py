"""toolrl-tool-budget: a reward that penalises tool calls beyond a budget."""

from toolrl import hookimpl
from toolrl.errors import RewardError


def tool_budget(trajectories, *, tasks, budget=2, penalty=0.25):
    """1.0 for an episode within its tool-call budget, minus `penalty` per extra call.

    Args:
        trajectories: the batch (toolrl passes it positionally).
        tasks: each trajectory's task (passed by toolrl); `task.metadata["budget"]`,
            when present, overrides `budget` for that task.
        budget: tool calls allowed without penalty.
        penalty: subtracted per call beyond the budget.

    Returns:
        One float per trajectory in [0, 1].

    Example:
        ```yaml
        rewards:
          - {name: tool_budget, weight: 0.2, args: {budget: 3}}
        ```
        With budget 2, an episode with 4 tool calls scores 1.0 - 2 * 0.25 = 0.5.
    """
    scores = []
    for traj, task in zip(trajectories, tasks):
        allowed = task.metadata.get("budget", budget)
        if not isinstance(allowed, int) or allowed < 0:
            raise RewardError(
                f"tool_budget: the budget must be a non-negative integer, got {allowed!r}",
                where=f"task {task.id!r}",
                fix="set metadata.budget (or args.budget) to 0, 1, 2, ...",
            )
        extra = max(0, len(traj.tool_calls) - allowed)
        scores.append(max(0.0, 1.0 - penalty * extra))
    return scores


@hookimpl
def register_rewards(register):
    register("tool_budget", tool_budget)
