"""The training step itself (toolrl.trainer.step.train_step over the in-process roles of
toolrl.trainer.local, SmolLM2, the program endpoint on 127.0.0.1) trains every segment of an agent
program that rewrites its history: the update's batch holds one row per segment, each with its
episode's advantage, and the samples log keeps one line per episode with the program's result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from toolrl import hookimpl
from toolrl.config import load_config
from toolrl.metrics.samples import read_samples
from toolrl.trainer.roles import PolicyUpdate

pytestmark = pytest.mark.integration

AGENTS = Path(__file__).parent / "programs" / "agents.py"


def first_reply_chars(trajectories, *, result, **kwargs):
    """A reward on what the program returned: the characters of its first reply / 100."""
    return [len((r or [""])[0] or "") / 100.0 for r in result]


class RewardPlugin:
    @hookimpl
    def register_rewards(self, register):
        register("first_reply_chars", first_reply_chars)


class RecordingTrainer:
    """The real in-process trainer; remembers the batch of each update."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.updates: list[PolicyUpdate] = []

    def update(self, update: PolicyUpdate):
        self.updates.append(update)
        return self.inner.update(update)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RecordingEngines:
    """The real in-process engines; remember the trajectories of each rollout."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.rollouts: list[Any] = []

    def rollout(self, job):
        trajs = self.inner.rollout(job)
        self.rollouts.append(trajs)
        return trajs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_train_step_trains_every_segment(program_env, smollm2_path, tmp_path):
    from toolrl.trainer.local import local_context
    from toolrl.trainer.step import train_step

    import toolrl_env_program.plugin

    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"id": "forget", "messages": [{"role": "user", "content": "Name a color."}],
                                 "env": "program", "env_args": {"entry": f"{AGENTS}:forgetful", "timeout": 600}})
                     + "\n")
    cfg = load_config(None, [
        "model.name_or_path=smollm2-135m-instruct", "model.lora.rank=0", "rollout.n=4", "rollout.temperature=1.0",
        "rollout.max_new_tokens=10", "rollout.max_total_tokens=256", "data.prompts_per_step=1",
        f"data.train_file={train}", "trainer.total_steps=1", "trainer.micro_batch_size=4", "trainer.lr=1e-5",
        "trainer.seed=5", "algorithm.kl_coef=0", f"trainer.output_dir={tmp_path / 'run'}",
        'rewards=[{"name": "first_reply_chars", "weight": 1.0}]'])
    ctx = local_context(cfg, plugins=[RewardPlugin(), toolrl_env_program.plugin], model_path=str(smollm2_path))
    trainer, engines = RecordingTrainer(ctx.trainer), RecordingEngines(ctx.engines)
    ctx.trainer, ctx.engines = trainer, engines
    try:
        metrics = train_step(1, ctx)
    finally:
        engines.inner.close()

    [trajs] = engines.rollouts
    assert len(trajs) == 4 and all(t.error is None and len(t.segments) == 1 for t in trajs), [t.error for t in trajs]
    assert metrics["rollout/segment_rows"] == 4.0 and metrics["rollout/segments_per_episode"] == 2.0
    [update] = trainer.updates
    batch = update.batch
    assert len(batch) == 8  # 4 episodes' own rows, then their 4 earlier segments
    sampled = sum(t.num_sampled_tokens + sum(t.segments[0].loss_mask) for t in trajs)
    assert float(batch.response_mask.sum()) == sampled
    for k, t in enumerate(trajs):  # row 4 + k is episode k's first segment, token for token
        s = t.segments[0]
        assert batch.response_ids[4 + k, : len(s.response_ids)].tolist() == list(s.response_ids)
    mask = batch.response_mask
    per_row = (batch["advantages"] * mask).sum(-1) / mask.sum(-1)
    assert torch.allclose(per_row[4:], per_row[:4], atol=1e-6) and float(per_row.abs().sum()) > 0
    assert metrics["actor/grad_norm"] > 0
    # the samples log: one line per episode (not per row), with the program's result and its segments
    _, rows = read_samples(cfg.trainer.output_dir)
    assert [r["result"] for r in rows] == [t.result for t in trajs]
    assert [r["advantage"] for r in rows] == pytest.approx(per_row[:4].tolist(), abs=1e-6)
    assert all(len(r["segments"]) == 1 for r in rows)
