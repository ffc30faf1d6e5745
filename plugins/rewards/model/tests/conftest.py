"""Fixtures for toolrl-rewards-model tests: real small models saved as reward-model checkpoints, and
trajectories. (The judge's real `toolrl serve` is a fixture in test_judge.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from toolrl.types import Task, Trajectory


def save_reward_checkpoint(source: str | Path, out: Path, num_labels: int, seed: int) -> Path:
    """`source` (a real model folder) as an AutoModelForSequenceClassification checkpoint with a seeded head.

    The head is random (seeded), not trained: these checkpoints test the plumbing
    (loading, chat template, batching, devices, the Ray actor), not reward quality.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels, dtype=torch.float32)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smollm2_rm(smollm2_path, tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct with a seeded 1-label head (decoder reward model, chat template)."""
    return save_reward_checkpoint(smollm2_path, tmp_path_factory.mktemp("rm") / "smollm2-rm", 1, seed=0)


@pytest.fixture(scope="session")
def minilm_rm(tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 with a seeded 2-label head (BERT cross-encoder, no chat template)."""
    from toolrl.models import resolve_embedding_model

    return save_reward_checkpoint(resolve_embedding_model("all-minilm-l6-v2"),
                                  tmp_path_factory.mktemp("rm") / "minilm-rm", 2, seed=0)


def episode(task: Task, answer: str, sample: int = 0) -> Trajectory:
    return Trajectory(task_id=task.id, sample_index=sample, prompt_ids=(1,), response_ids=(2,), loss_mask=(1,),
                      logprobs=(0.0,), messages=(*task.messages, {"role": "assistant", "content": answer}),
                      num_prompt_messages=len(task.messages))


@pytest.fixture
def batch():
    """batch([(question, answer, metadata), ...]) -> (trajectories, tasks)."""

    def make(rows):
        trajs, tasks = [], []
        for i, (question, answer, meta) in enumerate(rows):
            task = Task(id=f"t{i}", messages=({"role": "user", "content": question},), metadata=meta or {})
            tasks.append(task)
            trajs.append(episode(task, answer, i))
        return trajs, tasks

    return make
