"""GRPO step throughput and peak GPU memory: toolrl vs TRL's GRPOTrainer, same shapes, one process tree.

    python3 benchmarks/gpu/grpo_vs_trl.py --tokenizer .gpu_snapshot/qwen_tok --out $OUT/grpo_vs_trl.json

Shape (issue 13): random-init Qwen2-0.5B (bfloat16 weights), group 8, 256 new tokens forced (toolrl:
`rollout.ignore_eos` + `min_tokens`; TRL: vLLM `ignore_eos`/`min_tokens`, HF `min_new_tokens`), a length
reward (characters / 1000), no KL, lr 1e-6, gradient checkpointing on (TRL's default), 64 and 256
completions per optimizer step. Each (system, size) runs in its own child process, one after another
(the GPU is never shared): toolrl with its `vllm` backend colocated, synchronous with the engine asleep
during the update (`toolrl`: rollout.sleep_during_update=true, sleep level 2, CUDA cache emptied after the
update), synchronous without sleep (`toolrl_nosleep`) and asynchronous (`toolrl_async`:
trainer.async_rollouts.max_staleness=1, the next step's rollouts generated while this one trains), and
the same with vLLM's engine core in a process of its own (`toolrl_proc`, `toolrl_async_proc`:
rollout.backend_args.engine_process=true, weights through CUDA IPC); TRL
with colocated vLLM (`trl_vllm`; `trl_vllm_sleep` with TRL's vllm_enable_sleep_mode) and TRL with HF
generation (`trl_hf`). vLLM gets gpu_memory_utilization 0.3 (TRL's
default), max_num_batched_tokens 4096 (TRL's colocate setting) in both. Systems ending in `_nockpt` run
with gradient checkpointing off and are compared with `trl_vllm_nockpt` (also off); the others with
`trl_vllm`, or `trl_vllm_compile` (TRL with `torch_compile=True`) where that run was faster. Step time =
median of steps 2..N (step 1 warms up; asynchronous toolrl runs: 3..N-1, `toolrl_inproc.steady_steps`: step 2
trains a batch made beside the long step 1 and the last step has no next rollout to overlap, both short; it was
2..N until 2026-12-03 session 8 and 2..N-1 until 2026-12-05 session 16); samples/s =
completions / that median. `toolrl_async_jobs` (two steps' batches per rollout job) is timed by the mean over
whole jobs from step 5 (its steps alternate between waiting for a job and not); run it with `--steps 10` or more. Peak memory = NVML's device-wide memory in use, sampled every 50 ms (the whole process: trainer, vLLM, caches).

A system may change options: `name+key=value+...` (values read as JSON), e.g.
`toolrl_async_graphs+engine_stream_priority=high+update_sm_fraction=0.5`. Besides toolrl_inproc.toolrl_config's
keywords: `switch_interval` (the interpreter's), `cuda_connections` (CUDA_DEVICE_MAX_CONNECTIONS, CUDA's hardware
work queues, default 8), `profile_step` (that step under torch.profiler; its summary goes in the result),
`sample_engine` (1: the vLLM engine thread's Python stack sampled over steps 2..N, `stack_sampler`), and
`model_runner` (`v1` or `v2`: vLLM's model runner, through VLLM_USE_V2_MODEL_RUNNER; vLLM 0.25 picks V2 for
Qwen2). TRL systems take only the process-wide keywords (`switch_interval`, `cuda_connections`, `model_runner`).
Every system name is checked before the model is built.

`--timeout` bounds one run; `--budget` bounds the whole script (runs are cut to what is left, and skipped with an
error entry when under a minute is left), so that on a device call with a time limit the script ends and writes
its result file first. A run cut at its timeout gets up to 30 s more to print its threads' stacks and stop, so set
the budget at least a minute under the call's limit.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()  # --budget counts from here (model building included)
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def log(*a, **k):
    k["flush"] = True
    print(*a, **k)


# ------------------------------------------------------------------------------------------ TRL
def run_trl(model_dir: str, completions: int, steps: int, use_vllm: bool, group: int = 8, new_tokens: int = 256,
            micro: int = 32, sleep: bool = False, gradient_checkpointing: bool = True,
            torch_compile: bool = False, gen_steps: int = 1) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    import shapes
    from toolrl_inproc import NvmlPeak

    nvml = NvmlPeak()
    prompts = shapes.questions(max(completions // group * (steps + 1), 64))
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": q}]} for q in prompts])

    def length_reward(completions, **kwargs):
        return [len(c[-1]["content"] if isinstance(c, list) else c) / 1000.0 for c in completions]

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)
            log(f"  step {len(times)}: {times[-1]:.2f}s peak(nvml) {nvml.gib():.1f} GiB")

    ga = completions // micro
    kwargs = dict(output_dir="/tmp/trl-bench", per_device_train_batch_size=micro, gradient_accumulation_steps=ga,
                  num_generations=group, max_completion_length=new_tokens, max_steps=steps, learning_rate=1e-6,
                  beta=0.0, temperature=1.0, logging_steps=1, save_strategy="no", report_to="none", bf16=True,
                  gradient_checkpointing=gradient_checkpointing, seed=0, dataloader_num_workers=0,
                  torch_compile=torch_compile)
    if gen_steps > 1:  # one generation for gen_steps optimizer steps (TRL's steps_per_generation, in micro-steps)
        kwargs["steps_per_generation"] = ga * gen_steps
    if use_vllm:
        kwargs.update(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3,
                      vllm_max_model_length=1024, vllm_enable_sleep_mode=sleep,
                      generation_kwargs={"ignore_eos": True, "min_tokens": new_tokens})
    else:
        kwargs.update(use_vllm=False, generation_kwargs={"min_new_tokens": new_tokens})
    args = GRPOConfig(**kwargs)
    t0 = time.perf_counter()
    trainer = GRPOTrainer(model=model_dir, reward_funcs=length_reward, args=args, train_dataset=ds,
                          callbacks=[Timer()])
    start_s = time.perf_counter() - t0
    trainer.train()
    if gen_steps > 1:  # the steps of a generation differ: the mean over whole generations after the first
        whole = (len(times) - gen_steps) // gen_steps * gen_steps
        timed = times[gen_steps:gen_steps + whole] or times
        step_s, statistic = statistics.fmean(timed), "mean"
    else:
        timed = times[1:] or times
        step_s, statistic = statistics.median(timed), "median"
    med = statistics.median(timed)
    return {"completions": completions, "start_seconds": start_s, "step_seconds": times, "median_step_s": med,
            "mean_step_s": statistics.fmean(timed), "step_statistic": statistic, "steps_per_generation": gen_steps,
            "samples_per_s": completions / step_s, "nvml_peak_gib": nvml.gib(),
            "torch_peak_reserved_gib": torch.cuda.max_memory_reserved() / (1 << 30)}


# ------------------------------------------------------------------------------------------ toolrl
def run_tool(model_dir: str, completions: int, steps: int, work: Path, profile_step: int = 0,
             sample_engine: bool = False, **opts) -> dict:
    import shapes
    import toolrl_inproc as T

    tasks = shapes.write_tasks(work / "tasks.jsonl", max(completions // 8 * (steps + 1), 64))
    cfg = T.toolrl_config(model_dir, str(tasks), completions, out=str(work / f"run-{completions}"), **opts)
    return T.run_toolrl(cfg, steps, log=log, profile_step=profile_step, sample_engine=bool(sample_engine))


# ------------------------------------------------------------------------------------------ driver
TOOLRL_SYSTEMS = {
    "toolrl": {"sleep": True, "sleep_level": 2},      # synchronous; the engine sleeps during the update
    "toolrl_nosleep": {"sleep": False},                # synchronous; the engine keeps its memory
    "toolrl_async": {"sleep": False, "staleness": 1},  # asynchronous, max_staleness 1 (no sleep possible)
    # vLLM's engine core in a process of its own (rollout.backend_args.engine_process): its scheduler and the
    # trainer's update no longer share one interpreter lock
    "toolrl_proc": {"sleep": True, "sleep_level": 2, "engine_process": True},
    "toolrl_async_proc": {"sleep": False, "staleness": 1, "engine_process": True},
    # the in-process engine with a shorter interpreter-lock switch interval (5 ms default -> 0.5 ms)
    "toolrl_async_si": {"sleep": False, "staleness": 1, "switch_interval": 0.0005},
    # gradient checkpointing off (pair with trl_vllm_nockpt: the same setting on both sides)
    "toolrl_nockpt": {"sleep": True, "sleep_level": 2, "gradient_checkpointing": False},
    "toolrl_async_nockpt": {"sleep": False, "staleness": 1, "gradient_checkpointing": False},
    "toolrl_async_proc_nockpt": {"sleep": False, "staleness": 1, "engine_process": True,
                                 "gradient_checkpointing": False},
    # the in-process engine thread's CUDA stream at high priority: decode kernels go ahead of the update's
    "toolrl_async_prio": {"sleep": False, "staleness": 1, "engine_stream_priority": "high"},
    # the decoder layers through torch.compile in the update (trainer.compile_layers)
    "toolrl_compile": {"sleep": True, "sleep_level": 2, "compile_layers": True},
    "toolrl_async_compile": {"sleep": False, "staleness": 1, "compile_layers": True},
    # and the update on half of the SMs (a green context), the rest left to the overlapped rollout
    # (trainer.async_rollouts.update_sm_fraction)
    "toolrl_async_share": {"sleep": False, "staleness": 1, "compile_layers": True, "update_sm_fraction": 0.5},
    # the compiled layers replayed as CUDA graphs (trainer.compile_mode=reduce-overhead), no checkpointing;
    # micro-batches of 32 samples (no token budget): with widths rounded to 64, every micro-batch has one shape,
    # so the graphs are recorded once (each new shape is a new recording, seconds each)
    "toolrl_async_graphs": {"sleep": False, "staleness": 1, "compile_layers": True, "compile_mode": "reduce-overhead",
                            "gradient_checkpointing": False, "token_budget": None},
    # the same, synchronous (the engine keeps its memory): the graphs without an overlapped rollout
    "toolrl_graphs": {"sleep": False, "compile_layers": True, "compile_mode": "reduce-overhead",
                      "gradient_checkpointing": False, "token_budget": None},
    # the engine core in a process of its own beside the graph-replayed update: no interpreter lock shared at all
    "toolrl_async_proc_graphs": {"sleep": False, "staleness": 1, "engine_process": True, "compile_layers": True,
                                 "compile_mode": "reduce-overhead", "gradient_checkpointing": False,
                                 "token_budget": None},
    # two steps' batches per rollout job (trainer.async_rollouts.steps_per_rollout=2: one engine batch of 512),
    # max_staleness 3 so that a whole job overlaps two updates (2m-1); timed by the mean over whole jobs
    "toolrl_async_jobs": {"sleep": False, "staleness": 3, "steps_per_rollout": 2, "compile_layers": True,
                          "compile_mode": "reduce-overhead", "gradient_checkpointing": False, "token_budget": None},
    # synchronous, the engine asleep during the update (its memory given to the trainer)
    "toolrl_graphs_sleep": {"sleep": True, "sleep_level": 2, "compile_layers": True, "compile_mode": "reduce-overhead",
                            "gradient_checkpointing": False, "token_budget": None},
}


# trl_vllm_gen2: one generation for two optimizer steps (TRL's steps_per_generation), beside toolrl_async_jobs
TRL_SYSTEMS = ("trl_vllm", "trl_vllm_sleep", "trl_vllm_nockpt", "trl_vllm_compile", "trl_hf", "trl_hf_nockpt",
               "trl_vllm_gen2")
# options applied to the run's process before anything is built, for toolrl and TRL alike
PROCESS_KEYS = ("switch_interval", "cuda_connections", "model_runner")
MODEL_RUNNERS = {"v1": "0", "v2": "1"}  # -> VLLM_USE_V2_MODEL_RUNNER


def system_opts(system: str) -> tuple[str, dict]:
    """`name+key=value+...`: a named system with some of its options changed (values parsed as JSON, else
    strings), e.g. `toolrl_async+token_budget=65536+logits_chunk=16384`."""
    name, *pairs = system.split("+")
    opts = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            opts[key] = json.loads(value)
        except json.JSONDecodeError:
            opts[key] = value
    return name, opts


def check_system(system: str) -> None:
    """Refuse, before anything is built, a system that names no known system or changes what its kind cannot."""
    name, opts = system_opts(system)
    if name not in TOOLRL_SYSTEMS and name not in TRL_SYSTEMS:
        raise SystemExit(f"grpo_vs_trl: unknown system {name!r} in {system!r}; known: "
                         + ", ".join([*TOOLRL_SYSTEMS, *TRL_SYSTEMS]))
    if name in TRL_SYSTEMS and set(opts) - set(PROCESS_KEYS):
        raise SystemExit(f"grpo_vs_trl: {system!r}: TRL systems take only {', '.join(PROCESS_KEYS)}, "
                         f"not {', '.join(sorted(set(opts) - set(PROCESS_KEYS)))}")
    runner = opts.get("model_runner")
    if runner is not None and runner not in MODEL_RUNNERS:
        raise SystemExit(f"grpo_vs_trl: {system!r}: model_runner must be one of {', '.join(MODEL_RUNNERS)}, "
                         f"not {runner!r}")


def apply_process_opts(opts: dict, environ: dict | None = None) -> dict:
    """Apply (and remove from `opts`) the process-wide keywords: the interpreter's switch interval, CUDA's hardware
    work queues and vLLM's model runner. Call before CUDA or vLLM start. Returns what is left."""
    environ = os.environ if environ is None else environ
    opts = dict(opts)
    if "switch_interval" in opts:
        sys.setswitchinterval(float(opts.pop("switch_interval")))
    if "cuda_connections" in opts:  # hardware work queues (CUDA's default 8): streams that share one queue
        # can wait on each other's kernels; read when CUDA starts, which is later in this process
        environ["CUDA_DEVICE_MAX_CONNECTIONS"] = str(int(opts.pop("cuda_connections")))
    if "model_runner" in opts:  # read by vLLM when the engine's config is built
        environ["VLLM_USE_V2_MODEL_RUNNER"] = MODEL_RUNNERS[opts.pop("model_runner")]
    return opts


