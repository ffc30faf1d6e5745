"""The `vllm` backend's rollout path vs `LLM.generate` on the same engine: tokens/s, same settings.

    python3 benchmarks/gpu/rollout_vs_llm.py --tokenizer .gpu_snapshot/qwen_tok --out $OUT/rollout_vs_llm.json

One `VLLMBackend` (engine settings from `llm_kwargs`: prefix caching, processed logprobs, max_num_seqs
256, gpu_memory_utilization 0.3) over a random-init Qwen2-0.5B (bf16). The same engine object then serves
(a) `backend.agenerate` x N gathered on an asyncio loop (the trainer's path), (b) `backend.generate`,
(c) `llm.generate` with the very SamplingParams the backend builds (logprobs=0, flat), (d) `llm.generate`
with `logprobs=0` as a user would write it (no flat container). N prompts (chat-rendered questions),
temperature 1, per-request seeds; `--forced` (default) samples exactly --max-tokens tokens
(ignore_eos + min_tokens), `--natural` stops at EOS. `--reps` repetitions of all four in the orders of a balanced
Latin square (`rep_order`; use a multiple of 4; until 2026-12-05 the order was fixed, `agenerate` always right
after the slowest method), the
median is reported (and the median of each repetition's ratio to `LLM.generate`'s in the same repetition,
`paired_ratio_median`, which a host whose speed drifts between repetitions moves less), with each
repetition's time in Python's garbage collector (any thread: a collection
holds the interpreter lock, so the engine thread waits through it) and, for the backend's paths, the engine
steps it ran (about --max-tokens when every request is in the first step; more when requests reach the engine
over several steps). The engine thread is idle while (c)/(d) run, so they own the engine. `--model-runner v1|v2`
picks vLLM's model runner for the one engine all four share (VLLM_USE_V2_MODEL_RUNNER; vLLM 0.25 picks V2 for
Qwen2 by default).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def rep_order(names: list[str], rep: int) -> list[str]:
    """The methods' order in repetition `rep`, from a Williams design (a balanced Latin square): over
    `len(names)` repetitions (twice that for an odd count) every method runs equally often in every position and
    right after every other method, so no method always runs first or always follows the slowest."""
    n = len(names)
    base = [0]
    for i in range(1, n):  # 0, 1, n-1, 2, n-2, ...
        base.append((i + 1) // 2 if i % 2 else n - i // 2)
    rows = [[(x + r) % n for x in base] for r in range(n)]
    if n % 2:
        rows += [row[::-1] for row in rows]
    return [names[i] for i in rows[rep % len(rows)]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=".gpu_snapshot/qwen_tok")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--natural", action="store_true")
    ap.add_argument("--work", default="/tmp/rollout-bench")
    ap.add_argument("--model-runner", choices=("default", "v1", "v2"), default="default",
                    help="vLLM's model runner (VLLM_USE_V2_MODEL_RUNNER); default: vLLM's choice")
    ap.add_argument("--out", default="rollout_vs_llm.json")
    a = ap.parse_args()
    if a.model_runner != "default":  # read when the engine's config is built, below
        os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "1" if a.model_runner == "v2" else "0"
    import shapes

    shapes.gpu_env()
    import torch
    from transformers import AutoTokenizer

    from toolrl.rollout.base import BackendSettings, GenerationRequest, SamplingParams
    from toolrl.metrics.resources import gc_pauses
    from toolrl.rollout.vllm_backend import VLLMBackend, sampling_kwargs

    model = str(shapes.build_model("qwen2-0.5b", a.tokenizer, Path(a.work) / "qwen2-0.5b"))
    tok = AutoTokenizer.from_pretrained(model)
    prompts = []
    for q in shapes.questions(a.prompts, seed=1):
        ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
        prompts.append(tuple(int(i) for i in (ids["input_ids"] if hasattr(ids, "keys") else ids)))
    forced = not a.natural
    sp = [SamplingParams(temperature=1.0, max_tokens=a.max_tokens, seed=i, ignore_eos=forced,
                         min_tokens=a.max_tokens if forced else 0) for i in range(len(prompts))]
    reqs = [GenerationRequest(p, s) for p, s in zip(prompts, sp)]
    t0 = time.perf_counter()
    backend = VLLMBackend(BackendSettings(model_path=model, dtype="bfloat16", max_batch_size=256, seed=0,
                                          extra={"gpu_memory_utilization": 0.3, "max_model_len": 1024}))
    start_s = time.perf_counter() - t0
    import vllm

    llm = backend.llm
    config = getattr(llm.llm_engine, "vllm_config", None)  # the runner vLLM actually chose
    runner = ("v2" if config.use_v2_model_runner else "v1") if config is not None else "unknown"
    ours = [vllm.SamplingParams(**sampling_kwargs(s)) for s in sp]
    plain = [vllm.SamplingParams(n=1, temperature=1.0, max_tokens=a.max_tokens, seed=s.seed, logprobs=0,
                                 ignore_eos=forced, min_tokens=s.min_tokens) for s in sp]
    tprompts = [{"prompt_token_ids": list(p)} for p in prompts]

    def run_agenerate():
        async def go():
            return await asyncio.gather(*(backend.agenerate(r) for r in reqs))

        res = asyncio.run(go())
        return sum(len(r.token_ids) for r in res)

    def run_generate():
        return sum(len(r.token_ids) for r in backend.generate(reqs))

    def run_llm(params):
        def f():
            # on the engine's stream, which the model runner is bound to (its output copies wait on that stream)
            with torch.cuda.stream(backend._stream) if backend._stream is not None else contextlib.nullcontext():
                outs = llm.generate(tprompts, params, use_tqdm=False)
            return sum(len(o.outputs[0].token_ids) for o in outs)

        return f

    methods = {"backend.agenerate": run_agenerate, "backend.generate": run_generate,
               "LLM.generate (backend's params)": run_llm(ours), "LLM.generate (logprobs=0)": run_llm(plain)}
    for f in methods.values():  # warm-up (CUDA graphs, allocator)
        f()
    times: dict[str, list[float]] = {k: [] for k in methods}
    gc_s: dict[str, list[float]] = {k: [] for k in methods}  # the collector's pauses in each repetition
    gc_full: dict[str, list[int]] = {k: [] for k in methods}
    steps: dict[str, list[int]] = {k: [] for k in methods}  # engine steps the backend ran (not LLM.generate's)
    tokens: dict[str, int] = {}
    for rep in range(a.reps):
        for name in rep_order(list(methods), rep):
            f = methods[name]
            torch.cuda.synchronize()
            g0, s0 = gc_pauses(), backend.stats()["engine_steps"]
            t = time.perf_counter()
            tokens[name] = f()
            torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
            g1 = gc_pauses()
            steps[name].append(int(backend.stats()["engine_steps"] - s0))
            gc_s[name].append(g1[0] - g0[0])
            gc_full[name].append(g1[1] - g0[1])
    backend.close()
    rows = {k: {"tokens": tokens[k], "seconds": times[k], "median_s": statistics.median(times[k]),
                "tok_per_s": tokens[k] / statistics.median(times[k]), "gc_seconds": gc_s[k],
                "gc_full_collections": gc_full[k], "backend_engine_steps": steps[k]} for k in methods}
    base = rows["LLM.generate (backend's params)"]["tok_per_s"]
    ref = rows["LLM.generate (backend's params)"]
    for r in rows.values():  # each repetition against LLM.generate's in the same repetition (run just after/before)
        r["paired_ratios"] = [(r["tokens"] / t) / (ref["tokens"] / u) for t, u in zip(r["seconds"], ref["seconds"])]
        r["paired_ratio_median"] = statistics.median(r["paired_ratios"])
    res = {"device": torch.cuda.get_device_name(0), "prompts": a.prompts, "max_tokens": a.max_tokens,
           "forced_length": forced, "engine_start_s": start_s, "model_runner": runner, "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(f"{a.prompts} prompts x {'exactly' if forced else 'up to'} {a.max_tokens} tokens, temperature 1, "
          f"random-init Qwen2-0.5B bf16 ({res['device']}), vLLM model runner {runner}")
    print(f"{'method':<34}{'tokens':>9}{'median s':>10}{'tok/s':>10}{'vs LLM.generate':>17}{'paired':>8}"
          f"{'slowest s':>11}{'its gc s':>10}{'steps':>12}")
    for k, r in rows.items():
        slow = max(range(len(r["seconds"])), key=r["seconds"].__getitem__)
        print(f"{k:<34}{r['tokens']:>9}{r['median_s']:>10.3f}{r['tok_per_s']:>10.0f}{r['tok_per_s'] / base:>17.2f}"
              f"{r['paired_ratio_median']:>8.2f}"
              f"{r['seconds'][slow]:>11.3f}{r['gc_seconds'][slow]:>10.3f}"
              f"{'/'.join(map(str, r['backend_engine_steps'])) if k.startswith('backend') else '-':>12}")


if __name__ == "__main__":
    main()
