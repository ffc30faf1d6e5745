"""The trainer group on real Ray with real SmolLM2 ranks: 2 gloo ranks compute what 1 rank computes, a
data-parallel run checkpoints a plain HF folder, and plugins passed to toolrl.train reach the workers.

Tolerance: the ranks run the same micro-batches (micro_batch_size=1, one torch thread), so the only
difference is the order in which per-sample gradients are summed (gloo all-reduce vs. accumulation):
losses, gradient norms and log-probs agree to rel 1e-5 (the KL terms, differences of nearly equal
log-probs, to rel 1e-4: see the test), updated LoRA weights to abs 1e-5 (float32, lr 1e-3:
measured difference 1.2e-6 after four Adam steps), and the two ranks hold bit-identical weights.

Both tests use one local Ray instance (the `shared_ray` fixture).
"""

import dataclasses
import os
import random

import pytest
import train_support as S  # tests/support, on the path through pytest's `pythonpath` (pyproject.toml)
import torch

pytestmark = pytest.mark.integration


def _batch(tokenizer, n_groups=4, n=2, seed=0):
    """A GRPO-shaped batch of real token ids: groups share a prompt, responses differ in length, some tokens
    are tool tokens (mask 0), one sample is excluded; advantages and returns are seeded random values."""
    from toolrl.trainer.batch import build_batch
    from toolrl.trainer.step import prompt_groups
    from toolrl.types import Trajectory

    rng = random.Random(seed)
    vocab = [i for i in range(200, 5000)]
    trajs = []
    for g in range(n_groups):
        text = tokenizer.apply_chat_template([{"role": "user", "content": f"Compute {g} + {g * 7}."}],
                                             add_generation_prompt=True, tokenize=False)
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
        for k in range(n):
            length = rng.randint(3, 14)
            response = [rng.choice(vocab) for _ in range(length)]
            mask = [0 if 3 <= i < 5 else 1 for i in range(length)]  # tokens 3-4 play a tool result
            trajs.append(Trajectory(task_id=f"t{g}", sample_index=k, prompt_ids=tuple(prompt),
                                    response_ids=tuple(response), loss_mask=tuple(mask),
                                    logprobs=(0.0,) * length, messages=({"role": "user", "content": "q"},)))
    valid = [True] * len(trajs)
    valid[5] = False
    batch = build_batch(trajs, prompt_groups(trajs), valid, tokenizer.pad_token_id)
    gen = torch.Generator().manual_seed(seed)
    batch.extras["advantages"] = torch.randn(len(batch), 1, generator=gen) * batch.response_mask
    batch.extras["returns"] = torch.rand(len(batch), batch.response_width, generator=gen) * batch.response_mask
    return batch


def _run_group(cfg, model_path, batch):
    """Start the roles, run every batch-shaped call and one policy update; return the results."""
    from toolrl.trainer.cluster import ray_get
    from toolrl.trainer.group import start_roles
    from toolrl.trainer.roles import PolicyUpdate

    roles = start_roles(cfg, model_path, needs_reference=True, needs_critic=False)
    try:
        assert roles.trainer.world_size == cfg.trainer.data_parallel
        out = {"ref": roles.reference.ref_logprobs(batch).get(), "old": roles.trainer.logprobs(batch).get()}
        b = dataclasses.replace(batch, extras={**batch.extras, "ref_logprobs": out["ref"], "old_logprobs": out["old"]})
        out["policy"] = roles.trainer.update(PolicyUpdate(b, kl_coef=0.05, seed=3)).get()
        out["weights"] = [ray_get(r.__ray_call__.remote(
            lambda self: {k: v.detach().clone() for k, v in self.model.state_dict().items()}))
            for r in roles.trainer.ranks]
        out["pids"] = dict(roles.pids)
        return out
    finally:
        roles.close()


