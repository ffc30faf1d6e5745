"""The reward contract and its composition (toolrl/rewards.py).

The reward functions here are small user functions written for each case: they
are the thing under test's input (what a plugin author writes), including the
faults (NaN, wrong length, exceptions) that the composition must report.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from toolrl import hookimpl
from toolrl.config import load_config
from toolrl.errors import ConfigError, RewardError, UnknownNameError
from toolrl.rewards import (
    REWARD_KEYWORDS,
    compute_rewards,
    compute_rewards_sync,
    prepare_rewards,
    reward_loop,
)
from toolrl.types import Task, Trajectory


def traj(task_id: str, text: str, *, sample: int = 0, infra: bool = False, state=None) -> Trajectory:
    return Trajectory(
        task_id=task_id, sample_index=sample, prompt_ids=(1, 2), response_ids=(3, 4), loss_mask=(1, 1),
        logprobs=(-0.5, -0.25),
        messages=({"role": "user", "content": f"question {task_id}"}, {"role": "assistant", "content": text}),
        num_prompt_messages=1, infra_error=infra, env_state=state,
    )


TASKS = [Task(id="a", messages=({"role": "user", "content": "qa"},), metadata={"answer": "1"}),
         Task(id="b", messages=({"role": "user", "content": "qb"},), metadata={"answer": "2"})]


def batch():
    return [traj("a", "x", sample=0), traj("a", "y", sample=1), traj("b", "z", sample=0, state={"n": 3})]


def length_reward(trajectories, *, completions):
    return [float(len(c)) for c in completions]


async def constant(trajectories, *, value: float = 1.0):
    await asyncio.sleep(0)
    return [value] * len(trajectories)


async def test_weighted_sum_components_and_metrics():
    reg = {"length": length_reward, "const": constant}
    specs = [{"name": "length", "weight": 0.5}, {"name": "const", "weight": 2.0, "args": {"value": 0.25}}]
    results, metrics = await compute_rewards(batch(), TASKS, specs, registry=reg)
    assert [r.total for r in results] == [0.5 * 1 + 2.0 * 0.25] * 3
    assert results[0].components == {"length": 1.0, "const": 0.25}
    assert all(r.excluded_reason is None for r in results)
    assert metrics["reward/mean"] == pytest.approx(1.0)
    assert metrics["reward/length"] == 1.0 and metrics["reward/const"] == 0.25
    assert metrics["reward/excluded"] == 0.0 and metrics["reward/infra_error"] == 0.0
    assert metrics["reward/errors/length"] == 0.0 and metrics["reward/none/const"] == 0.0
    assert metrics["timing/reward/length"] >= 0.0


async def test_documented_keywords_are_aligned_and_only_declared_ones_are_passed():
    seen = {}

    def declares_two(trajectories, *, metadata, env_states):
        seen["two"] = (metadata, env_states)
        return [0.0] * len(trajectories)

    def takes_all(trajs, **kwargs):
        seen["all"] = kwargs
        return [0.0] * len(trajs)

    await compute_rewards(batch(), TASKS, [{"name": "two"}, {"name": "all", "args": {"extra": 7}}],
                          registry={"two": declares_two, "all": takes_all})
    assert seen["two"] == ([{"answer": "1"}, {"answer": "1"}, {"answer": "2"}], [None, None, {"n": 3}])
    kw = seen["all"]
    assert set(kw) == set(REWARD_KEYWORDS) | {"extra"}
    assert [t.id for t in kw["tasks"]] == ["a", "a", "b"]
    assert kw["completions"] == ["x", "y", "z"]
    assert kw["extra"] == 7


@pytest.mark.parametrize("fn, args, message", [
    (length_reward, {"limit": 3}, "does not accept the argument(s) ['limit']"),
    (lambda trajectories, *, threshold: [0.0], {}, "requires the parameter(s) ['threshold']"),
    (length_reward, {"tasks": []}, "clashes with the keyword 'tasks'"),
    (lambda *, completions: [0.0], {}, "takes no positional parameter"),
    (lambda trajectories, other, /: [0.0], {}, "second required positional-only parameter 'other'"),
])
def test_signature_problems_fail_before_any_call(fn, args, message):
    with pytest.raises(RewardError) as info:
        prepare_rewards([{"name": "r", "args": args}], registry={"r": fn})
    assert message in str(info.value)
    assert "rewards[0] (r)" in str(info.value)
    assert info.value.fix


def test_required_parameter_satisfied_by_args():
    [p] = prepare_rewards([{"name": "r", "args": {"threshold": 2}}],
                          registry={"r": lambda trajectories, *, threshold, completions: [0.0]})
    assert p.keywords == frozenset({"completions"})


async def test_none_excludes_the_sample_and_is_counted():
    def sometimes_none(trajectories, *, completions):
        return [None if c == "y" else 1.0 for c in completions]

    results, metrics = await compute_rewards(
        batch(), TASKS, [{"name": "s"}, {"name": "length"}], registry={"s": sometimes_none, "length": length_reward})
    assert [r.total for r in results] == [2.0, None, 2.0]
    assert results[1].excluded_reason == "reward 's' returned None"
    assert results[1].components == {"s": None, "length": 1.0}
    assert metrics["reward/none/s"] == 1.0 and metrics["reward/excluded"] == 1.0
    assert metrics["reward/s"] == 1.0  # mean over the values that exist


def _plugin_with(fn):
    class Plugin:
        @staticmethod
        @hookimpl
        def register_rewards(register):
            register("bad", fn)

    return Plugin()


@pytest.mark.parametrize("value, shown", [(float("nan"), "nan"), (math.inf, "inf"), ("0.5", "'0.5'"),
                                          ([1.0], "[1.0]")])
async def test_bad_value_names_plugin_task_and_value(plugin_manager, value, shown):
    def bad(trajectories):
        return [1.0, 1.0, value]

    plugin_manager.register(_plugin_with(bad), name="my-bad-plugin")
    with pytest.raises(RewardError) as info:
        await compute_rewards(batch(), TASKS, [{"name": "bad"}])
    text = str(info.value)
    assert "reward 'bad'" in text and "plugin 'my-bad-plugin'" in text
    assert "task 'b'" in text and f"returned {shown}" in text
    assert "on_error: skip" in text


async def test_bad_value_with_skip_excludes_only_that_sample():
    def bad(trajectories):
        return [1.0, float("nan"), 0.5]

    results, metrics = await compute_rewards(batch(), TASKS, [{"name": "bad", "on_error": "skip"}],
                                             registry={"bad": bad})
    assert [r.total for r in results] == [1.0, None, 0.5]
    assert "reward 'bad' failed: returned nan" in results[1].excluded_reason
    assert metrics["reward/errors/bad"] == 1.0 and metrics["reward/none/bad"] == 0.0
    assert metrics["reward/excluded"] == 1.0 and metrics["reward/bad"] == 0.75


@pytest.mark.parametrize("value, shown", [([1.0], "1 values"), (1.0, "a float: 1.0"), (None, "a NoneType"),
                                          ({"a": 1.0}, "a dict")])
async def test_wrong_length_or_shape(value, shown):
    with pytest.raises(RewardError) as info:
        await compute_rewards(batch(), TASKS, [{"name": "w"}], registry={"w": lambda trajectories: value})
    assert f"returned {shown}" in str(info.value) and "batch of 3" in str(info.value)
    assert "'a', 'b'" in str(info.value)

    results, metrics = await compute_rewards(batch(), TASKS, [{"name": "w", "on_error": "skip"}],
                                             registry={"w": lambda trajectories: value})
    assert all(r.total is None for r in results)
    assert metrics["reward/errors/w"] == 3.0 and metrics["reward/excluded"] == 3.0


async def test_exception_is_wrapped_with_plugin_and_tasks_and_cause(plugin_manager):
    def boom(trajectories, *, metadata):
        raise KeyError("answer")

    plugin_manager.register(_plugin_with(boom), name="boom-plugin")
    with pytest.raises(RewardError) as info:
        await compute_rewards(batch(), TASKS, [{"name": "bad"}])
    text = str(info.value)
    assert "plugin 'boom-plugin'" in text and "raised KeyError: 'answer'" in text and "'a', 'b'" in text
    assert isinstance(info.value.__cause__, KeyError)

    results, metrics = await compute_rewards(batch(), TASKS, [{"name": "bad", "on_error": "skip"}])
    assert [r.total for r in results] == [None] * 3
    assert metrics["reward/errors/bad"] == 3.0


async def test_a_reward_error_raised_by_a_plugin_keeps_its_where_and_fix():
    def strict(trajectories, *, tasks):
        raise RewardError("metadata has no 'answer'", where=f"task {tasks[0].id!r}", fix="add metadata.answer")

    with pytest.raises(RewardError) as info:
        await compute_rewards(batch(), TASKS, [{"name": "strict"}], registry={"strict": strict})
    assert info.value.where == "task 'a'"
    assert "metadata has no 'answer'" in info.value.what and "add metadata.answer" in info.value.fix


async def test_infra_error_trajectories_are_masked_not_scored():
    seen = []

    def record(trajectories):
        seen.extend(t.sample_index for t in trajectories)
        return [1.0] * len(trajectories)

    trajs = [traj("a", "x", sample=0), traj("a", "y", sample=1, infra=True), traj("b", "z", sample=2)]
    results, metrics = await compute_rewards(trajs, TASKS, [{"name": "r"}], registry={"r": record})
    assert seen == [0, 2]
    assert [r.total for r in results] == [1.0, None, 1.0]
    assert results[1].excluded_reason == "infra_error" and results[1].components == {}
    assert metrics["reward/infra_error"] == 1.0 and metrics["reward/excluded"] == 1.0

    seen.clear()
    results, metrics = await compute_rewards([traj("a", "x", infra=True)], TASKS, [{"name": "r"}],
                                             registry={"r": record})
    assert seen == [] and results[0].total is None and "reward/mean" not in metrics


async def test_numpy_bool_and_int_values_are_accepted():
    results, _ = await compute_rewards(batch(), TASKS, [{"name": "np"}],
                                       registry={"np": lambda trajectories: np.array([True, 0, 0.5])})
    assert [r.total for r in results] == [1.0, 0.0, 0.5]
    results, _ = await compute_rewards(batch(), TASKS, [{"name": "mixed"}],
                                       registry={"mixed": lambda trajectories: [np.float32(0.5), True, 3]})
    assert [r.total for r in results] == [0.5, 1.0, 3.0]


async def test_async_rewards_run_concurrently():
    both_started = asyncio.Event()
    started = []

    async def waiter(trajectories, *, tag: str):
        started.append(tag)
        if len(started) == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), timeout=5)  # would time out if run one after another
        return [1.0] * len(trajectories)

    results, _ = await compute_rewards(batch(), TASKS, [{"name": "w1", "args": {"tag": "1"}},
                                                        {"name": "w2", "args": {"tag": "2"}}],
                                       registry={"w1": waiter, "w2": waiter})
    assert [r.total for r in results] == [2.0] * 3


async def test_sync_rewards_finish_before_async_ones_start():
    import time

    events = []

    async def io_bound(trajectories):
        events.append("async start")
        await asyncio.sleep(0)
        events.append("async end")
        return [1.0] * len(trajectories)

    def cpu_bound(trajectories):
        events.append("sync start")
        time.sleep(0.05)  # holds the event loop, as a CPU-heavy reward would
        events.append("sync end")
        return [1.0] * len(trajectories)

    # listed async-first: the sync one still runs before the async one starts waiting
    await compute_rewards(batch(), TASKS, [{"name": "io"}, {"name": "cpu"}], registry={"io": io_bound,
                                                                                        "cpu": cpu_bound})
    assert events == ["sync start", "sync end", "async start", "async end"]


def test_unknown_name_and_bad_spec():
    with pytest.raises(UnknownNameError) as info:
        prepare_rewards([{"name": "math_equv"}], registry={"math_equiv": length_reward})
    assert "did you mean 'math_equiv'" in str(info.value)
    with pytest.raises(ConfigError) as cfg:
        prepare_rewards([{"name": "length", "weight": "heavy"}], registry={"length": length_reward})
    assert "rewards.0.weight" in str(cfg.value)
    with pytest.raises(ConfigError) as cfg:
        prepare_rewards([{"name": "length", "on_eror": "skip"}], registry={"length": length_reward})
    assert "rewards.0.on_eror" in str(cfg.value)
    with pytest.raises(RewardError, match="no reward is configured"):
        prepare_rewards([], registry={})
    with pytest.raises(RewardError, match="listed twice"):
        prepare_rewards([{"name": "length"}, {"name": "length"}], registry={"length": length_reward})
    with pytest.raises(RewardError, match="reserved"):
        prepare_rewards([{"name": "total"}], registry={"total": length_reward})
    with pytest.raises(RewardError, match="reserved"):  # reward/mean is the step's mean total
        prepare_rewards([{"name": "mean"}], registry={"mean": length_reward})


async def test_missing_task_is_named():
    with pytest.raises(RewardError, match="trajectory c#0 has no task"):
        await compute_rewards([traj("c", "x")], TASKS, [{"name": "length"}], registry={"length": length_reward})


def test_sync_wrapper_reuses_one_loop_and_refuses_inside_a_loop():
    loops = []

    async def loop_id(trajectories):
        loops.append(asyncio.get_running_loop())
        return [0.0] * len(trajectories)

    for _ in range(2):
        results, metrics = compute_rewards_sync(batch(), {t.id: t for t in TASKS}, [{"name": "l"}],
                                                registry={"l": loop_id})
        assert [r.total for r in results] == [0.0] * 3
    assert loops[0] is loops[1] is reward_loop()

    async def inside():
        compute_rewards_sync(batch(), TASKS, [{"name": "l"}], registry={"l": loop_id})

    with pytest.raises(RewardError, match="inside a running event loop"):
        asyncio.run(inside())


async def test_config_rewards_section_drives_the_composition(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("rewards:\n  - {name: length, weight: 0.6}\n  - {name: const, weight: 0.4, args: {value: 2}}\n")
    config = load_config(str(path))
    results, metrics = await compute_rewards(batch(), TASKS, config.rewards,
                                             registry={"length": length_reward, "const": constant})
    assert [r.total for r in results] == [pytest.approx(0.6 + 0.8)] * 3
    assert set(metrics) >= {"reward/length", "reward/const", "reward/mean"}


def guide_files() -> dict[str, str]:
    """The files docs/plugin-guide.md shows, by path: blocks preceded by `<!-- file: PATH -->`."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "plugin-guide.md").read_text()
    return dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)^```[ \t]*$", text, flags=re.S | re.M))


def test_plugin_guide_shows_the_tutorial_files_verbatim():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    shown = guide_files()
    on_disk = {str(p.relative_to(root)) for p in (root / "examples" / "plugin_tutorial").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.name != "README.md"}
    assert set(shown) == on_disk
    for path, text in shown.items():
        assert (root / path).read_text() == text, f"docs/plugin-guide.md shows an outdated {path}"


def test_rewards_doc_example_runs():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "rewards.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```[ \t]*$", text, flags=re.S | re.M)
    assert blocks
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/rewards.md block {i + 1}", "exec"), {"__name__": f"rewards_doc_{i}"})


@pytest.mark.parametrize("module", ["toolrl_rewards_math.plugin", "toolrl_rewards_text.plugin",
                                    "toolrl_rewards_code.plugin"])
def test_every_shipped_reward_and_argument_is_documented(module):
    import inspect
    import re
    from pathlib import Path

    plugin = pytest.importorskip(module)
    registered: dict[str, object] = {}
    plugin.register_rewards(register=lambda name, fn: registered.__setitem__(name, fn))
    text = (Path(__file__).resolve().parents[2] / "docs" / "rewards.md").read_text()
    assert registered
    for name, fn in registered.items():
        assert f"\n### {name}\n" in text, f"docs/rewards.md has no section for {name}"
        section = text.split(f"\n### {name}\n", 1)[1].split("\n#", 1)[0]
        args = [p for p in inspect.signature(fn).parameters if p != "trajectories" and p not in REWARD_KEYWORDS]
        for arg in args:
            assert re.search(rf"^\| `{arg}` \|", section, flags=re.M), f"docs/rewards.md: {name} lacks `{arg}`"
