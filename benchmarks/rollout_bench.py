"""Rollout throughput: the hf backend against plain `model.generate`, side by side.

    flock /tmp/toolrl-bench.lock .venv/bin/python benchmarks/rollout_bench.py               # the full table
    flock /tmp/toolrl-bench.lock .venv/bin/python benchmarks/rollout_bench.py --dtype bfloat16
    .venv/bin/python benchmarks/rollout_bench.py --prompts 16 --batches 8 --quick            # a smoke run

Same model (SmolLM2-135M-Instruct, float32, CPU, 2 threads, `torch.inference_mode`), the
same prompts (batch-1 methods on the first --single-prompts of them), greedy decoding, natural stopping: every response ends at its own EOS
(`<|im_end|>`) or at the cap of 256 new tokens. Generated tokens are counted up to and
including the EOS (padding after it is not counted). Methods:

- naive:      one `model.generate` call per prompt;
- generate@B: one batched, left-padded `model.generate` call per group of B prompts
              (a group runs until its longest response ends);
- hf@B:       `HFBackend(max_batch_size=B)`, all prompts submitted at once (continuous
              batching: finished rows leave the batch, waiting prompts take their slots).

Writes benchmarks/results/rollout.json and prints a table with tokens/s and the ratios
that the targets are stated in (hf@32 >= 12x naive and >= 1.5x generate@32).

`--multi-turn` measures instead what an agent loop costs: E episodes of T turns, all
concurrent (`agenerate`), each turn's prompt = the previous prompt + its sampled ids + a
tool message, with a ~400-token system prompt; hf with and without prefix reuse
(`prefix_cache_mb=0`), same greedy tokens required. Writes benchmarks/results/rollout_multiturn.json:

    flock /tmp/toolrl-bench.lock .venv/bin/python benchmarks/rollout_bench.py --multi-turn
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# Spinning OpenMP threads slow plain `model.generate` calls 5-10x on a shared, loaded CPU (measured:
# naive 1.0 vs 9.9 tok/s at load 5 on 2 cores) while the engine's thread suffers far less, which
# would flatter the hf backend; passive waiting keeps the comparison fair. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

QUESTIONS = [
    "What is the capital of France?", "Write a haiku about the sea.", "Explain photosynthesis in two sentences.",
    "Name three primary colors.", "How many legs does a spider have?", "Write a short poem about autumn leaves.",
    "What is 12 times 12?", "Give me a synonym for happy.", "Describe a cat to someone who has never seen one.",
    "What does a compiler do?", "List the planets of the solar system.", "Tell me a fun fact about octopuses.",
    "Translate 'good morning' into Spanish.", "Why is the sky blue?", "Write a limerick about a programmer.",
    "What is the boiling point of water in Celsius?", "Summarize the plot of Romeo and Juliet.",
    "Suggest a name for a pet turtle.", "What is machine learning?", "How do you make a cup of tea?",
    "What is the largest ocean on Earth?", "Write a two-line motivational quote.", "Define the word 'ephemeral'.",
    "What are the three states of matter?", "Give an example of a prime number greater than 50.",
    "Write a short story about a robot who learns to paint.", "What is the speed of light?",
    "How does a rainbow form?", "Name a famous painting by Leonardo da Vinci.", "What is an API?",
    "Write a tweet announcing a new coffee shop.", "Explain recursion to a child.",
]


def make_prompts(tokenizer, n: int) -> list[list[int]]:
    from toolrl.chat.template import render_messages

    out = []
    for i in range(n):
        q = QUESTIONS[i % len(QUESTIONS)]
        if i >= len(QUESTIONS):
            q = f"{q} (variant {i // len(QUESTIONS)})"
        out.append(render_messages(tokenizer, [{"role": "user", "content": q}]))
    return out


def count_generated(row: list[int], eos: set[int], pad: int) -> int:
    for i, t in enumerate(row):
        if t in eos:
            return i + 1
    return len(row)


def run_naive(model, prompts, cap, eos) -> tuple[int, float, list[int]]:
    lengths = []
    t0 = time.perf_counter()
    for p in prompts:
        ids = torch.tensor([p])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=cap, do_sample=False,
                             eos_token_id=sorted(eos), pad_token_id=sorted(eos)[0])
        lengths.append(count_generated(out[0, len(p):].tolist(), eos, -1))
    return sum(lengths), time.perf_counter() - t0, lengths


def run_generate(model, prompts, batch, cap, eos) -> tuple[int, float, list[int]]:
    pad = sorted(eos)[0]
    lengths = []
    t0 = time.perf_counter()
    for s in range(0, len(prompts), batch):
        group = prompts[s : s + batch]
        width = max(len(p) for p in group)
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for i, p in enumerate(group):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        out = model.generate(ids, attention_mask=mask, max_new_tokens=cap, do_sample=False,
                             eos_token_id=sorted(eos), pad_token_id=pad)
        for row in out[:, width:].tolist():
            lengths.append(count_generated(row, eos, pad))
    return sum(lengths), time.perf_counter() - t0, lengths


def run_backend(model, tokenizer, model_path, prompts, batch, cap) -> tuple[int, float, list[int], dict]:
    from toolrl.rollout.base import BackendSettings, GenerationRequest, SamplingParams
    from toolrl.rollout.hf_backend import HFBackend

    backend = HFBackend(BackendSettings(model_path=str(model_path), module=model, tokenizer=tokenizer,
                                        max_batch_size=batch))
    try:
        reqs = [GenerationRequest(tuple(p), SamplingParams(temperature=0.0, max_tokens=cap)) for p in prompts]
        t0 = time.perf_counter()
        results = backend.generate(reqs)
        wall = time.perf_counter() - t0
        stats = backend.stats()
    finally:
        backend.close()
    lengths = [len(r.token_ids) for r in results]
    return sum(lengths), wall, lengths, stats


SYSTEM = (
    "You are a careful assistant that solves problems by writing Python and running it with the `python` tool. "
    "Each call runs in a fresh interpreter with the standard library; print what you need to see. "
    "Think about the problem first, then write one short program per call, read the output, and decide "
    "whether you need another call. When you are sure, answer with the final result only.\n\n"
    "# Tools\n\n<tools>\n"
    '{"type": "function", "function": {"name": "python", "description": "Run a Python 3 program and return its '
    'standard output and standard error (cut after 2000 characters). Time limit 10 seconds, memory 256 MB, no '
    'network.", "parameters": {"type": "object", "properties": {"code": {"type": "string", "description": '
    '"The complete program to run."}}, "required": ["code"]}}}\n</tools>\n\n'
    "To call the tool, reply with a JSON object inside <tool_call></tool_call> tags:\n<tool_call>\n"
    '{"name": "python", "arguments": {"code": "print(17 * 23)"}}\n</tool_call>\n\n'
    "Example.\nUser: How many primes are there below 100?\nAssistant: <tool_call>\n"
    '{"name": "python", "arguments": {"code": "print(sum(all(n % d for d in range(2, n)) for n in range(2, 100)))"}}'
    "\n</tool_call>\nTool: 25\nAssistant: 25\n\n"
    "Rules: never guess a number you can compute; keep programs short; if the program fails, read the error, "
    "fix the code and call the tool again; do not repeat a call that already worked; answer in one line."
)
TOOL_OUTPUT = "Traceback (most recent call last):\n  File \"main.py\", line 3\nNameError: name 'x' is not defined"


async def _episode(backend, index, prompt, suffix, turns, cap, rows):
    """The agent loop's request pattern: each turn continues the last one (ids never re-tokenized)."""
    from toolrl.rollout.base import GenerationRequest, SamplingParams

    ids = list(prompt)
    for turn in range(turns):
        r = await backend.agenerate(GenerationRequest(tuple(ids), SamplingParams(temperature=0.0, max_tokens=cap)))
        rows.append(((index, turn), len(ids), r))
        closed = r.token_ids and r.token_ids[-1] == suffix[0]  # the turn ended on <|im_end|>
        ids += [*r.token_ids, *(suffix[1:] if closed else suffix)]


