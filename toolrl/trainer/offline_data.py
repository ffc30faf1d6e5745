"""Make SFT conversations and DPO pairs by sampling a model on tasks and scoring with the run's rewards.

    toolrl data sft --config C --model M --tasks T --n 4 --out sft.jsonl    # rejection sampling: best correct sample per task
    toolrl data dpo --config C --model M --tasks T --n 4 --out pairs.jsonl  # best vs worst sample per task (a GRPO group)

`--tasks` is any task file, e.g. one written by `toolrl data make <suite>`
(so SFT data comes from the task suites), and `--model` any model or a
run's checkpoint (`runs/NAME/checkpoints/latest`: the trained policy's best
and worst samples). Episodes run through the same agent loop, sandbox and
rewards as training (`toolrl.trainer.rollout.run_rollouts`, the config's
`rollout`, `envs` and `rewards`), `n` per task at `rollout.temperature`,
seeded by `trainer.seed`.

Rejection sampling keeps, per task, the highest-reward sample among those
judged correct (`trainer.accuracy_reward` >= `trainer.success_threshold`, or
the total reward when no accuracy reward is set). Pairs take, per task, the
highest- and the lowest-reward sample when their totals differ by at least
`min_margin`; ties are skipped (they carry no preference).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolrl.errors import ToolrlError
from toolrl.trainer.conversations import Conversation, PreferencePair, write_jsonl
from toolrl.types import RewardResult, Task, Trajectory

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """One task's samples and their rewards."""

    task: Task
    samples: list[tuple[Trajectory, RewardResult, bool]]  # trajectory, reward, correct


def sample_and_score(cfg: Any, model: str, tasks_file: str, n: int) -> list[Scored]:
    """`n` episodes per task from `model`, scored with `cfg.rewards` (the evaluation runner's set-up)."""
    from toolrl import plugins
    from toolrl.env import EnvContext
    from toolrl.metrics.evaluation import correctness
    from toolrl.trainer.modeling import load_eval_model, resolve_model
    from toolrl.rewards import compute_rewards_sync, prepare_rewards, reward_loop
    from toolrl.rollout.base import BackendSettings
    from toolrl.trainer.modeling import load_tokenizer
    from toolrl.trainer.rollout import run_rollouts
    from toolrl.types import load_tasks

    if n < 1:
        raise ToolrlError(f"--n must be at least 1, got {n}", where="--n", fix="pass --n 4 (samples per task)")
    if not cfg.rewards:
        raise ToolrlError("scoring samples needs rewards, and the config has none", where="rewards",
                          fix="pass the training config (--config run.yaml), whose rewards judge the samples")
    task_list = load_tasks(tasks_file)
    prepared = prepare_rewards(cfg.rewards)
    path = resolve_model(model)
    tokenizer = load_tokenizer(path)
    module = load_eval_model(Path(path), cfg.model.dtype, cfg.model.device)
    backend = plugins.registry("rollout_backends").get(cfg.rollout.backend)(BackendSettings(
        model_path=str(path), dtype=cfg.model.dtype, device=cfg.model.device, max_batch_size=cfg.rollout.max_batch_size,
        module=module, tokenizer=tokenizer, seed=cfg.trainer.seed, extra=dict(cfg.rollout.backend_args)))
    env_ctx = EnvContext(cfg.envs)
    try:
        trajs = run_rollouts(backend, tokenizer, task_list, n, cfg, env_ctx, seed=cfg.trainer.seed)
        results, _ = compute_rewards_sync(trajs, task_list, prepared)
    finally:
        try:
            reward_loop().run_until_complete(env_ctx.aclose())
        finally:
            backend.close()
    flags = correctness(trajs, results, cfg.trainer.accuracy_reward, cfg.trainer.success_threshold)
    out = []
    for k, task in enumerate(task_list):
        rows = list(zip(trajs[k * n : (k + 1) * n], results[k * n : (k + 1) * n], flags.get(task.id, [False] * n)))
        out.append(Scored(task, [(t, r, bool(c)) for t, r, c in rows]))
    return out


def _usable(t: Trajectory, r: RewardResult) -> bool:
    return r.total is not None and not t.infra_error and t.finish_reason != "error"


def best_conversations(scored: Sequence[Scored]) -> list[Conversation]:
    """Rejection sampling: per task, the correct sample with the highest reward (tasks with none are skipped)."""
    out = []
    for s in scored:
        ok = [(t, r) for t, r, c in s.samples if c and _usable(t, r)]
        if not ok:
            continue
        t, r = max(ok, key=lambda tr: tr[1].total)
        out.append(Conversation(s.task.id, tuple(t.messages), tuple(s.task.tools),
                                {"reward": r.total, "sample_index": t.sample_index}))
    return out


def best_worst_pairs(scored: Sequence[Scored], min_margin: float = 1e-6) -> list[PreferencePair]:
    """Per task, (highest-reward, lowest-reward) sample when their totals differ by at least `min_margin`."""
    out = []
    for s in scored:
        ok = [(t, r) for t, r, _ in s.samples if _usable(t, r)]
        if len(ok) < 2:
            continue
        best = max(ok, key=lambda tr: tr[1].total)
        worst = min(ok, key=lambda tr: tr[1].total)
        if best[1].total - worst[1].total < min_margin:
            continue
        k = best[0].num_prompt_messages
        out.append(PreferencePair(
            s.task.id, tuple(best[0].messages[:k]), tuple(best[0].completion_messages),
            tuple(worst[0].completion_messages), tuple(s.task.tools),
            {"reward_chosen": best[1].total, "reward_rejected": worst[1].total}))
    return out


def _write_and_report(rows: Sequence[Any], out: str, what: str, tasks: int, n: int, why_left: str) -> Path:
    """Write the rows and say on stderr (as `toolrl data make` does) how many, of how many tasks, and why the
    rest were left out (one row per task at most)."""
    path = write_jsonl(rows, out)
    left = tasks - len(rows)
    print(f"wrote {len(rows)} {what} (of {tasks} tasks, {n} samples each) to {path}"
          + (f"; {left} task(s) {why_left} and are left out" if left else ""), file=sys.stderr)
    return path


def sft_command(cfg: Any, *, model: str, tasks: str, n: int, out: str) -> Path:
    scored = sample_and_score(cfg, model, tasks, n)
    rows = best_conversations(scored)
    if not rows:
        raise ToolrlError(f"no task had a correct sample among {n} per task, so there is nothing to fine-tune on",
                          where=f"--model {model} --tasks {tasks}",
                          fix="raise --n, use easier tasks, a stronger --model, or check the rewards with toolrl eval")
    return _write_and_report(rows, out, "conversations", len(scored), n, "had no correct sample")


def dpo_command(cfg: Any, *, model: str, tasks: str, n: int, out: str, min_margin: float = 1e-6) -> Path:
    if n < 2:
        raise ToolrlError("a pair needs at least 2 samples per task", where="--n", fix="pass --n 4")
    scored = sample_and_score(cfg, model, tasks, n)
    rows = best_worst_pairs(scored, min_margin)
    if not rows:
        raise ToolrlError(f"every task's {n} samples got the same reward, so no pair has a preference",
                          where=f"--model {model} --tasks {tasks}",
                          fix="raise --n or rollout.temperature, or use tasks the model sometimes solves")
    return _write_and_report(rows, out, "pairs", len(scored), n, f"had no reward gap of {min_margin:g} or more")
