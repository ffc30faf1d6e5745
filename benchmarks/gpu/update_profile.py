"""Where the policy update's time goes: toolrl's `update_policy` alone on a synthetic GRPO batch, per setting.

    python3 benchmarks/gpu/update_profile.py --tokenizer /root/qwen_tok --out $OUT/update_profile.json

The batch has the shape of `grpo_vs_trl.py` at 256 completions (random-init Qwen2-0.5B, bf16; 32 prompts
of 30-60 tokens x 8 samples x 256 response tokens, random ids and advantages). Each variant loads the
policy as the trainer does (`toolrl.trainer.modeling.load_policy`, fused AdamW), runs one warm-up update
and times `--reps` more (CUDA synchronized); the table shows the median and the peak memory. The first
variant is also run under torch.profiler: its CUDA kernels are grouped (GEMMs, attention, softmax/log,
elementwise, optimizer...) and the top kernels listed, with the CUDA busy time against the wall time
(the rest is the GPU waiting for the CPU).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

VARIANTS: dict[str, dict] = {  # trainer/model settings changed from the benchmark's (grpo_vs_trl toolrl)
    "base (ckpt, budget 32768, chunk 4096)": {},
    "budget 65536": {"trainer.token_budget": 65536},
    "budget 16384": {"trainer.token_budget": 16384},
    "logits_chunk 16384": {"trainer.logits_chunk": 16384},
    "logits_chunk 1024": {"trainer.logits_chunk": 1024},
    "no checkpointing (shared prompt)": {"model.gradient_checkpointing": False},
    "no checkpointing, no shared prompt": {"model.gradient_checkpointing": False, "trainer.share_prompt": False},
    "no checkpointing, budget 65536": {"model.gradient_checkpointing": False, "trainer.token_budget": 65536},
    # decoder layers through torch.compile (Inductor): norms, rotary, SwiGLU and casts fused
    "compile_layers": {"trainer.compile_layers": True},
    "compile_layers, budget 65536": {"trainer.compile_layers": True, "trainer.token_budget": 65536},
    "compile_layers, no checkpointing": {"trainer.compile_layers": True, "model.gradient_checkpointing": False},
    # one micro-batch for the whole batch (256 x 316 padded tokens): a third of the kernel launches
    "compile_layers, budget 98304": {"trainer.compile_layers": True, "trainer.token_budget": 98304},
    # the compiled layers as CUDA graphs (torch.compile mode "reduce-overhead"): a replay per layer call instead
    # of its kernel launches; without checkpointing (its recomputation would replay graphs inside backward)
    "cudagraph layers, no checkpointing": {"trainer.compile_layers": True, "model.gradient_checkpointing": False,
                                           "trainer.compile_mode": "reduce-overhead"},
    "cudagraph layers": {"trainer.compile_layers": True, "trainer.compile_mode": "reduce-overhead"},
}


def config(model_dir: str, overrides: dict):
    from toolrl.config import Config

    d = {"model": {"name_or_path": model_dir, "dtype": "bfloat16", "device": "cuda", "gradient_checkpointing": True},
         "rollout": {"n": 8, "max_new_tokens": 256, "temperature": 1.0},
         "algorithm": {"advantage": "grpo", "kl_coef": 0.0},
         "data": {"prompts_per_step": 32},
         "trainer": {"lr": 1e-6, "micro_batch_size": 32, "token_budget": 32768, "seed": 0}}
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        d[section][key] = value
    return Config.model_validate(d)


def synthetic_batch(prompts: int = 32, group: int = 8, response: int = 256, vocab: int = 151_000, seed: int = 0):
    import torch

    from toolrl.trainer.batch import build_batch
    from toolrl.types import Trajectory

    g = torch.Generator().manual_seed(seed)
    trajs, gids = [], []
    for k in range(prompts):
        prompt = torch.randint(100, vocab, (int(torch.randint(30, 61, (1,), generator=g)),), generator=g).tolist()
        for s in range(group):
            resp = torch.randint(100, vocab, (response,), generator=g).tolist()
            trajs.append(Trajectory(task_id=f"t{k}", sample_index=s, prompt_ids=tuple(prompt), response_ids=tuple(resp),
                                    loss_mask=(1,) * response, logprobs=(-11.0,) * response,
                                    messages=({"role": "user", "content": "q"},), num_prompt_messages=1))
            gids.append(f"t{k}")
    batch = build_batch(trajs, gids, [True] * len(trajs), 0)
    batch.extras["advantages"] = torch.randn(len(trajs), generator=g)[:, None].expand_as(batch.response_mask).clone()
    return batch


def run_variant(model_dir: str, batch, overrides: dict, reps: int, profile: bool = False, probe: bool = False) -> dict:
    import torch

    from interp_probe import InterpreterProbe
    from toolrl.trainer.modeling import load_policy
    from toolrl.trainer.optim import make_optimizer
    from toolrl.trainer.optimize import update_policy

    cfg = config(model_dir, overrides)
    device = torch.device("cuda")
    model = load_policy(cfg, model_dir, device)
    opt = make_optimizer(model.parameters(), cfg.trainer.lr, cfg.trainer.weight_decay)
    gpu_batch = batch.to(device)

    def update(seed: int) -> dict:
        return update_policy(model, opt, gpu_batch, cfg, 0.0, seed=seed)

    t = time.perf_counter()
    update(0)  # warm-up (allocator, kernels, compilation)
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t
    times, peaks = [], []
    for r in range(reps):
        t = time.perf_counter()
        stats = update(r + 1)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        peaks.append(stats["perf/peak_memory_gib"])  # the update's own peak (it resets the counter when it ends)
    probed = {}
    if probe:  # a thread shaped like the engine's beside the update: its steps alone, then during updates
        with InterpreterProbe() as p:
            time.sleep(1.0)
        probed["alone"] = p.summary()
        with_probe = []
        with InterpreterProbe() as p:
            for r in range(reps):
                t = time.perf_counter()
                update(100 + r)
                torch.cuda.synchronize()
                with_probe.append(time.perf_counter() - t)
        probed["during_update"] = p.summary()
        probed["update_median_s"] = statistics.median(with_probe)
    from torch._dynamo.utils import counters  # compile_layers: graphs made and graph breaks, if any

    dynamo = {"unique_graphs": int(counters["stats"].get("unique_graphs", 0)),
              "graph_breaks": {str(k): int(v) for k, v in counters["graph_break"].items()}}
    counters.clear()
    out = {"overrides": overrides, "dynamo": dynamo, "warmup_s": warmup_s, "seconds": times, "median_s": statistics.median(times),
           "peak_allocated_gib": max(peaks), **({"probe": probed} if probed else {})}
    if profile:
        out["profile"] = profile_update(model, opt, gpu_batch, cfg)
    del model, opt, gpu_batch
    torch.cuda.empty_cache()
    return out


GROUPS = (  # kernel name fragments -> group (first match wins)
    ("optimizer", ("adam", "multi_tensor")),
    ("gemm", ("gemm", "cutlass", "sm90_xmma", "nvjet", "cublas", "matmul")),
    ("attention", ("flash", "fmha", "attention", "efficient")),
    ("softmax/logsumexp/log", ("softmax", "logsumexp", "log_", "_log")),
    ("reduce", ("reduce",)),
    ("copy/cast", ("copy", "cast", "convert", "memcpy", "memset", "fill")),
    ("index/gather/scatter", ("index", "gather", "scatter", "nonzero", "masked")),
    ("elementwise", ("elementwise", "vectorized", "unrolled")),
)


def profile_update(model, opt, batch, cfg) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from toolrl.trainer.optimize import update_policy

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        update_policy(model, opt, batch, cfg, 0.0, seed=99)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t
    kernels: dict[str, float] = {}
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            kernels[ev.name] = kernels.get(ev.name, 0.0) + ev.device_time_total / 1e6  # seconds
    groups: dict[str, float] = {}
    for name, s in kernels.items():
        low = name.lower()
        group = next((g for g, keys in GROUPS if any(k in low for k in keys)), "other")
        groups[group] = groups.get(group, 0.0) + s
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:25]
    return {"wall_s_profiled": wall, "cuda_busy_s": sum(kernels.values()), "groups_s": groups,
            "kernel_launches": sum(1 for ev in prof.events() if ev.device_type == torch.autograd.DeviceType.CUDA),
            "top_kernels": [[n[:120], s] for n, s in top]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default="/root/qwen_tok")
    ap.add_argument("--work", default="/tmp/update-profile")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--variants", default="", help="variant names separated by ';' (default: all)")
    ap.add_argument("--profile", default="", help="variant names to profile, separated by ';' (default: the first)")
    ap.add_argument("--probe", action="store_true", help="also time each variant beside a thread shaped like the "
                    "colocated engine's (interp_probe.py): how often it gets the interpreter lock")
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="sys.setswitchinterval for the run, in seconds (Python's default: 0.005)")
    ap.add_argument("--out", default="update_profile.json")
    a = ap.parse_args()
    import torch

    import shapes

    shapes.gpu_env()
    if a.switch_interval is not None:
        sys.setswitchinterval(a.switch_interval)
    model_dir = str(shapes.build_model("qwen2-0.5b", a.tokenizer, Path(a.work) / "qwen2-0.5b"))
    batch = synthetic_batch()
    wanted = [v.strip() for v in a.variants.split(";") if v.strip()]
    unknown = [v for v in wanted if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    names = [n for n in VARIANTS if not wanted or n in wanted]
    profiled = [v.strip() for v in a.profile.split(";") if v.strip()] or names[:1]
    results = {"device": torch.cuda.get_device_name(0), "switch_interval_s": sys.getswitchinterval(), "batch": {"samples": len(batch), "prompt_width":
               batch.prompt_width, "response_width": batch.response_width}, "variants": {}}
    for name in names:
        print(f"== {name}", flush=True)
        try:
            res = run_variant(model_dir, batch, VARIANTS[name], a.reps, profile=name in profiled, probe=a.probe)
        except Exception as e:  # one variant failing (e.g. CUDA graphs) must not lose the others
            import traceback

            print(f"   FAILED: {type(e).__name__}: {str(e)[:2000]}\n{traceback.format_exc()[-3000:]}", flush=True)
            results["variants"][name] = {"error": f"{type(e).__name__}: {str(e)[:2000]}"}
            torch.cuda.empty_cache()
            continue
        results["variants"][name] = res
        if res["dynamo"]["unique_graphs"] or res["dynamo"]["graph_breaks"]:
            print(f"   dynamo: {res['dynamo']}", flush=True)
        print(f"   warm-up {res['warmup_s']:.1f}s, median {res['median_s']:.3f}s  {[round(t, 3) for t in res['seconds']]}  "
              f"peak {res['peak_allocated_gib']:.1f} GiB", flush=True)
        if "probe" in res:
            pa, pd = res["probe"]["alone"], res["probe"]["during_update"]
            print(f"   probe thread: alone {pa['steps_per_s']:.0f} steps/s (median {pa['median_ms']:.2f} ms); during "
                  f"updates {pd['steps_per_s']:.0f} steps/s (median {pd['median_ms']:.2f} ms, p90 {pd['p90_ms']:.2f}, "
                  f"max {pd['max_ms']:.1f}); update beside it {res['probe']['update_median_s']:.3f}s", flush=True)
        if "profile" in res:
            p = res["profile"]
            print(f"   profiled: wall {p['wall_s_profiled']:.3f}s, CUDA busy {p['cuda_busy_s']:.3f}s, "
                  f"{p['kernel_launches']} kernels", flush=True)
            for g, s in sorted(p["groups_s"].items(), key=lambda kv: -kv[1]):
                print(f"     {g:<24}{s:8.3f}s", flush=True)
            for n, s in p["top_kernels"]:
                print(f"     {s:8.4f}s  {n}", flush=True)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(results, indent=2))
    print(f"\n{'variant':<40}{'median s':>10}{'peak GiB':>10}{'probe steps/s':>15}{'update w/ probe s':>19}")
    for name, r in results["variants"].items():
        if "error" in r:
            print(f"{name:<40}  failed: {r['error'][:80]}")
            continue
        pr = r.get("probe")
        extra = f"{pr['during_update']['steps_per_s']:>15.0f}{pr['update_median_s']:>19.3f}" if pr else ""
        print(f"{name:<40}{r['median_s']:>10.3f}{r['peak_allocated_gib']:>10.1f}{extra}")


if __name__ == "__main__":
    main()
