"""`toolrl eval` on real SmolLM2: the CLI with an installed reward plugin, a LoRA adapter checkpoint, and the
before/after comparison table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import train_support as S  # tests/support, on the path through pytest's `pythonpath` (pyproject.toml)

pytestmark = pytest.mark.integration


TOOLRL = str(Path(sys.executable).with_name("toolrl"))


def _yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_eval_cli_then_adapter_checkpoint_then_compare(tmp_path, smollm2_path, plugin_manager):
    tasks = S.write_tasks(tmp_path / "eval.jsonl", 2, seed=4)
    cfg = _yaml(tmp_path / "eval.yaml", """
rollout: {max_new_tokens: 8, max_total_tokens: 64, max_turns: 1}
rewards:
  - {name: format_answer_tag, weight: 1.0}
trainer: {accuracy_reward: format_answer_tag, seed: 3}
""")
    env = dict(os.environ, TOOLRL_NO_ENTRYPOINTS="0")  # the real installed reward plugin (toolrl-rewards-text)
    base_json = tmp_path / "base.json"
    proc = subprocess.run([TOOLRL, "eval", "--config", str(cfg), "--model", "smollm2-135m-instruct", "--tasks",
                           str(tasks), "--n", "2", "--out", str(base_json), "--label", "base"],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "pass@2" in proc.stdout and "accuracy" in proc.stdout
    report = json.loads(base_json.read_text())
    m = report["metrics"]
    assert report["n"] == 2 and report["temperature"] == 1.0  # several samples: the rollout temperature
    for key in ("eval/accuracy", "eval/pass@1", "eval/pass@2", "eval/reward_mean", "eval/distinct_1",
                "eval/distinct_2", "eval/entropy_2gram", "eval/response_length"):
        assert key in m, key
    assert m["eval/pass@1"] == pytest.approx(m["eval/accuracy"])
    assert m["eval/pass@2"] >= m["eval/pass@1"]
    assert len(report["per_task"]) == 2 and all(len(t["completions"]) == 2 for t in report["per_task"])

    # a LoRA adapter folder (as checkpoints save it) evaluates like its base while the adapters are zero
    import peft
    from transformers import AutoModelForCausalLM

    from toolrl.config import load_config
    from toolrl.evaluation.cli import eval_command
    from toolrl.trainer.modeling import _peft_reads_old_checkpointing_name, _point_adapter_at_base

    base = AutoModelForCausalLM.from_pretrained(smollm2_path)
    with _peft_reads_old_checkpointing_name():  # peft's own deprecation warning, as toolrl's loaders silence it
        lora = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                         task_type="CAUSAL_LM"))
    adapter_dir = tmp_path / "ckpt" / "policy"
    lora.save_pretrained(adapter_dir)
    _point_adapter_at_base(adapter_dir, smollm2_path)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(smollm2_path).save_pretrained(adapter_dir)

    plugin_manager.register(S.AnswerTagPlugin(), name="answer-tag-test")
    greedy = load_config(None, ["rollout.max_new_tokens=8", "rollout.max_total_tokens=64", "rollout.max_turns=1",
                                "rewards=[{name: answer_tag}]"])
    a = eval_command(greedy, model=str(smollm2_path), tasks=str(tasks), n=1, out=str(tmp_path / "a.json"),
                     label="base-greedy")
    b = eval_command(greedy, model=str(tmp_path / "ckpt"), tasks=str(tasks), n=1, out=str(tmp_path / "b.json"),
                     label="adapter-greedy")
    assert a.temperature == 0.0
    assert [t["completions"] for t in a.per_task] == [t["completions"] for t in b.per_task]

    out = subprocess.run([sys.executable, "-m", "toolrl.evaluation", "compare", str(tmp_path / "a.json"),
                          str(tmp_path / "b.json")], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, COLUMNS="160"), check=False)
    assert out.returncode == 0, out.stderr
    assert "base-greedy" in out.stdout and "adapter-greedy" in out.stdout and "delta" in out.stdout


def test_eval_without_rewards_says_to_pass_the_config(tmp_path):
    tasks = S.write_tasks(tmp_path / "eval.jsonl", 1)
    proc = subprocess.run([TOOLRL, "eval", "--model", "smollm2-135m-instruct", "--tasks", str(tasks)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "evaluation needs rewards" in proc.stderr and "--config" in proc.stderr
