"""transformers' own continuous batching (`model.generate_batch`) against toolrl's hf engine, batch 32, CPU.

    flock /tmp/toolrl-heavy.lock .venv/bin/python benchmarks/cb_bench.py            # writes benchmarks/results/cb.json
    .venv/bin/python benchmarks/cb_bench.py --prompts 4 --cap 8                      # a smoke run

Same model (SmolLM2-135M-Instruct), dtype, prompts (rollout_bench's chat prompts), greedy decoding,
at most --cap new tokens, natural stopping at `<|im_end|>`, 2 torch threads, `torch.inference_mode`.
Both methods take all prompts at once and keep at most 32 sequences running:

- hf@32:            `HFBackend(max_batch_size=32).generate(requests)` (toolrl's engine);
- generate_batch@32: `model.generate_batch(prompts, ContinuousBatchingConfig(max_requests_per_batch=32))`
                    with the model loaded with `attn_implementation="sdpa"` (transformers' paged cache).

Each method runs once on two prompts first (warm-up, not timed). Generated tokens are counted up to and
including the end-of-turn token. The issue's rule: adopt generate_batch if it comes within 10% of hf@32.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as rollout_bench: spinning threads distort a shared CPU

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rollout_bench import count_generated, make_prompts, run_backend  # noqa: E402


def run_generate_batch(model, prompts, batch, cap, eos) -> tuple[int, float, list[list[int]]]:
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    gc = GenerationConfig(max_new_tokens=cap, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    cb = ContinuousBatchingConfig(max_requests_per_batch=batch)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate_batch(inputs=prompts, generation_config=gc, continuous_batching_config=cb)
    wall = time.perf_counter() - t0
    by_prompt = sorted(out.values(), key=lambda o: int(str(o.request_id).rsplit("_", 1)[-1])
                       if str(o.request_id).rsplit("_", 1)[-1].isdigit() else 0)
    rows = [list(o.generated_tokens) for o in by_prompt]
    errors = [o.error for o in by_prompt if getattr(o, "error", None)]
    if errors or len(rows) != len(prompts):
        raise RuntimeError(f"generate_batch returned {len(rows)} of {len(prompts)} outputs; errors: {errors[:3]}")
    return sum(count_generated(r, {eos}, -1) for r in rows), wall, rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--cap", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "cb.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from toolrl import models

    path = models.resolve("smollm2-135m-instruct", progress=False)
    tok = AutoTokenizer.from_pretrained(path)
    dtype = getattr(torch, args.dtype)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    prompts = make_prompts(tok, args.prompts)
    load = os.getloadavg()[0]

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    run_backend(model, tok, path, prompts[:2], args.batch, 4)  # warm-up
    hf_tokens, hf_wall, hf_lengths, _ = run_backend(model, tok, path, prompts, args.batch, args.cap)
    del model

    cb_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa").eval()
    run_generate_batch(cb_model, prompts[:2], args.batch, 4, eos)  # warm-up
    cb_tokens, cb_wall, cb_rows = run_generate_batch(cb_model, prompts, args.batch, args.cap, eos)

    hf_tps, cb_tps = hf_tokens / hf_wall, cb_tokens / cb_wall
    result = {
        "model": "smollm2-135m-instruct", "dtype": args.dtype, "threads": args.threads, "prompts": args.prompts,
        "batch": args.batch, "cap": args.cap, "load_1min_at_start": round(load, 2),
        "load_1min_at_end": round(os.getloadavg()[0], 2), "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "hf": {"tokens": hf_tokens, "wall_s": round(hf_wall, 2), "tokens_per_s": round(hf_tps, 2)},
        "generate_batch": {"tokens": cb_tokens, "wall_s": round(cb_wall, 2), "tokens_per_s": round(cb_tps, 2)},
        "generate_batch_over_hf": round(cb_tps / hf_tps, 3),
        "within_10_percent": cb_tps >= 0.9 * hf_tps,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'method':<20}{'tokens':>8}{'wall s':>9}{'tok/s':>9}")
    print(f"{'hf@' + str(args.batch):<20}{hf_tokens:>8}{hf_wall:>9.1f}{hf_tps:>9.1f}")
    print(f"{'generate_batch@' + str(args.batch):<20}{cb_tokens:>8}{cb_wall:>9.1f}{cb_tps:>9.1f}")
    print(f"generate_batch / hf = {result['generate_batch_over_hf']:.2f} "
          f"({'within' if result['within_10_percent'] else 'not within'} 10%); load {load:.1f} -> "
          f"{result['load_1min_at_end']:.1f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
