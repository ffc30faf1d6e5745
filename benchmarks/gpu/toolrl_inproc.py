"""toolrl's training step (toolrl.trainer.step.train_step) driven in one process, for the GPU benchmarks.

The step is the real driver code; the roles it talks to are `toolrl.trainer.local`'s in-process adapters
over one `PolicyRank` (model, optimizer, FSDP2 when trainer.fsdp.enabled, the colocated rollout backend)
instead of Ray actors: the GPU machine runs no Ray, and with one colocated rank Ray only adds the pickling
of the batch and trajectories between driver and actor. With `staleness` > 0 the steps take their batches
from `toolrl.trainer.pipeline.AsyncRollouts` (rollouts of the next step generated while this one trains).

`sleep` sets `rollout.sleep_during_update` (the step puts the colocated engine to sleep after the rollout,
the rank empties the CUDA cache after the update, the engine wakes before the weight push); None = auto
(on for colocated vLLM on CUDA, synchronous only).
"""
from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

from toolrl import hookimpl


def length_reward(trajectories, *, completions, **kwargs):
    """Characters of the final answer / 1000: a length reward that varies between samples."""
    return [len(c or "") / 1000.0 for c in completions]


class LengthRewardPlugin:
    @hookimpl
    def register_rewards(self, register):
        register("bench_length", length_reward)


LENGTH_PLUGIN = LengthRewardPlugin()  # one instance: registering it again in the same process is a no-op


class NvmlPeak:
    """Peak device memory in use (NVML, whole GPU, every process), sampled every 50 ms in a thread."""

    def __init__(self, index: int = 0):
        self.peak = 0
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._h = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._read = lambda: pynvml.nvmlDeviceGetMemoryInfo(self._h).used
        except Exception:  # no NVML: report 0
            self._read = lambda: 0
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._read())
            time.sleep(0.05)

    def reset(self) -> None:
        self.peak = self._read()

    def gib(self) -> float:
        return self.peak / (1 << 30)


