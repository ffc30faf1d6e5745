"""Issue 11 on one H200: one FSDP2 rank with colocated vLLM, with and without sleep/wake; a full fine-tune
of the Qwen2.5-Coder-1.5B architecture.

    python3 benchmarks/gpu/h200_fsdp.py --tokenizer .gpu_snapshot/qwen_tok --out $OUT/h200_fsdp.json

Each configuration runs toolrl's training step (benchmarks/gpu/toolrl_inproc.py: the real
`train_step` over an in-process PolicyRank) in its own child process: trainer.fsdp.enabled (FSDP2 on one
NCCL rank, float32 master weights, bfloat16 compute), the `vllm` backend colocated
(gpu_memory_utilization 0.3), GRPO group 8, 256 forced new tokens, a length reward, gradient
checkpointing on. Sleep on (`rollout.sleep_during_update=true`, the step's own wiring): the engine sleeps
(level 2: KV cache and weights dropped) after every rollout, the rank empties the CUDA cache after the
update, and the engine wakes before the new weights are pushed. Reported: median step time of steps 2..N, peak
device memory (NVML, whole GPU) and PyTorch's peak reserved memory in the step. The models are random
init from the published configs (the GGUFs are not carried to the GPU machine).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CONFIGS = {
    "0.5b_fsdp_nosleep": dict(shape="qwen2-0.5b", completions=256, sleep=False),
    "0.5b_fsdp_sleep": dict(shape="qwen2-0.5b", completions=256, sleep=True),
    "1.5b_fsdp_sleep": dict(shape="qwen2.5-coder-1.5b", completions=128, sleep=True),
}


def worker(name: str, model: str, steps: int, work: Path) -> None:
    import shapes
    import toolrl_inproc as T

    shapes.gpu_env()
    c = CONFIGS[name]
    tasks = shapes.write_tasks(work / f"tasks-{name}.jsonl", c["completions"] // 8 * (steps + 1))
    cfg = T.toolrl_config(model, str(tasks), c["completions"], fsdp=True, sleep=c["sleep"], sleep_level=2,
                          gradient_checkpointing=True, out=str(work / f"run-{name}"))
    res = T.run_toolrl(cfg, steps)
    res["config"] = c
    print("RESULT " + json.dumps(res), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", default="")
    ap.add_argument("--model", default="")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--tokenizer", default=".gpu_snapshot/qwen_tok")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--work", default="/tmp/h200-fsdp")
    ap.add_argument("--timeout", type=int, default=200)
    ap.add_argument("--out", default="h200_fsdp.json")
    a = ap.parse_args()
    work = Path(a.work)
    if a.worker:
        worker(a.worker, a.model, a.steps, work)
        return
    import shapes

    shapes.gpu_env()
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"steps": a.steps, "runs": {}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    for name in a.configs.split(","):
        model = str(shapes.build_model(CONFIGS[name]["shape"], a.tokenizer, work / CONFIGS[name]["shape"]))
        print(f"== {name}", flush=True)
        t = time.perf_counter()
        try:
            p = subprocess.run([sys.executable, __file__, "--worker", name, "--model", model, "--steps", str(a.steps),
                                "--work", str(work)], capture_output=True, text=True, timeout=a.timeout,
                               env={**os.environ})
        except subprocess.TimeoutExpired:
            results["runs"][name] = {"error": f"timeout after {a.timeout}s"}
            print(f"   TIMEOUT after {a.timeout}s", flush=True)
            continue
        for ln in p.stdout.splitlines():
            if ln.startswith("  step"):
                print(ln, flush=True)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if p.returncode or not lines:
            results["runs"][name] = {"error": f"rc={p.returncode}", "stderr_tail": p.stderr[-4000:]}
            print(f"   FAILED rc={p.returncode}\n{p.stderr[-3000:]}", flush=True)
        else:
            r = json.loads(lines[-1][len("RESULT "):])
            r["wall_seconds"] = time.perf_counter() - t
            results["runs"][name] = r
        Path(a.out).write_text(json.dumps(results, indent=2))
    print(f"\n{'config':<20}{'completions':>12}{'median step s':>15}{'samples/s':>11}{'NVML peak GiB':>15}"
          f"{'torch peak GiB':>16}")
    for name, r in results["runs"].items():
        if "error" in r:
            print(f"{name:<20}  {r['error']}")
            continue
        print(f"{name:<20}{r['completions']:>12}{r['median_step_s']:>15.2f}{r['samples_per_s']:>11.1f}"
              f"{r['nvml_peak_gib']:>15.1f}{r['torch_peak_reserved_gib']:>16.1f}")


if __name__ == "__main__":
    main()
