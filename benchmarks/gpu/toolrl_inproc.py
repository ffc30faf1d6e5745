"""toolrl's training step (toolrl.trainer.step.train_step) driven in one process, for the GPU benchmarks.

The step is the real driver code; the roles it talks to are in-process adapters over one
`toolrl.trainer.ranks.PolicyRank` (model, optimizer, FSDP2 when trainer.fsdp.enabled, the colocated
rollout backend) instead of Ray actors: the GPU machine runs no Ray, and with one colocated rank Ray
only adds the pickling of the batch and trajectories between driver and actor.

With `sleep=True` the colocated engine sleeps after each rollout (its KV cache and weights freed) and
wakes before the new weights are pushed, so the update runs with the engine's memory released.
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


class InProcTrainer:
    """TrainerGroup over one PolicyRank in this process."""

    def __init__(self, rank: Any):
        self.rank = rank

    @property
    def world_size(self) -> int:
        return 1

    def info(self) -> Any:
        from toolrl.trainer.roles import TrainerInfo

        i = self.rank.info()
        return TrainerInfo(pad_token_id=i["pad_token_id"], total_params=i["total_params"],
                           trainable_params=i["trainable_params"], device=i["device"],
                           torch_threads=i["torch_threads"])

    def logprobs(self, batch: Any) -> Any:
        from toolrl.trainer.roles import Ready

        return Ready(self.rank.logprobs(batch))

    def update(self, update: Any) -> Any:
        from toolrl.trainer.roles import Ready

        return Ready(self.rank.update(update.batch, update.kl_coef, update.seed))

    def weights(self, version: int) -> Any:
        from toolrl.trainer.roles import WeightUpdate

        return WeightUpdate(version, None)

    def close(self) -> None:
        pass


class InProcEngines:
    """RolloutEngines over the PolicyRank's colocated backend (optionally asleep outside rollouts)."""

    def __init__(self, rank: Any, sleep: bool = False):
        self.rank, self.sleep_between = rank, sleep
        self.version = 0
        self.awake = True

    def rollout(self, job: Any) -> Any:
        if not self.awake:
            self.rank.engine_wake()
            self.awake = True
        out = self.rank.rollout(list(job.tasks), job.n, job.seed, job.temperature)
        if self.sleep_between:
            self.rank.engine_sleep()
            self.awake = False
        return out

    def sync_weights(self, update: Any) -> dict[str, float]:
        t = time.perf_counter()
        if not self.awake:
            self.rank.engine_wake()
            self.awake = True
        m = self.rank.sync_engine(update.version)
        self.version = update.version
        m["sync/wake_and_load_seconds"] = time.perf_counter() - t
        return m

    def sleep(self) -> None:
        self.rank.engine_sleep()

    def wake(self) -> None:
        self.rank.engine_wake()

    def close(self) -> None:
        if self.rank.backend is not None:
            self.rank.backend.close()


