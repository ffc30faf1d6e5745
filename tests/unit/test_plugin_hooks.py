"""Hooks a plugin implements, registered and then used through the code paths the trainer uses."""

import json

import torch

from toolrl import hookimpl, plugins
from toolrl.algorithms.advantages import AdvantageInput, AdvantageOutput, broadcast_to_tokens
from toolrl.algorithms.spec import declare, registered_needs
from toolrl.evaluation.metrics import run_evaluators
from toolrl.metrics.sinks import MetricLogger
from toolrl.types import RewardResult, Task, Trajectory


@declare(groups=True)
def _rank_in_group(batch, config):
    """Advantage = the sample's rank inside its group, centred (0 for a lone sample)."""
    adv = torch.zeros_like(batch.scores)
    groups: dict[str, list[int]] = {}
    for i, g in enumerate(batch.group_ids):
        groups.setdefault(g, []).append(i)
    for idx in groups.values():
        order = sorted(idx, key=lambda i: float(batch.scores[i]))
        for rank, i in enumerate(order):
            adv[i] = rank - (len(idx) - 1) / 2
    return AdvantageOutput(broadcast_to_tokens(adv, batch.response_mask))


class RankPlugin:
    @hookimpl
    def register_advantage_estimators(self, register):
        register("rank_in_group", _rank_in_group)


def test_registered_advantage_estimator_declares_needs_and_computes(plugin_manager):
    plugin_manager.register(RankPlugin(), name="rank-plugin")
    needs = registered_needs("rank_in_group")
    assert needs is not None and needs.groups and not needs.critic and needs.kl_in == "loss"
    assert registered_needs("not_registered") is None
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    batch = AdvantageInput(scores=torch.tensor([0.2, 0.9, 0.5, 0.1]), response_mask=mask,
                           group_ids=["a", "a", "a", "b"], valid=torch.ones(4, dtype=torch.bool))
    out = plugins.get("advantage_estimators", "rank_in_group")(batch, None)
    assert out.advantages.tolist() == [[-1.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


class MaxSink:
    """Keeps the largest value of each metric seen and writes them on close."""

    def __init__(self, run_dir):
        self.path = run_dir / "max.json"
        self.best: dict[str, float] = {}
        self.begun = None

    def begin(self, total_steps, first_step):
        self.begun = (total_steps, first_step)

    def log(self, step, metrics):
        for k, v in metrics.items():
            self.best[k] = max(v, self.best.get(k, float("-inf")))

    def close(self):
        self.path.write_text(json.dumps({"begun": self.begun, "best": self.best}))


class MaxSinkPlugin:
    @hookimpl
    def register_metric_sinks(self, register):
        register("max_json", MaxSink)


def test_registered_metric_sink_is_built_by_name_beside_the_builtins(plugin_manager, tmp_path):
    plugin_manager.register(MaxSinkPlugin(), name="max-sink")
    ml = MetricLogger.from_names(["jsonl", "max_json"], tmp_path)
    ml.begin(3, 0)
    for step, r in ((1, 0.25), (2, 0.75), (3, 0.5)):
        ml.log(step, {"reward/mean": r, "actor/kl": r / 10})
    ml.close()
    got = json.loads((tmp_path / "max.json").read_text())
    assert got == {"begun": [3, 0], "best": {"reward/mean": 0.75, "actor/kl": 0.075}}
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3  # the built-in ran too


def _pass_at_least_one(trajectories, *, tasks, rewards):
    """Share of tasks with at least one sample rewarded 1.0, and the number of tasks."""
    solved: dict[str, bool] = {}
    for traj, task, r in zip(trajectories, tasks, rewards):
        assert traj.task_id == task.id  # the runner aligns tasks with trajectories
        solved[task.id] = solved.get(task.id, False) or r.total == 1.0
    return {"any_solved": sum(solved.values()) / len(solved), "tasks": float(len(solved))}


class AnySolvedPlugin:
    @hookimpl
    def register_evaluators(self, register):
        register("any_solved", _pass_at_least_one)


def _traj(task_id, i):
    return Trajectory(task_id=task_id, sample_index=i, prompt_ids=(1,), response_ids=(2,), loss_mask=(1,),
                      logprobs=(0.0,), messages=({"role": "user", "content": "q"},
                                                 {"role": "assistant", "content": "a"}), num_prompt_messages=1)


def test_registered_evaluator_runs_with_aligned_tasks(plugin_manager):
    plugin_manager.register(AnySolvedPlugin(), name="any-solved")
    tasks = [Task(id=t, messages=({"role": "user", "content": t},)) for t in ("x", "y")]
    trajs = [_traj("y", 0), _traj("x", 0), _traj("y", 1), _traj("x", 1)]
    rewards = [RewardResult(0.0), RewardResult(0.0), RewardResult(1.0), RewardResult(0.0)]
    assert {"any_solved", "exact_match"} <= set(plugins.names("evaluators"))
    m = run_evaluators([("any_solved", plugins.registry("evaluators").get("any_solved"))], trajs, tasks, rewards)
    assert m == {"eval/any_solved/any_solved": 0.5, "eval/any_solved/tasks": 2.0}
