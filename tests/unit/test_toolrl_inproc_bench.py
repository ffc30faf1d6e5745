"""benchmarks/gpu/toolrl_inproc.py on the CPU: the GPU benchmarks' in-process step driver with the `hf` backend
and a tiny model, its per-step figures and the engine thread's stack samples (`sample_engine`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu"


@pytest.fixture()
def inproc(load_benchmark, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # it imports its neighbours (stack_sampler) by name
    with load_benchmark("gpu/toolrl_inproc.py") as mod:
        yield mod
    sys.modules.pop("stack_sampler", None)


def test_three_cpu_steps_with_the_engine_thread_sampled(inproc, tiny_model_dir, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(f'{{"id": "t{i}", "messages": [{{"role": "user", "content": "Count to {i}."}}]}}\n' for i in range(16)))
    cfg = inproc.toolrl_config(str(tiny_model_dir), str(tasks), 8, group=4, new_tokens=8, backend="hf",
                               device="cpu", dtype="float32", token_budget=None, gradient_checkpointing=False,
                               out=str(tmp_path / "run"))
    before = torch.get_num_threads()
    try:
        res = inproc.run_toolrl(cfg, 3, log=lambda *a, **k: None, sample_engine=True)
        all_cores = torch.get_num_threads()
        # ray.torch_threads reaches the in-process trainer (the GPU benchmarks' torch_threads keyword)
        one = inproc.run_toolrl({**inproc.toolrl_config(str(tiny_model_dir), str(tasks), 8, group=4, new_tokens=8,
                                                        backend="hf", device="cpu", dtype="float32", token_budget=None,
                                                        gradient_checkpointing=False, out=str(tmp_path / "run1"),
                                                        torch_threads=1)}, 1, log=lambda *a, **k: None)
    finally:
        torch.set_num_threads(before)
    assert res["torch_threads"] == all_cores == (os.cpu_count() or 1) and one["torch_threads"] == 1
    assert len(res["step_seconds"]) == 3 and res["completions"] == 8 and res["steps_timed"] == "2..3"
    # the collector's pauses per step (resources/driver/gc_seconds): real times, never more than the step took
    assert len(res["gc_seconds"]) == 3 and all(0.0 <= g <= s for g, s in zip(res["gc_seconds"], res["step_seconds"]))
    assert "resources/driver/gc_seconds" in res["metrics_last"] and res["phases_median"]["resources/driver/gc_seconds"] >= 0
    st = res["engine_stacks"]
    assert st["thread"] == "toolrl-hf-engine" and st["samples"] > 0
    # the engine thread's own loop is on every sampled stack
    assert any(k.startswith("rollout/hf_engine.py:") and share == pytest.approx(1.0) for k, share in st["inclusive"])


def test_a_grpo_vs_trl_system_with_kv_cache_fit_gives_the_engine_a_batch_sized_cache(inproc, load_benchmark,
                                                                                      tmp_path):
    """`grpo_vs_trl.py --systems "toolrl_async_graphs+kv_cache=fit"` (next sitting's run): the option reaches
    the backend's arguments, the config validates, and vLLM would get kv_cache_memory_bytes for 256 x 1024 tokens."""
    from transformers import Qwen2Config

    from toolrl.config import Config
    from toolrl.rollout.base import BackendSettings
    from toolrl.rollout.vllm_backend import llm_kwargs

    import shapes  # the benchmarks' model shapes (on the path through the inproc fixture)

    Qwen2Config(**shapes.SHAPES["qwen2-0.5b"]).save_pretrained(tmp_path)
    with load_benchmark("gpu/grpo_vs_trl.py") as g:
        name, opts = g.system_opts("toolrl_async_graphs+engine_stream_priority=high+kv_cache=fit")
        g.check_system("toolrl_async_graphs+kv_cache=fit")
        opts = {**g.TOOLRL_SYSTEMS[name], **opts}
    cfg = inproc.toolrl_config(str(tmp_path), str(tmp_path / "tasks.jsonl"), 256, **opts)
    args = Config.model_validate(cfg).rollout.backend_args
    assert args["kv_cache"] == "fit" and args["engine_stream_priority"] == "high"
    kw = llm_kwargs(BackendSettings(str(tmp_path), dtype="bfloat16", max_batch_size=256, extra=args))
    assert kw["kv_cache_memory_bytes"] == int(-(-256 * 1024 * 12288 * 1.1 // 1))
