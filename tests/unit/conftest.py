"""Fixtures shared by the unit tests: a tiny random-init Llama (real transformers code, random weights)
with SmolLM2's real tokenizer, fast enough for the engine, the agent loop and the trainers' plumbing."""

import contextlib
import importlib.util
import sys
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), bos_token_id=1, pad_token_id=2,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@contextlib.contextmanager
def benchmark_module(relpath: str):
    """A script under benchmarks/ imported as a module named after its file (registered in sys.modules while
    in use: dataclasses resolve string annotations through it)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = mod
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(path.stem, None)


@pytest.fixture(scope="module")
def load_benchmark():
    """`with load_benchmark("gpu/step_trace.py") as mod:` (see benchmark_module)."""
    return benchmark_module
