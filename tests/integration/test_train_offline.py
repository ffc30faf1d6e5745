"""SFT and DPO on the real SmolLM2-135M (CPU, a few steps): the loss moves the right way, metrics are namespaced,
and a run resumed from its checkpoint ends with exactly the weights of an uninterrupted one."""

import json
from pathlib import Path

import pytest
import train_support as S  # tests/support, on the path through pytest's `pythonpath` (pyproject.toml)
import torch

pytestmark = pytest.mark.integration


def _conversations(tmp: Path, n: int = 4) -> Path:
    tasks = [json.loads(line) for line in S.write_tasks(tmp / "tasks.jsonl", n).read_text().splitlines()]
    p = tmp / "sft.jsonl"
    with p.open("w") as fh:
        for t in tasks:
            msgs = t["messages"] + [{"role": "assistant", "content": f"<answer>{t['metadata']['answer']}</answer>"}]
            fh.write(json.dumps({"id": t["id"], "messages": msgs}) + "\n")
    return p


def _pairs(tmp: Path, n: int = 4) -> Path:
    tasks = [json.loads(line) for line in S.write_tasks(tmp / "tasks.jsonl", n).read_text().splitlines()]
    p = tmp / "pairs.jsonl"
    with p.open("w") as fh:
        for t in tasks:
            ans = t["metadata"]["answer"]
            fh.write(json.dumps({"id": t["id"], "prompt": t["messages"],
                                 "chosen": [{"role": "assistant", "content": f"<answer>{ans}</answer>"}],
                                 "rejected": [{"role": "assistant", "content": f"The answer is {int(ans) + 1}."}]}) + "\n")
    return p


def _cfg(tmp: Path, objective: str, data: Path, out: str, **trainer):
    from toolrl.config import load_config

    raw = {
        "model": {"name_or_path": "smollm2-135m-instruct"},
        "algorithm": {"objective": objective, "dpo_beta": 0.5},
        "data": {"train_file": str(data), "prompts_per_step": 2},
        "trainer": {"total_steps": 2, "lr": 5e-5, "warmup_steps": 0, "micro_batch_size": 1, "save_freq": 1,
                    "keep_checkpoints": 0, "output_dir": str(tmp / out), "metric_sinks": ["jsonl"], "seed": 3,
                    **trainer},
    }
    return load_config(data=raw)


def _weights(run: Path, step: int) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoints" / f"step_{step:06d}" / "policy" / "model.safetensors"))


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.timeout(1800)  # 4 optimizer steps of SmolLM2-135M: ~1 min on a quiet 2-core machine
@pytest.mark.parametrize("objective", ["sft", "dpo"])
def test_offline_objective_learns_and_resumes_exactly(tmp_path, objective):
    from toolrl.trainer.dpo import train_dpo
    from toolrl.trainer.sft import train_sft

    run = train_sft if objective == "sft" else train_dpo
    data = _conversations(tmp_path) if objective == "sft" else _pairs(tmp_path)
    full = run(_cfg(tmp_path, objective, data, "full", save_freq=0))  # only its step 2 is read
    hist = full.history
    assert len(hist) == 2 and f"{objective}/loss" in hist[0] and f"{objective}/grad_norm" in hist[0]
    assert all(k.split("/")[0] in (objective, "timing") for h in hist for k in h)
    if objective == "sft":
        # 4 examples, 2 per step: the second step's (other) examples are already likelier after one update
        assert hist[1]["sft/loss"] < hist[0]["sft/loss"]
        assert hist[0]["sft/tokens"] > 0
    else:
        assert hist[0]["dpo/loss"] == pytest.approx(0.693147, abs=1e-4)  # policy == reference at step 1
        assert hist[0]["dpo/margin"] == pytest.approx(0.0, abs=1e-4)
        assert hist[1]["dpo/margin"] > 0 and hist[1]["dpo/loss"] < 0.693147

    first = run(_cfg(tmp_path, objective, data, "part", total_steps=1))
    assert first.last_checkpoint.name == "step_000001"
    resumed = run(_cfg(tmp_path, objective, data, "part", resume="auto"))
    assert resumed.first_step == 2 and len(resumed.history) == 1
    assert resumed.history[0][f"{objective}/loss"] == pytest.approx(hist[1][f"{objective}/loss"], rel=1e-6)
    assert _same_weights(_weights(tmp_path / "part", 2), _weights(tmp_path / "full", 2))
    lines = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert [x["step"] for x in lines] == [1, 2]
