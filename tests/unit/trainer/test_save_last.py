"""trainer.save_last: the checkpoint after the last step is written unless it is turned off (offline trainer on
the tiny random-init Llama of tests/unit/conftest.py; the RL trainer's path is asserted in
tests/integration/test_train_algorithms.py)."""

import json


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


def test_no_checkpoint_with_save_last_off_and_no_save_freq(tmp_path, tiny_model_dir):
    result = _sft(tmp_path, tiny_model_dir, save_last=False)
    assert len(result.history) == 2 and result.last_checkpoint is None
    assert _steps(result.run_dir) == []


def test_save_freq_still_saves_with_save_last_off_and_the_default_saves_the_last_step(tmp_path, tiny_model_dir):
    every = _sft(tmp_path / "every", tiny_model_dir, save_freq=1, save_last=False)
    assert _steps(every.run_dir) == ["step_000001", "step_000002"]
    default = _sft(tmp_path / "default", tiny_model_dir)
    assert _steps(default.run_dir) == ["step_000002"] and default.last_checkpoint.name == "step_000002"
