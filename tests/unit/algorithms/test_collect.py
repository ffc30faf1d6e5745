"""The step's collection with DAPO shaping: one round by default, dynamic sampling rounds, overlong penalty.

The rollout and reward callables are plain functions over real Task/Trajectory/RewardResult values (the real
engines and rewards run in tests/integration/test_train_algorithms.py)."""

from toolrl.config import load_config
from toolrl.trainer.collect import collect, round_seed
from toolrl.types import RewardResult, Task, Trajectory


def _task(i):
    return Task(id=f"t{i}", messages=({"role": "user", "content": f"q{i}"},))


def _world(rewards_by_task, lengths=None):
    """next_prompts over t0, t1, ...; rollout gives n trajectories per task; score looks the reward up."""
    state = {"next": 0, "seeds": []}

    def next_prompts():
        out = [_task(state["next"] + k) for k in range(2)]
        state["next"] += 2
        return out

    def rollout(prompts, seed):
        state["seeds"].append(seed)
        out = []
        for p in prompts:
            for s in range(2):
                n = (lengths or {}).get((p.id, s), 3)
                out.append(Trajectory(p.id, s, (1,), (5,) * n, (1,) * n, (0.0,) * n, p.messages, 1))
        return out

    def score(trajs, prompts):
        return [RewardResult(rewards_by_task[t.task_id][t.sample_index]) for t in trajs], {"reward/mean": 0.5}

    return state, next_prompts, rollout, score


def test_one_round_without_shaping():
    cfg = load_config(data={"rollout": {"n": 2}, "data": {"prompts_per_step": 2}})
    state, *fns = _world({"t0": [1, 1], "t1": [0, 1]})
    out = collect(cfg, *fns, seed=7)
    assert [p.id for p in out.prompts] == ["t0", "t1"] and state["seeds"] == [7]
    assert out.scores == [1, 1, 0, 1] and "rollout/dynamic_sampling_draws" not in out.metrics


def test_dynamic_sampling_draws_more_prompts_until_full():
    cfg = load_config(data={"rollout": {"n": 2}, "data": {"prompts_per_step": 2},
                            "algorithm": {"dynamic_sampling": True, "max_sampling_draws": 3}})
    # round 0: t0 ties, t1 informative; round 1: t2 informative (t3 beyond the batch)
    state, *fns = _world({"t0": [1, 1], "t1": [0, 1], "t2": [1, 0], "t3": [0, 1]})
    out = collect(cfg, *fns, seed=7)
    assert [p.id for p in out.prompts] == ["t1", "t2"]
    assert [t.task_id for t in out.trajectories] == ["t1", "t1", "t2", "t2"]
    assert state["seeds"] == [7, round_seed(7, 1)] and round_seed(7, 1) != 7
    assert out.metrics["rollout/dynamic_sampling_draws"] == 2.0 and out.metrics["rollout/dynamic_sampling_full"] == 1.0


def test_overlong_penalty_is_added_to_the_scores_only():
    cfg = load_config(data={"rollout": {"n": 2, "max_total_tokens": 10, "max_new_tokens": 10},
                            "data": {"prompts_per_step": 2},
                            "algorithm": {"overlong_buffer": 4, "overlong_penalty": 1.0}})
    # lengths: 6 (no penalty), 8 (-(8-6)/4 = -0.5), 10 (-1), 3
    state, *fns = _world({"t0": [1, 1], "t1": [0, None]}, {("t0", 0): 6, ("t0", 1): 8, ("t1", 0): 10})
    out = collect(cfg, *fns, seed=1)
    assert out.scores == [1.0, 0.5, -1.0, None]  # an excluded sample stays excluded
    assert [r.total for r in out.results] == [1, 1, 0, None]  # the reward metrics see the unshaped rewards
    assert out.metrics["reward/overlong_share"] == 0.5
