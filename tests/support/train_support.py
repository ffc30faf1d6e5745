"""Shared pieces of the training tests: a tiny answer-tag task file and config.

pytest puts this folder on the path (`pythonpath` in pyproject.toml), so tests `import train_support as S`;
subprocess drivers load it by its path (`S.__file__`). Ray workers never import it by name: the plugins a
test passes to `train` travel to them by value, with the local modules their code uses (this one and the
test file; `toolrl.trainer.group.local_modules`). Until that rule (session 15) the workers imported the
test file by name, and `import train_support` failed there.
"""

from __future__ import annotations

import json
from pathlib import Path

ANSWER_RE = r"<answer>\s*(-?\d+)\s*</answer>"


def answer_tag_reward(trajectories, *, completions, **kwargs):
    """1.0 when the final message holds <answer>N</answer>, else 0.0 (a learnable format reward)."""
    import re

    return [1.0 if re.search(ANSWER_RE, c or "") else 0.0 for c in completions]


class AnswerTagPlugin:
    """Registers `answer_tag` in the driver process (rewards are computed on the driver)."""

    from toolrl import hookimpl

    @hookimpl
    def register_rewards(self, register):
        register("answer_tag", answer_tag_reward)


def write_tasks(path: Path, n: int, seed: int = 0) -> Path:
    """Few-shot arithmetic tasks that SmolLM2 often (not always) answers in the tag format."""
    import random

    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for i in range(n):
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            messages = [
                {"role": "user", "content": "Compute 12 + 30. Reply in the form <answer>NUMBER</answer>."},
                {"role": "assistant", "content": "<answer>42</answer>"},
                {"role": "user", "content": f"Compute {a} + {b}. Reply in the form <answer>NUMBER</answer>."},
            ]
            fh.write(json.dumps({"id": f"add-{seed}-{i}", "messages": messages,
                                 "metadata": {"answer": str(a + b)}}) + "\n")
    return path


def base_config(tmp: Path, **sections) -> dict:
    """A 2-prompt x 2-sample, 8-token config on SmolLM2 (seconds per step on 2 CPU cores)."""
    cfg = {
        "model": {"name_or_path": "smollm2-135m-instruct"},
        "rollout": {"n": 2, "max_new_tokens": 8, "max_total_tokens": 64, "temperature": 1.0, "max_turns": 1},
        "algorithm": {"advantage": "grpo", "kl_coef": 0.0},
        "rewards": [{"name": "answer_tag", "weight": 1.0}],
        "data": {"train_file": str(write_tasks(tmp / "train.jsonl", 8)), "prompts_per_step": 2},
        "trainer": {"total_steps": 2, "lr": 1e-5, "micro_batch_size": 2, "output_dir": str(tmp / "run"),
                    "metric_sinks": ["jsonl", "csv", "tensorboard"], "seed": 0},
        "ray": {"num_cpus": 2, "torch_threads": 2},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(cfg.get(section), dict):
            cfg[section] = {**cfg[section], **values}
        else:
            cfg[section] = values
    return cfg


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]

