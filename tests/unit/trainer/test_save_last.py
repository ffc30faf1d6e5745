"""trainer.save_last: the checkpoint after the last step is written unless it is turned off (offline trainer on
a tiny random-init Llama with SmolLM2's tokenizer; the RL trainer's path is asserted in
tests/integration/test_train_algorithms.py)."""

import json

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smollm2_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                      eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), bos_token_id=1, pad_token_id=2,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-sft")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _sft(tmp_path, model_dir, **trainer):
    from toolrl.config import load_config
    from toolrl.trainer.sft import train_sft

    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "sft.jsonl"
    with data.open("w") as fh:
        for i in range(4):
            fh.write(json.dumps({"id": f"c{i}", "messages": [{"role": "user", "content": f"Say {i}."},
                                                             {"role": "assistant", "content": str(i)}]}) + "\n")
    raw = {"model": {"name_or_path": str(model_dir)}, "algorithm": {"objective": "sft"},
           "data": {"train_file": str(data), "prompts_per_step": 2},
           "trainer": {"total_steps": 2, "micro_batch_size": 2, "output_dir": str(tmp_path / "run"),
                       "metric_sinks": ["jsonl"], "keep_checkpoints": 0, **trainer}}
    return train_sft(load_config(data=raw))


def _steps(run_dir):
    ckpts = run_dir / "checkpoints"
    return sorted(p.name for p in ckpts.iterdir() if p.name.startswith("step_")) if ckpts.exists() else []


def test_no_checkpoint_with_save_last_off_and_no_save_freq(tmp_path, tiny_dir):
    result = _sft(tmp_path, tiny_dir, save_last=False)
    assert len(result.history) == 2 and result.last_checkpoint is None
    assert _steps(result.run_dir) == []


def test_save_freq_still_saves_with_save_last_off_and_the_default_saves_the_last_step(tmp_path, tiny_dir):
    every = _sft(tmp_path / "every", tiny_dir, save_freq=1, save_last=False)
    assert _steps(every.run_dir) == ["step_000001", "step_000002"]
    default = _sft(tmp_path / "default", tiny_dir)
    assert _steps(default.run_dir) == ["step_000002"] and default.last_checkpoint.name == "step_000002"
