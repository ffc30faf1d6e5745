"""Each RL algorithm variant trains end to end on the real SmolLM2-135M through Ray (CPU, 2 steps each):
DAPO's switches (clip-higher, dynamic sampling, overlong shaping) with dual-clip and truncated IS, GSPO with
several optimizer steps per batch, Dr. GRPO with token-sum-norm, and REINFORCE++ with the KL in the reward.
The runs share one local Ray instance (the `shared_ray` fixture)."""

import math

import pytest
import train_support as S  # tests/support, on the path through pytest's `pythonpath` (pyproject.toml)

pytestmark = pytest.mark.integration


VARIANTS = {
    "dapo": ({"advantage": "grpo", "clip_ratio_high": 0.28, "loss_agg": "token-mean", "dynamic_sampling": True,
              "max_sampling_draws": 2, "overlong_buffer": 4, "overlong_penalty": 0.5, "dual_clip": 3.0,
              "tis_cap": 2.0, "kl_coef": 0.0},
             {}, ("rollout/dynamic_sampling_draws", "rollout/dynamic_sampling_groups_kept", "reward/overlong_penalty",
                  "actor/tis_weight_mean", "actor/clip_frac")),
    "gspo": ({"advantage": "grpo", "policy_loss": "gspo", "clip_ratio": 3e-4, "clip_ratio_high": 4e-4,
              "loss_agg": "seq-mean", "kl_coef": 0.0},
             {"ppo_epochs": 2, "mini_batch_size": 2}, ("actor/clip_frac", "actor/ratio_max", "actor/approx_kl")),
    "dr_grpo": ({"advantage": "dr_grpo", "loss_agg": "token-sum-norm", "loss_norm_tokens": 8, "kl_coef": 0.0},
                {}, ("loss/policy",)),
    "reinforce_pp": ({"advantage": "reinforce_pp", "kl_coef": 0.01, "kl_estimator": "k2"},
                     {}, ("reward/kl_penalty", "actor/kl")),
}


@pytest.fixture
def answer_tag(plugin_manager):
    plugin_manager.register(S.AnswerTagPlugin(), name="answer-tag-test")
    return plugin_manager


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", list(VARIANTS))
def test_algorithm_variant_trains(tmp_path, answer_tag, smollm2_path, shared_ray, name):
    import toolrl

    algorithm, trainer, keys = VARIANTS[name]
    rollout = {"n": 1} if name == "reinforce_pp" else {"max_total_tokens": 10} if name == "dapo" else {}
    data = {"prompts_per_step": 4} if name == "reinforce_pp" else {}
    # one checkpoint (reinforce_pp's, asserted below); the others write none (trainer.save_last=false)
    save_last = name == "reinforce_pp"
    cfg = S.base_config(tmp_path, algorithm=algorithm, rollout=rollout, data=data,
                        trainer={"total_steps": 2, "save_freq": 0, "save_last": save_last, "micro_batch_size": 2,
                                 **trainer, "output_dir": str(tmp_path / name), "metric_sinks": ["jsonl"]},
                        ray={"num_cpus": 2, "torch_threads": 2, "colocate": True})
    result = toolrl.train(cfg)
    if not save_last:
        assert result.last_checkpoint is None and not (result.run_dir / "checkpoints").exists()
    rows = S.read_metrics(result.run_dir)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for key in keys:
            assert key in r, (name, key, sorted(r))
        assert math.isfinite(r["loss/policy"]) and r["actor/grad_norm"] >= 0
    if name == "dapo":
        assert all(1 <= r["rollout/dynamic_sampling_draws"] <= 2 for r in rows)
        assert all(r["reward/overlong_penalty"] <= 0 for r in rows)
        assert all(0 < r["actor/tis_weight_mean"] <= 2.0 for r in rows)
    if name == "gspo":
        assert any(r["actor/ratio_max"] != 1.0 for r in rows)  # the policy moved within the batch
    if name == "reinforce_pp":
        assert rows[0]["reward/kl_penalty"] == pytest.approx(0.0, abs=1e-6)  # step 1 samples from the reference
        assert result.last_checkpoint is not None