def run_order(systems: str, repeat: int = 1) -> list[str]:
    """The runs, in order: the comma-separated systems, the whole list `repeat` times (a,b,a,b: interleaved, so
    that a slow spell of the machine does not fall on one system's runs only)."""
    names = [s.strip() for s in systems.split(",") if s.strip()]
    if not names or repeat < 1:
        raise SystemExit(f"grpo_vs_trl: nothing to run (--systems {systems!r}, --repeat {repeat})")
    for name in names:
        check_system(name)
    return names * repeat


def run_timeout(timeout: int, budget: float | None, elapsed: float, floor: int = 60) -> int | None:
    """The next run's timeout under a total --budget (seconds for the whole script, e.g. a little under the device
    call's limit, so the script ends and writes its file before the call is cut off): the run's own --timeout, or
    what is left of the budget when that is less; None when less than `floor` seconds are left (skip the run)."""
    if budget is None:
        return timeout
    left = int(budget - elapsed)
    return None if left < floor else min(timeout, left)


def worker(a: argparse.Namespace) -> None:
    import shapes

    shapes.gpu_env()
    work = Path(a.work)
    check_system(a.system)
    name, variant = system_opts(a.system)
    if name in TOOLRL_SYSTEMS:
        opts = apply_process_opts({**TOOLRL_SYSTEMS[name], **variant, **json.loads(a.opts or "{}")})
        res = run_tool(a.model, a.completions, a.steps, work, **opts)
    else:
        apply_process_opts(variant)
        res = run_trl(a.model, a.completions, a.steps, use_vllm=name.startswith("trl_vllm"),
                      sleep=name == "trl_vllm_sleep", gradient_checkpointing=not name.endswith("_nockpt"),
                      torch_compile=name.endswith("_compile"), gen_steps=2 if name.endswith("_gen2") else 1)
    res["vllm_model_runner"] = {"0": "v1", "1": "v2"}.get(os.environ.get("VLLM_USE_V2_MODEL_RUNNER", ""),
                                                         "vLLM's default")
    print("RESULT " + json.dumps(res), flush=True)