def run_multiturn(args, model, tok, path) -> dict:
    import asyncio

    from toolrl.chat.template import render_messages
    from toolrl.rollout.base import BackendSettings
    from toolrl.rollout.hf_backend import HFBackend

    prompts = [render_messages(tok, [{"role": "system", "content": SYSTEM},
                                     {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}])
               for i in range(args.episodes)]
    suffix = tok("<|im_end|>\n<|im_start|>user\n<tool_response>\n" + TOOL_OUTPUT
                 + "\n</tool_response><|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    out: dict = {"episodes": args.episodes, "turns": args.turns, "cap": args.cap_turn,
                 "prompt_tokens_mean": round(statistics.mean(len(p) for p in prompts), 1),
                 "tool_message_tokens": len(suffix), "runs": {}}
    results = {}
    for label, mb in (("no prefix reuse", 0), ("prefix reuse", 1024)):
        backend = HFBackend(BackendSettings(model_path=str(path), module=model, tokenizer=tok,
                                            max_batch_size=args.episodes, extra={"prefix_cache_mb": mb}))
        try:
            rows: list = []

            async def main_():
                await asyncio.gather(*[_episode(backend, i, p, suffix, args.turns, args.cap_turn, rows)
                                       for i, p in enumerate(prompts)])

            t0 = time.perf_counter()
            asyncio.run(main_())
            wall = time.perf_counter() - t0
            st = backend.stats()
        finally:
            backend.close()
        gen = sum(len(r.token_ids) for _, _, r in rows)
        results[label] = {key: r for key, _, r in rows}
        out["runs"][label] = dict(wall_s=round(wall, 2), generated_tokens=gen, tokens_per_s=round(gen / wall, 2),
                                  requests=len(rows), prefill_tokens=int(st["prefill_tokens_total"]),
                                  reused_prompt_tokens=int(st["prefix_reused_tokens_total"]),
                                  prompt_tokens=sum(n for _, n, _ in rows), decode_steps=int(st["decode_steps_total"]))
        r = out["runs"][label]
        print(f"{label:>16}: {r['wall_s']:7.1f} s, {gen} tokens = {r['tokens_per_s']:6.1f} tok/s, prefilled "
              f"{r['prefill_tokens']} of {r['prompt_tokens']} prompt tokens (reused {r['reused_prompt_tokens']})",
              flush=True)
    a, b = results["no prefix reuse"], results["prefix reuse"]
    same = a.keys() == b.keys() and all(a[k].token_ids == b[k].token_ids for k in a)
    diff = max((abs(x - y) for k in a if k in b for x, y in zip(a[k].logprobs, b[k].logprobs)), default=0.0)
    out["same_tokens"] = same
    out["max_logprob_diff"] = diff
    out["speedup"] = round(out["runs"]["no prefix reuse"]["wall_s"] / out["runs"]["prefix reuse"]["wall_s"], 2)
    print(f"same tokens: {same}; max |logprob difference| {diff:.2e}; speed-up {out['speedup']}x")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=128, help="prompts for the batched methods")
    ap.add_argument("--single-prompts", type=int, default=16,
                    help="run the batch-1 methods (naive, hf@1) on only the first N prompts, to save time")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--cap", type=int, default=256, help="most new tokens per response")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--quick", action="store_true", help="skip the naive loop and hf@1 (smoke runs)")
    ap.add_argument("--out", default=None, help="default benchmarks/results/rollout[_multiturn].json")
    ap.add_argument("--multi-turn", action="store_true", help="the agent-loop benchmark (prefix reuse on/off)")
    ap.add_argument("--episodes", type=int, default=16, help="--multi-turn: concurrent episodes")
    ap.add_argument("--turns", type=int, default=3, help="--multi-turn: turns per episode")
    ap.add_argument("--cap-turn", type=int, default=64, help="--multi-turn: most new tokens per turn")
    args = ap.parse_args()
    results_dir = Path(__file__).parent / "results"

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from toolrl import models

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    path = models.resolve(args.model, progress=False)
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, args.dtype)).eval()
    eos = {tok.convert_tokens_to_ids("<|im_end|>"), int(model.generation_config.eos_token_id or 0)}
    prompts = make_prompts(tok, args.prompts)
    single = prompts[: args.single_prompts] if args.single_prompts else prompts
    batches = [int(b) for b in args.batches.split(",")]
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs", flush=True)
    if args.multi_turn:
        with torch.inference_mode():
            mt = run_multiturn(args, model, tok, path)
        load_after = os.getloadavg()
        print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
        mt.update(benchmark="rollout_multiturn", model=args.model, dtype=args.dtype, threads=args.threads,
                  command=" ".join([Path(sys.executable).name, *sys.argv]),
                  machine=dict(platform=platform.platform(), cpu_count=os.cpu_count(), processor=platform.processor()),
                  load_before=[round(x, 2) for x in load], load_after=[round(x, 2) for x in load_after],
                  torch=torch.__version__)
        out = Path(args.out or results_dir / "rollout_multiturn.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(mt, indent=2) + "\n")
        print(f"wrote {out}")
        return 0

    rows: list[dict] = []

    def record(method, batch, n_prompts, tokens, wall, lengths, extra=None):
        row = dict(method=method, batch=batch, prompts=n_prompts, generated_tokens=tokens, wall_s=round(wall, 3),
                   tokens_per_s=round(tokens / wall, 2), mean_len=round(statistics.mean(lengths), 1),
                   max_len=max(lengths), **(extra or {}))
        rows.append(row)
        print(f"{method:>10} @{batch:<3} {tokens:6d} tokens in {wall:8.1f} s = {row['tokens_per_s']:8.1f} tok/s "
              f"(mean len {row['mean_len']}, max {row['max_len']})", flush=True)

    with torch.inference_mode():
        # warm-up (first calls allocate and pick kernels)
        run_generate(model, prompts[:2], 2, 8, eos)
        if not args.quick:
            tokens, wall, lengths = run_naive(model, single, args.cap, eos)
            record("naive", 1, len(single), tokens, wall, lengths)
        for b in batches:
            if b == 1 and args.quick:
                continue
            these = single if b == 1 else prompts
            if b > 1:
                tokens, wall, lengths = run_generate(model, these, b, args.cap, eos)
                record("generate", b, len(these), tokens, wall, lengths)
            tokens, wall, lengths, stats = run_backend(model, tok, path, these, b, args.cap)
            record("hf", b, len(these), tokens, wall, lengths,
                   {"decode_steps": int(stats["decode_steps_total"]), "prefill_tokens": int(stats["prefill_tokens_total"])})

    def rate(method, batch):
        return next((r["tokens_per_s"] for r in rows if r["method"] == method and r["batch"] == batch), None)

    ratios = {}
    naive = rate("naive", 1)
    for b in batches:
        hf = rate("hf", b)
        if hf and naive:
            ratios[f"hf@{b} / naive"] = round(hf / naive, 2)
        if hf and rate("generate", b):
            ratios[f"hf@{b} / generate@{b}"] = round(hf / rate("generate", b), 2)
    print("\nratios: " + ", ".join(f"{k} = {v}x" for k, v in ratios.items()))
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    result = dict(
        benchmark="rollout", model=args.model, dtype=args.dtype, threads=args.threads, cap=args.cap,
        decoding="greedy, natural stopping at EOS", command=" ".join([Path(sys.executable).name, *sys.argv]),
        machine=dict(platform=platform.platform(), cpu_count=os.cpu_count(), processor=platform.processor()),
        load_before=[round(x, 2) for x in load], load_after=[round(x, 2) for x in load_after],
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
        torch=torch.__version__, rows=rows, ratios=ratios,
        targets={"hf@32 / naive": 12.0, "hf@32 / generate@32": 1.5},
    )
    out = Path(args.out or results_dir / "rollout.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
