"""Built-in evaluators (enable with trainer.evaluators=[tool_use, exact_match]).

An evaluator is `fn(trajectories, *, tasks, rewards) -> dict[str, float]`;
its metrics are logged as `eval/<name>/<key>`.
"""

from toolrl.hookspecs import hookimpl


def tool_use(trajectories, *, tasks, rewards):
    """How the policy uses tools: share of samples that call one, calls per sample, error and malformed rates per call."""
    n = max(len(trajectories), 1)
    calls = sum(len(t.tool_calls) for t in trajectories)
    errors = sum(t.tool_errors for t in trajectories)
    malformed = sum(t.malformed_tool_calls for t in trajectories)
    attempts = calls + malformed
    return {
        "used_tool": sum(1 for t in trajectories if t.tool_calls) / n,
        "calls_per_sample": calls / n,
        "error_rate": errors / calls if calls else 0.0,
        "malformed_rate": malformed / attempts if attempts else 0.0,
    }


def _norm(text):
    return " ".join(str(text).strip().lower().split())


def exact_match(trajectories, *, tasks, rewards):
    """Share of samples whose final answer equals the task's metadata['answer'] (case and spacing ignored)."""
    scored = [(t, task) for t, task in zip(trajectories, tasks) if "answer" in task.metadata]
    if not scored:
        return {}
    hits = sum(_norm(t.final_text) == _norm(task.metadata["answer"]) for t, task in scored)
    return {"accuracy": hits / len(scored)}


@hookimpl
def register_evaluators(register):
    register("tool_use", tool_use)
    register("exact_match", exact_match)