def toolrl_config(model_dir: str, tasks_file: str, completions: int, *, group: int = 8, new_tokens: int = 256,
                  gpu_memory_utilization: float = 0.3, token_budget: int | None = 32768,
                  gradient_checkpointing: bool | None = True, fsdp: bool = False, sleep: bool = False,
                  dtype: str = "bfloat16", out: str = "/tmp/toolrl-bench-run", backend: str = "vllm",
                  device: str = "cuda") -> dict:
    backend_args: dict[str, Any] = {"gpu_memory_utilization": gpu_memory_utilization, "max_model_len": 1024,
                                    "max_num_batched_tokens": 4096}
    if sleep:
        backend_args.update(enable_sleep_mode=True, sleep_level=2)
    return {
        "model": {"name_or_path": model_dir, "dtype": dtype, "device": device,
                  "gradient_checkpointing": gradient_checkpointing},
        "rollout": {"backend": backend, "n": group, "max_new_tokens": new_tokens, "max_total_tokens": 2 * new_tokens,
                    "max_turns": 1, "temperature": 1.0, "ignore_eos": True,
                    "min_tokens": new_tokens if backend != "hf" else 0,
                    "max_batch_size": 256, "backend_args": backend_args if backend == "vllm" else {}},
        "algorithm": {"advantage": "grpo", "kl_coef": 0.0},
        "rewards": [{"name": "bench_length", "weight": 1.0}],
        "data": {"train_file": tasks_file, "prompts_per_step": completions // group},
        "trainer": {"total_steps": 100, "lr": 1e-6, "micro_batch_size": min(32, completions), "token_budget": token_budget,
                    "output_dir": out, "metric_sinks": [], "seed": 0, "fsdp": {"enabled": fsdp}},
    }


def run_toolrl(config: dict, steps: int, log=print) -> dict:
    """`steps` training steps; per-step wall time, step metrics and peak memory."""
    import torch

    from toolrl import plugins, runtime
    from toolrl.algorithms.kl import make_kl_controller
    from toolrl.config import Config
    from toolrl.rewards import prepare_rewards
    from toolrl.trainer.fsdp import single_process_group
    from toolrl.trainer.ranks import PolicyRank
    from toolrl.trainer.sampler import TaskSampler
    from toolrl.trainer.step import StepContext, train_step
    from toolrl.types import load_tasks

    runtime.register_plugins([LengthRewardPlugin()])
    cfg = Config.model_validate(config)
    nvml = NvmlPeak()
    t0 = time.perf_counter()
    rank = PolicyRank(cfg.model_dump(), cfg.model.name_or_path, with_engine=True)
    if cfg.trainer.fsdp.enabled:
        single_process_group("nccl")
        rank.fsdp = True
        rank.init_group("127.0.0.1", 0, "nccl")
        rank.sync_engine(0)
    start_s = time.perf_counter() - t0
    sleep = bool(cfg.rollout.backend_args.get("enable_sleep_mode"))
    engines = InProcEngines(rank, sleep=sleep)
    tasks = load_tasks(cfg.data.train_file)
    ctx = StepContext(cfg=cfg, tasks=tasks,
                      sampler=TaskSampler(len(tasks), cfg.data.prompts_per_step, cfg.data.shuffle, cfg.trainer.seed),
                      rewards=prepare_rewards(cfg.rewards),
                      estimator=plugins.registry("advantage_estimators").get(cfg.algorithm.advantage),
                      kl_ctl=make_kl_controller("fixed", 0.0, 0.1, 10000), trainer=InProcTrainer(rank),
                      reference=None, critic=None, engines=engines, pad_token_id=rank.info()["pad_token_id"])
    rows = []
    for step in range(1, steps + 1):
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        m = train_step(step, ctx)
        if cuda:
            torch.cuda.synchronize()
        m["bench/step_seconds"] = time.perf_counter() - t
        m["bench/torch_peak_reserved_gib"] = torch.cuda.max_memory_reserved() / (1 << 30) if cuda else 0.0
        m["bench/nvml_peak_gib_so_far"] = nvml.gib()
        rows.append(m)
        log(f"  step {step}: {m['bench/step_seconds']:.2f}s rollout {m.get('timing/rollout', 0):.2f}s "
            f"update {m.get('timing/update', 0):.2f}s sync {m.get('timing/sync', 0):.2f}s "
            f"len {m.get('rollout/response_length', 0):.0f} "
            f"peak(torch) {m['bench/torch_peak_reserved_gib']:.1f} GiB peak(nvml) {nvml.gib():.1f} GiB", flush=True)
    engines.close()
    timed = [r["bench/step_seconds"] for r in rows[1:]] or [rows[0]["bench/step_seconds"]]
    completions = cfg.data.prompts_per_step * cfg.rollout.n
    return {"completions": completions, "start_seconds": start_s, "step_seconds": [r["bench/step_seconds"] for r in rows],
            "median_step_s": statistics.median(timed), "samples_per_s": completions / statistics.median(timed),
            "nvml_peak_gib": nvml.gib(), "torch_peak_reserved_gib": max(r["bench/torch_peak_reserved_gib"] for r in rows),
            "phases_median": {k: statistics.median(r.get(k, 0.0) for r in rows[1:] or rows)
                              for k in ("timing/rollout", "timing/reward", "timing/update", "timing/sync",
                                        "timing/forward")},
            "metrics_last": {k: v for k, v in rows[-1].items() if isinstance(v, (int, float))}}


def ensure_dir(p: str | Path) -> Path:
    p = Path(p)
    p.mkdir(parents=True, exist_ok=True)
    return p
