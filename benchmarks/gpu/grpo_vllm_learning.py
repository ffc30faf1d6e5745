"""GRPO with vLLM rollouts on one GPU: SmolLM2-135M learns the <answer>N</answer> format, 3 seeds.

    python3 benchmarks/gpu/grpo_vllm_learning.py --steps 20 --out $OUT/grpo_vllm.json

Uses the config of tests/gpu/test_train_gpu.py (4 prompts x 4 samples per step, 16 new tokens)
with lr 1e-5, and reports the mean reward of the first and last 3 steps and the step time.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "gpu"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--backend", default="vllm")
    ap.add_argument("--out", default="grpo_vllm.json")
    a = ap.parse_args()
    import test_train_gpu as T  # noqa: E402  (the GPU test module: config + reward)

    import toolrl
    from toolrl import plugins

    plugins.reset(load_entrypoints=False).register(T.S.AnswerTagPlugin(), name="answer-tag-bench")
    runs = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        tmp = Path(tempfile.mkdtemp())
        cfg = T.gpu_config(tmp, a.backend, steps=a.steps, lr=1e-5)
        cfg["trainer"]["seed"] = seed
        t = time.perf_counter()
        result = toolrl.train(cfg)
        wall = time.perf_counter() - t
        rows = [r for r in T.S.read_metrics(result.run_dir) if "reward/mean" in r]
        first = sum(r["reward/mean"] for r in rows[:3]) / 3
        last = sum(r["reward/mean"] for r in rows[-3:]) / 3
        step_s = sum(r.get("timing/step", 0) for r in rows) / len(rows)
        runs.append({"seed": seed, "first3": first, "last3": last, "wall_s": wall, "step_s": step_s,
                     "rollout_logprob_diff": [r.get("actor/rollout_logprob_diff") for r in rows]})
        print(f"seed {seed}: reward first 3 steps {first:.3f} -> last 3 steps {last:.3f}; wall {wall:.0f}s, "
              f"mean step {step_s:.2f}s", flush=True)
    Path(a.out).write_text(json.dumps(runs, indent=2))
    gain = [r["last3"] - r["first3"] for r in runs]
    mean = sum(gain) / len(gain)
    print(f"gain over {len(runs)} seeds: mean {mean:+.3f}, min {min(gain):+.3f}, max {max(gain):+.3f}")


if __name__ == "__main__":
    main()
