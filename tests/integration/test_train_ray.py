"""Training through Ray with real SmolLM2 workers: GRPO with a reference actor, LoRA, PPO with a critic.

The first test checks the local Ray instance that train() starts and stops; the others share one
(the `shared_ray` fixture)."""

import json
import os

import pytest
import train_support as S  # tests/support, on the path through pytest's `pythonpath` (pyproject.toml)

pytestmark = pytest.mark.integration


@pytest.fixture
def answer_tag(plugin_manager):
    plugin_manager.register(S.AnswerTagPlugin(), name="answer-tag-test")
    return plugin_manager


def test_grpo_on_local_ray_with_two_cpu_workers(tmp_path, answer_tag, smollm2_path):
    """Policy and reference are two Ray actors of 1 CPU each on a local 2-CPU Ray instance started by train()."""
    import ray
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import toolrl

    cfg = S.base_config(
        tmp_path,
        algorithm={"advantage": "grpo", "kl_coef": 0.05, "kl_estimator": "k3"},
        data={"eval_file": str(S.write_tasks(tmp_path / "eval.jsonl", 2, seed=9))},
        trainer={"total_steps": 2, "save_freq": 0, "eval_freq": 2, "eval_n": 2, "accuracy_reward": "answer_tag"},
        ray={"num_cpus": 2, "torch_threads": 1, "policy": {"num_cpus": 1}, "reference": {"num_cpus": 1}},
    )
    assert not ray.is_initialized()
    result = toolrl.train(cfg)
    assert not ray.is_initialized()  # the local instance it started is gone again

    assert result.placement["policy"] != result.placement["reference"] != os.getpid()
    rows = S.read_metrics(result.run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2]  # step 0: evaluation of the starting policy
    for r in rows[1:]:
        for key in ("reward/mean", "reward/std", "reward/accuracy", "actor/kl", "actor/entropy", "loss/policy",
                    "actor/clip_frac", "rollout/response_length", "rollout/num_turns", "rollout/tool_calls",
                    "rollout/distinct_1", "timing/rollout", "timing/update", "timing/rollout_tokens_per_s"):
            assert key in r, key
    assert rows[1]["actor/kl"] == pytest.approx(0.0, abs=1e-5)  # step 1 samples from the reference itself
    assert rows[2]["actor/kl_coef"] == 0.05
    assert "eval/accuracy" in rows[0] and "eval/pass@2" in rows[2]
    assert (result.run_dir / "metrics.csv").exists()
    assert list(result.run_dir.glob("events.out.tfevents.*"))

    # the checkpoint's policy is a normal HF folder, loadable with no conversion
    ckpt = result.last_checkpoint
    assert ckpt.name == "step_000002" and (ckpt.parent / "latest").resolve() == ckpt.resolve()
    model = AutoModelForCausalLM.from_pretrained(ckpt / "policy")
    tok = AutoTokenizer.from_pretrained(ckpt / "policy")
    assert tok.chat_template and model.config.vocab_size == 49152
    from toolrl import models

    assert models.resolve(str(ckpt)) == ckpt / "policy"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["sampler"]["position"] == 4
    for name in ("optimizer.pt", "scheduler.pt", "rng.pt", "COMPLETE"):
        assert (ckpt / name).exists()


def test_lora_trains_adapters_and_uses_the_base_as_reference(tmp_path, answer_tag, smollm2_path, shared_ray):
    from transformers import AutoModelForCausalLM

    import toolrl

    cfg = S.base_config(
        tmp_path,
        model={"name_or_path": "smollm2-135m-instruct",
               "lora": {"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "save_merged": True}},
        # the entropy bonus gives the adapters a gradient even when both samples of every prompt get the
        # same reward (then every GRPO advantage is 0 and the KL gradient at policy == reference is 0 too)
        algorithm={"advantage": "grpo", "kl_coef": 0.1, "entropy_coef": 0.01},
        trainer={"total_steps": 1, "lr": 1e-3},
    )
    result = toolrl.train(cfg)
    row = S.read_metrics(result.run_dir)[0]
    # adapters start at zero, so the policy equals the base (the reference) when step 1 is sampled
    assert row["actor/kl"] == pytest.approx(0.0, abs=1e-6)
    ckpt = result.last_checkpoint
    assert (ckpt / "policy" / "adapter_config.json").exists()
    assert not (ckpt / "policy" / "model.safetensors").exists()  # only the adapters are saved for the policy
    merged = AutoModelForCausalLM.from_pretrained(ckpt / "merged")
    adapter = AutoModelForCausalLM.from_pretrained(ckpt / "policy")  # transformers + peft load it over the base
    base = AutoModelForCausalLM.from_pretrained(smollm2_path)
    name = "model.layers.0.self_attn.q_proj.weight"
    m, b = merged.state_dict()[name], base.state_dict()[name].float()
    assert not (m == b).all(), "the merged weights include the trained adapters"
    assert adapter is not None


def test_ppo_with_colocated_critic_fits_the_returns(tmp_path, answer_tag, smollm2_path, shared_ray):
    """PPO: critic + GAE, KL in the reward; the reference and critic run inside the policy actor (ray.colocate)."""
    import toolrl

    cfg = S.base_config(
        tmp_path,
        rollout={"n": 2, "max_new_tokens": 8, "max_total_tokens": 64, "max_turns": 1},
        algorithm={"advantage": "ppo", "kl_coef": 0.05, "gamma": 1.0, "lam": 0.95},
        # 2 steps: the check below is per step (3 steps were for an older first-vs-last loss comparison)
        trainer={"total_steps": 2, "critic_lr": 1e-4, "ppo_epochs": 2, "mini_batch_size": 4, "micro_batch_size": 4},
        ray={"num_cpus": 2, "colocate": True},
    )
    result = toolrl.train(cfg)
    assert result.placement["critic"] == result.placement["reference"] == result.placement["policy"]
    rows = S.read_metrics(result.run_dir)
    assert all(k in rows[0] for k in ("critic/explained_var", "critic/grad_norm", "reward/kl_penalty"))
    # on every step's batch the critic's loss during its update is below its loss before it
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["loss/value"] < r["critic/value_loss_before"], r
    assert (result.last_checkpoint / "critic" / "value_head.safetensors").exists()