def toolrl_config(model_dir: str, tasks_file: str, completions: int, *, group: int = 8, new_tokens: int = 256,
                  gpu_memory_utilization: float = 0.3, token_budget: int | None = 32768,
                  gradient_checkpointing: bool | None = True, fsdp: bool = False, sleep: bool | None = False,
                  sleep_level: int | None = None, staleness: int = 0, engine_process: bool = False,
                  dtype: str = "bfloat16", out: str = "/tmp/toolrl-bench-run", backend: str = "vllm",
                  device: str = "cuda", engine_stream_priority: str | None = None,
                  logits_chunk: int | None = None, compile_layers: bool = False,
                  update_sm_fraction: float | None = None, compile_mode: str = "default",
                  micro_batch_size: int = 32, torch_threads: int | None = None,
                  kv_cache: str | None = None, steps_per_rollout: int = 1) -> dict:
    backend_args: dict[str, Any] = {"gpu_memory_utilization": gpu_memory_utilization, "max_model_len": 1024,
                                    "max_num_batched_tokens": 4096}
    if sleep_level is not None:
        backend_args["sleep_level"] = sleep_level
    if engine_process:  # vLLM's engine core in a process of its own, weights through CUDA IPC
        backend_args["engine_process"] = True
    if engine_stream_priority is not None:  # the in-process engine thread's CUDA stream priority
        backend_args["engine_stream_priority"] = engine_stream_priority
    if kv_cache is not None:  # "fit": a KV cache for max_batch_size x max_model_len tokens, not 0.3 of the card
        backend_args["kv_cache"] = kv_cache
    return {
        "model": {"name_or_path": model_dir, "dtype": dtype, "device": device,
                  "gradient_checkpointing": gradient_checkpointing},
        "rollout": {"backend": backend, "n": group, "max_new_tokens": new_tokens, "max_total_tokens": 2 * new_tokens,
                    "max_turns": 1, "temperature": 1.0, "ignore_eos": True,
                    "min_tokens": new_tokens if backend != "hf" else 0,
                    # one job of steps_per_rollout steps decodes all their completions together
                    "max_batch_size": max(256, completions * steps_per_rollout), "backend_args": backend_args if backend == "vllm" else {},
                    "sleep_during_update": "auto" if sleep is None else bool(sleep)},
        "algorithm": {"advantage": "grpo", "kl_coef": 0.0},
        "rewards": [{"name": "bench_length", "weight": 1.0}],
        "data": {"train_file": tasks_file, "prompts_per_step": completions // group},
        "trainer": {"total_steps": 100, "lr": 1e-6, "micro_batch_size": min(micro_batch_size, completions),
                    "token_budget": token_budget,
                    "output_dir": out, "metric_sinks": [], "seed": 0, "fsdp": {"enabled": fsdp},
                    **({"logits_chunk": logits_chunk} if logits_chunk else {}), "compile_layers": compile_layers,
                    "compile_mode": compile_mode,
                    "async_rollouts": {"max_staleness": staleness, "update_sm_fraction": update_sm_fraction,
                                       "steps_per_rollout": steps_per_rollout}},
        # the in-process trainer's torch CPU threads (ray.torch_threads; None: all cores)
        **({"ray": {"torch_threads": torch_threads}} if torch_threads else {}),
    }


def steady_steps(n: int, asynchronous: bool, per_job: int = 1) -> tuple[int, int]:
    """The steps (first, last; 1-based) whose median is a run's step time: its steady state.

    Step 1 warms up (graph recordings, compilation: tens of seconds). In asynchronous mode step 2's batch was
    generated beside that long step 1, so step 2 only trains (short), and the last step has no next rollout to
    overlap (a short tail): steps 3..N-1 when there are at least 5. Before 2026-12-05 (session 16) asynchronous
    runs were timed over steps 2..N-1, which counted the short step 2 (docs/BENCHMARKS.md, eleventh sitting).

    With `per_job` = steps_per_rollout m > 1 the steps of a job differ (the first waits for the job, the others
    do not), so a run is timed over whole jobs, and by their mean (`step_statistic`): from step 2m+1 (the first
    two jobs were sampled beside the warm-up) to the last whole job before step N.
    """
    if per_job > 1:
        first = 2 * per_job + 1
        last = first - 1 + (n - first) // per_job * per_job
        if last < first:
            raise ValueError(f"{n} steps hold no whole job after the warm-up with steps_per_rollout={per_job}: "
                             f"run at least {first + per_job} steps")
        return first, last
    if n < 2:
        return 1, n
    if asynchronous and n >= 5:
        return 3, n - 1
    if asynchronous and n >= 4:
        return 2, n - 1
    return 2, n


def run_toolrl(config: dict, steps: int, log=print, profile_step: int = 0, sample_engine: bool = False) -> dict:
    """`steps` training steps (asynchronous when trainer.async_rollouts.max_staleness > 0); per-step wall time,
    step metrics and peak memory. `profile_step` K > 0: step K runs under torch.profiler (CPU and CUDA) and
    its trace's summary (`step_trace.summarize`) goes under `profile`; its time is left out of the median step.
    `sample_engine`: the engine thread's Python stack is sampled over steps 2..N (`stack_sampler`), the
    summary under `engine_stacks`."""
    import contextlib

    from stack_sampler import StackSampler
    import torch

    from toolrl.config import Config
    from toolrl.trainer.local import local_context
    from toolrl.trainer.pipeline import make_pipeline
    from toolrl.trainer.step import train_step

    cfg = Config.model_validate({**config, "trainer": {**config["trainer"], "total_steps": steps}})
    nvml = NvmlPeak()
    t0 = time.perf_counter()
    ctx = local_context(cfg, plugins=[LENGTH_PLUGIN], model_path=cfg.model.name_or_path)
    start_s = time.perf_counter() - t0
    torch_threads = torch.get_num_threads()  # set by the rank (ray.torch_threads, else all cores)
    pipeline = make_pipeline(ctx, 1, steps)
    rows = []
    profile: dict = {}
    cuda = torch.cuda.is_available()
    engine_thread = {"vllm": "toolrl-vllm-engine", "hf": "toolrl-hf-engine"}.get(cfg.rollout.backend, "")
    sampler = StackSampler(engine_thread) if sample_engine else None
    sampling = contextlib.ExitStack()
    try:
        for step in range(1, steps + 1):
            if step == 2 and sampler is not None:
                sampling.enter_context(sampler)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            if step == profile_step:
                profile, m = profiled_step(step, ctx, pipeline, Path(cfg.trainer.output_dir))
            else:
                m = train_step(step, ctx, pipeline)
            if cuda:
                torch.cuda.synchronize()
            m["bench/step_seconds"] = time.perf_counter() - t
            m["bench/torch_peak_reserved_gib"] = torch.cuda.max_memory_reserved() / (1 << 30) if cuda else 0.0
            m["bench/nvml_peak_gib_so_far"] = nvml.gib()
            rows.append(m)
            log(f"  step {step}: {m['bench/step_seconds']:.2f}s rollout {m.get('timing/rollout', 0):.2f}s "
                f"wait {m.get('timing/rollout_wait', 0):.2f}s update {m.get('timing/update', 0):.2f}s "
                f"sync {m.get('timing/sync', 0):.2f}s sleep {m.get('timing/sleep', 0):.2f}s "
                f"wake {m.get('timing/wake', 0):.2f}s lag {m.get('rollout/weight_lag', 0):.0f} "
                f"len {m.get('rollout/response_length', 0):.0f} gc {m.get('resources/driver/gc_seconds', 0):.2f}s "
                f"peak(torch) {m['bench/torch_peak_reserved_gib']:.1f} GiB peak(nvml) {nvml.gib():.1f} GiB", flush=True)
    finally:
        sampling.close()
        if pipeline is not None:
            pipeline.close()
        ctx.engines.close()
    seconds = [r["bench/step_seconds"] for r in rows]
    per_job = cfg.trainer.async_rollouts.steps_per_rollout
    first, last = steady_steps(len(rows), bool(cfg.trainer.async_rollouts.max_staleness), per_job)
    timed = [seconds[k - 1] for k in range(first, last + 1) if k != profile_step] or [seconds[0]]
    completions = cfg.data.prompts_per_step * cfg.rollout.n
    statistic = "mean" if per_job > 1 else "median"  # whole jobs: their steps differ by design
    step_s = statistics.fmean(timed) if per_job > 1 else statistics.median(timed)
    return {"completions": completions, "start_seconds": start_s, "step_seconds": [r["bench/step_seconds"] for r in rows],
            "gc_seconds": [r.get("resources/driver/gc_seconds", 0.0) for r in rows],  # the collector, any thread
            "median_step_s": statistics.median(timed), "mean_step_s": statistics.fmean(timed),
            "step_statistic": statistic, "samples_per_s": completions / step_s, "steps_per_rollout": per_job,
            "nvml_peak_gib": nvml.gib(), "torch_peak_reserved_gib": max(r["bench/torch_peak_reserved_gib"] for r in rows),
            "max_staleness": cfg.trainer.async_rollouts.max_staleness, "torch_threads": torch_threads,
            "sleep_during_update": cfg.rollout.sleep_during_update,
            "steps_timed": f"{first}..{last}",
            "phases_median": {k: statistics.median(r.get(k, 0.0) for r in rows[first - 1:last] or rows)
                              for k in ("timing/rollout", "timing/rollout_wait", "timing/reward", "timing/update",
                                        "timing/sync", "timing/forward", "timing/sleep", "timing/wake",
                                        "async/rollout_overlap", "rollout/weight_lag", "resources/driver/gc_seconds")},
            "metrics_last": {k: v for k, v in rows[-1].items() if isinstance(v, (int, float))},
            **({"profile": profile} if profile else {}),
            **({"engine_stacks": sampler.summary()} if sampler is not None else {})}


def profiled_step(step: int, ctx: Any, pipeline: Any, out_dir: Path) -> tuple[dict, dict]:
    """One train_step under torch.profiler; (the trace's summary with the step's wall time, the step's metrics)."""
    import json

    import torch
    from torch.profiler import ProfilerActivity, profile

    import step_trace
    from toolrl.trainer.step import train_step

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        cpu0, t = step_trace.thread_cpu(), time.perf_counter()
        m = train_step(step, ctx, pipeline)
        torch.cuda.synchronize()
        wall, cpu1 = time.perf_counter() - t, step_trace.thread_cpu()
    path = ensure_dir(out_dir) / f"trace-step{step}.json"
    prof.export_chrome_trace(str(path))
    summary = {"step": step, "wall_s": wall, "thread_cpu_s": step_trace.cpu_delta(cpu0, cpu1),
               **step_trace.summarize(json.loads(path.read_text()))}
    path.unlink()  # hundreds of MB; the summary is what is kept
    return summary, m


def ensure_dir(p: str | Path) -> Path:
    p = Path(p)
    p.mkdir(parents=True, exist_ok=True)
    return p
