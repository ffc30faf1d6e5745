"""Every shipped config in examples/ loads, names things that exist, and is headed by the commands that run it.

Besides the config schema, each config's rewards (names and arguments), advantage estimator, metric sinks,
evaluators, model and accuracy reward are checked against the installed plugins, and each `toolrl data make`
command in its header is run for two tasks, so a renamed suite argument or reward breaks this test.
"""

import re
import shlex
from pathlib import Path

import pytest

from toolrl.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "examples").glob("*/config.yaml"))


@pytest.fixture(scope="module")
def installed():
    """The plugin manager with the installed plugin distributions (entry points on)."""
    from toolrl import plugins

    pm = plugins.reset(load_entrypoints=True)
    yield pm
    plugins.reset(load_entrypoints=False)


def _header(path: Path) -> list[str]:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").rstrip())
    return lines


def test_there_is_a_config_per_task_suite():
    names = {p.parent.name for p in CONFIGS}
    assert {"format", "demo", "code", "memory", "bfcl"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_example_config(path, installed):
    from toolrl import models
    from toolrl.rewards import prepare_rewards

    header = _header(path)
    assert header, f"{path} must start with a comment giving the command that runs it"
    assert any(f"toolrl train --config examples/{path.parent.name}/config.yaml" in line for line in header), header

    cfg = load_config(str(path))
    assert cfg.model.name_or_path in models.MODELS
    prepared = prepare_rewards(cfg.rewards, registry=installed.registry("rewards"))
    assert [p.name for p in prepared] == [r.name for r in cfg.rewards]
    installed.registry("advantage_estimators").get(cfg.algorithm.advantage)
    installed.registry("policy_losses").get(cfg.algorithm.policy_loss)
    installed.registry("rollout_backends").get(cfg.rollout.backend)
    for name in cfg.trainer.metric_sinks:
        installed.registry("metric_sinks").get(name)
    for name in cfg.trainer.evaluators:
        installed.registry("evaluators").get(name)
    assert cfg.data.train_file and cfg.trainer.output_dir.startswith("runs/")

    from toolrl.data import make_tasks, parse_args

    made = {}
    for line in header:
        if line.startswith("toolrl data make "):
            words = shlex.split(line.split("#")[0])
            suite = words[3]
            out = words[words.index("--out") + 1]
            seed = int(words[words.index("--seed") + 1]) if "--seed" in words else 0
            args = parse_args([w for w in words[4:] if "=" in w and not w.startswith("-")])
            tasks = make_tasks(suite, 2, seed, progress=False, **args)
            assert len(tasks) == 2
            made[out] = tasks
            for t in tasks:
                if t.env:
                    installed.registry("environments").get(t.env)
    for line in header:  # SFT conversations / DPO pairs sampled from a task file that the header writes
        if line.startswith(("toolrl data sft ", "toolrl data dpo ")):
            words = shlex.split(line.split("#")[0])
            assert "--tasks" in words and "--model" in words, line
            made[words[words.index("--out") + 1]] = []
    for key in ("train_file", "eval_file"):
        f = getattr(cfg.data, key)
        if f and made:
            assert f in made, f"data.{key}={f} is not written by a command in the header"


def test_format_example_tasks_are_written_by_the_benchmark(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_bench", ROOT / "benchmarks" / "train_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    train, evals = bench.write_tasks(str(tmp_path / "format"), n_train=4, n_eval=2)
    from toolrl.types import load_tasks

    assert len(load_tasks(train)) == 4 and len(load_tasks(evals)) == 2
    header = "\n".join(_header(ROOT / "examples" / "format" / "config.yaml"))
    assert re.search(r"train_bench\.py --write-tasks data/format", header)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_each_example_has_a_readme_with_command_time_and_result(path):
    readme = path.with_name("README.md")
    assert readme.exists(), f"{path.parent} needs a README.md: what it trains, the command, expected time and result"
    text = readme.read_text()
    assert f"--config examples/{path.parent.name}/config.yaml" in text
    for heading in ("## Expected time", "## Expected result"):
        assert heading in text, f"{readme} lacks a '{heading}' section"
    assert "DEMO_RESULT" not in text and "TODO" not in text


def test_train_bench_refuses_a_missing_config_by_name(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_bench", ROOT / "benchmarks" / "train_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with pytest.raises(SystemExit, match=r"--config .*nope\.yaml does not exist"):
        bench.main(["--config", str(tmp_path / "nope.yaml"), "--no-ppo", "--runs", str(tmp_path / "runs")])