def _stacks(err: str, limit: int = 8000) -> str:
    """The faulthandler dump in a child's stderr (from its first "Thread 0x" line; each thread's innermost frame
    first, so the head is kept), else the tail."""
    start = err.find("Thread 0x")
    return err[start:start + limit] if start >= 0 else err[-limit:]


def child(system: str, model: str, completions: int, steps: int, work: str, timeout: int, opts: str = "") -> dict:
    cmd = [sys.executable, __file__, "--worker", system, "--model", model, "--completions", str(completions),
           "--steps", str(steps), "--work", work, "--opts", opts]
    log(f"== {system} {completions} completions/step ({opts or 'defaults'})")
    t = time.perf_counter()
    # PYTHONFAULTHANDLER: on a timeout the child gets SIGABRT and prints every thread's Python stack first
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        log(f"   TIMEOUT after {timeout}s\n" + out[-3000:] + "\n-- stderr (thread stacks):\n" + _stacks(err))
        return {"error": f"timeout after {timeout}s"}
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    for ln in out.splitlines():
        if ln.startswith("  step"):
            log(ln)
    if proc.returncode != 0 or not lines:
        log(f"   FAILED rc={proc.returncode}\n{out[-2000:]}\n{err[-4000:]}")
        return {"error": f"rc={proc.returncode}", "stderr_tail": err[-4000:]}
    res = json.loads(lines[-1][len("RESULT "):])
    res["wall_seconds"] = time.perf_counter() - t
    if "profile" in res:
        p = res["profile"]
        log(f"   profiled step {p['step']}: wall {p['wall_s']:.2f}s, GPU busy {p['gpu_busy_s']:.2f}s, two streams "
            f"at once {p['gpu_two_streams_s']:.2f}s; streams " + ", ".join(
                f"{k}: {v['busy_s']:.2f}s/{v['kernels']}" for k, v in p["streams"].items())
            + "; thread CPU " + ", ".join(f"{r['name']}: {r['cpu_s']:.2f}s" for r in p["thread_cpu_s"][:6]))
    if "engine_stacks" in res:
        st = res["engine_stacks"]
        log(f"   engine thread, {st['samples']} stack samples; self: " + ", ".join(
            f"{k} {v:.0%}" for k, v in st["self"][:12]) + "\n   inclusive: " + ", ".join(
            f"{k} {v:.0%}" for k, v in st["inclusive"][:25]) + "\n   paths: " + "; ".join(
            f"{k} {v:.0%}" for k, v in st.get("paths", [])[:8]))
    log(f"   {res['samples_per_s']:.1f} samples/s (median step {res['median_step_s']:.2f}s), "
        f"peak {res['nvml_peak_gib']:.1f} GiB (NVML), wall {res['wall_seconds']:.0f}s")
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", default="")
    ap.add_argument("--system", default="")
    ap.add_argument("--model", default="")
    ap.add_argument("--completions", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--work", default="/tmp/grpo-bench")
    ap.add_argument("--opts", default="")
    ap.add_argument("--tokenizer", default=".gpu_snapshot/qwen_tok")
    ap.add_argument("--sizes", default="64,256")
    ap.add_argument("--systems", default="toolrl,toolrl_nosleep,toolrl_async,trl_vllm")
    ap.add_argument("--repeat", type=int, default=1, help="run the --systems list this many times, interleaved")
    ap.add_argument("--timeout", type=int, default=240, help="seconds for one run (a system at one size)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole script: runs are cut to what is left and skipped when under 60 s "
                         "are left (set it a minute or more under the device call's limit)")
    ap.add_argument("--out", default="grpo_vs_trl.json")
    a = ap.parse_args()
    if a.worker:
        a.system = a.worker
        worker(a)
        return
    order = run_order(a.systems, a.repeat)  # checks every system name before the model is built
    import shapes

    shapes.gpu_env()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    model = str(shapes.build_model("qwen2-0.5b", a.tokenizer, work / "qwen2-0.5b"))
    import torch

    results: dict = {"device": torch.cuda.get_device_name(0), "shape": "qwen2-0.5b (random init, bf16)",
                     "group": 8, "new_tokens": 256, "steps": a.steps, "runs": {}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    for size in [int(s) for s in a.sizes.split(",")]:
        for i, system in enumerate(order):
            timeout = run_timeout(a.timeout, a.budget, time.perf_counter() - STARTED)
            if timeout is None:
                log(f"== {system} {size} completions/step: skipped, under 60 s of --budget {a.budget:.0f}s left")
                res = {"error": f"skipped: --budget {a.budget:.0f}s spent"}
            else:
                res = child(system, model, size, a.steps, str(work), timeout)
            key = f"{system}@{size}"
            results["runs"][key if key not in results["runs"] else f"{system}#{i}@{size}"] = res  # a repeat
            Path(a.out).write_text(json.dumps(results, indent=2))
    def kind(key: str) -> str:  # "toolrl_async+x=1#3@256" -> "toolrl_async"
        return system_opts(key.split("@")[0].split("#")[0])[0]

    log(f"\n{'system':<44}{'completions':>12}{'samples/s':>11}{'median step s':>15}{'peak GiB':>10}"
        f"{'vs TRL-vLLM':>13}")
    for key, r in results["runs"].items():
        system, size = key.split("@")
        if "error" in r:
            log(f"{system:<44}{size:>12}  {r['error']}")
            continue
        # same checkpointing on both sides; compiled TRL (`trl_vllm_compile`) counts as TRL-vLLM
        ref_names = {"trl_vllm_nockpt"} if kind(key).endswith("_nockpt") else {"trl_vllm", "trl_vllm_compile"}
        # against TRL's fastest run at this size (TRL is run more than once when its spread matters)
        refs = [x["samples_per_s"] for k, x in results["runs"].items()
                if kind(k) in ref_names and k.endswith(f"@{size}") and "samples_per_s" in x]
        ratio = r["samples_per_s"] / max(refs) if refs else float("nan")
        r["ratio_vs_trl_vllm"] = ratio
        log(f"{system:<44}{size:>12}{r['samples_per_s']:>11.1f}{r['median_step_s']:>15.2f}{r['nvml_peak_gib']:>10.1f}"
            f"{ratio:>13.2f}")
    Path(a.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
