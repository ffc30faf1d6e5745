"""Small real models and trajectories for trainer unit tests (no download: a randomly initialised Llama)."""

import pytest
import torch

from toolrl.types import Trajectory


def _tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = LlamaForCausalLM(cfg)
    model.eval()
    return model


def _traj(task_id, prompt, response, mask, sample=0, logprobs=None):
    return Trajectory(
        task_id=task_id, sample_index=sample, prompt_ids=tuple(prompt), response_ids=tuple(response),
        loss_mask=tuple(mask), logprobs=tuple(logprobs) if logprobs else (0.0,) * len(response),
        messages=({"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}), num_prompt_messages=1,
    )


def _config(**overrides):
    from toolrl.config import load_config

    return load_config(None, [f"{k}={v}" for k, v in overrides.items()])


@pytest.fixture
def tiny_llama():
    return _tiny_llama


@pytest.fixture
def make_traj():
    return _traj


@pytest.fixture
def make_config():
    return _config