def test_two_gloo_ranks_match_one_rank(tmp_path, smollm2_path, shared_ray):
    from toolrl.config import load_config
    from toolrl.trainer.modeling import load_tokenizer

    tokenizer = load_tokenizer(smollm2_path)
    batch = _batch(tokenizer)
    # LoRA keeps the ranks within the shared machine's memory; the
    # reference is the base with the adapters disabled (a LoRA critic does not load today: peft refuses a
    # causal-LM adapter on the bare backbone; the critic's loop is the policy's, tested in test_data_parallel_gloo)
    base = S.base_config(
        tmp_path,
        model={"name_or_path": "smollm2-135m-instruct",
               "lora": {"rank": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}},
        rollout={"n": 2},
        algorithm={"advantage": "grpo", "kl_coef": 0.05, "kl_in": "loss"},
        trainer={"ppo_epochs": 2, "mini_batch_size": 4, "micro_batch_size": 1, "lr": 1e-3},
        ray={"num_cpus": 2, "torch_threads": 1, "colocate": True},
    )
    one = _run_group(load_config(data=base, overrides=["trainer.data_parallel=1"]), str(smollm2_path), batch)
    two = _run_group(load_config(data=base, overrides=["trainer.data_parallel=2"]), str(smollm2_path), batch)

    assert two["pids"]["policy"] != two["pids"]["policy/1"]  # two processes
    for key in ("ref", "old"):  # split across ranks by tokens, reassembled in batch order
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6)
    for k in ("loss/policy", "loss/total", "actor/grad_norm", "actor/entropy", "actor/clip_frac"):
        assert two["policy"][k] == pytest.approx(one["policy"][k], rel=1e-5, abs=1e-7), k
    # The KL terms are differences of nearly equal logprobs (policy vs reference, ~5 apart from 0 and ~0.1
    # from each other), so the order noise of the updates reaches them ~50x amplified relative to the
    # logprobs. Measured (1 vs 2 ranks): rel 5.3e-6 with the autograd LM head, 1.45e-5 with the fused
    # one (8c2e72d), whose logprobs and gradients are as close to float64 as the autograd head's
    # (3.8e-8 vs 4.9e-8 relative on logprobs, 2.8e-7 on gradients, both). The data-parallel bugs this test
    # is for still show at rel 1e-5: a gradient not reduced leaves the ranks' weights different (checked
    # bit-exactly below), a gradient scaled wrongly changes actor/grad_norm (checked above).
    for k in ("loss/kl", "actor/kl", "actor/approx_kl"):
        assert two["policy"][k] == pytest.approx(one["policy"][k], rel=1e-4, abs=1e-7), k
    assert one["policy"]["actor/grad_norm"] > 0
    # both ranks hold the same weights, and they equal the one-rank result; the adapters did move
    names = list(one["weights"][0])
    lora_b = [n for n in names if "lora_B" in n]
    assert lora_b and any(float(one["weights"][0][n].abs().max()) > 1e-4 for n in lora_b)
    for name in names:
        torch.testing.assert_close(two["weights"][0][name], two["weights"][1][name], rtol=0, atol=0)
        # Stated tolerance. Gradients summed over two ranks differ from one rank's sum only in float
        # summation order (losses and grad norms agree to rel 1e-5 above), but Adam divides each update by
        # sqrt(v): for the few elements whose gradient is near zero that order noise is amplified. Measured
        # over 4 Adam steps at lr 1e-3: 2 of 4608 elements of one adapter differ by up to 1.8e-5 (single runs
        # saw 1.2e-6 too). So: every element within a tenth of one lr step (1e-4), and each tensor as a whole
        # within 1e-3 relative (L2) of the one-rank result.
        a, b = two["weights"][0][name].double(), one["weights"][0][name].double()
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
        assert float((a - b).norm()) <= 1e-3 * max(float(b.norm()), 1e-12), name


class PidEnvPlugin:
    """An environment and a reward registered only in Python: the env records the process it ran in."""

    from toolrl import hookimpl

    @hookimpl
    def register_environments(self, register):
        class PidEnv:
            def __init__(self, ctx, **args):
                self.pid = None

            async def reset(self, task):
                self.pid = os.getpid()

            async def step(self, call):
                from toolrl.types import ToolResult

                return ToolResult("ok")

            def state(self):
                return {"pid": self.pid}

            async def close(self):
                pass

        register("pid-env", PidEnv)

    @hookimpl
    def register_rewards(self, register):
        def ran_in_a_worker(trajectories, *, env_states, **kwargs):
            return [1.0 if (s or {}).get("pid") not in (None, os.getpid()) else 0.0 for s in env_states]

        register("ran_in_a_worker", ran_in_a_worker)


def test_data_parallel_run_with_python_plugins_checkpoints_an_hf_folder(tmp_path, smollm2_path, shared_ray):
    """trainer.data_parallel=2 end to end; the tasks use an environment registered only through plugins=[...]."""
    import json

    from transformers import AutoModelForCausalLM

    import toolrl

    tasks = tmp_path / "pid.jsonl"
    with tasks.open("w") as fh:
        for i in range(4):
            fh.write(json.dumps({"id": f"p{i}", "env": "pid-env",
                                 "messages": [{"role": "user", "content": f"Say {i}."}]}) + "\n")
    cfg = S.base_config(
        tmp_path,
        model={"name_or_path": "smollm2-135m-instruct",
               "lora": {"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "save_merged": True}},
        data={"train_file": str(tasks), "prompts_per_step": 2},
        rewards=[{"name": "ran_in_a_worker", "weight": 1.0}],
        trainer={"total_steps": 1, "data_parallel": 2},
        ray={"num_cpus": 2, "torch_threads": 1},
    )
    result = toolrl.train(cfg, plugins=[PidEnvPlugin()])
    row = S.read_metrics(result.run_dir)[0]
    assert row["reward/mean"] == 1.0  # every episode found the environment, in a worker process
    assert row["rollout/weight_version"] == 0 and row["rollout/weight_lag"] == 0
    assert result.placement["policy"] != result.placement["policy/1"]
    state = json.loads((result.last_checkpoint / "trainer_state.json").read_text())
    assert state["weight_version"] == 1
    model = AutoModelForCausalLM.from_pretrained(result.last_checkpoint / "merged")  # plain HF folder from rank 0
    assert model.config.vocab_size == 49152
