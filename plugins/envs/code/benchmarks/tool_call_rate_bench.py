"""How often does a model call the python tool on `arith-tool` tasks, by number of worked examples?

    flock /tmp/toolrl-heavy.lock .venv/bin/python plugins/envs/code/benchmarks/tool_call_rate_bench.py \
        --model qwen2.5-coder-0.5b-instruct --n 16 --shots 0 1 2

For each `shots` value it renders `--n` easy tasks exactly as training does
(`toolrl.chat.template.render_prompt`), generates the first assistant turn
greedily and with two samples at T=1 (plain `transformers` generate, batched),
and counts the turns that toolrl's `auto` parser reads as a call to `python`,
and, among those, calls whose code prints the right product. It also scores
the no-tool variant (`tool=false`) for the answer accuracy without the tool.
Writes plugins/envs/code/benchmarks/results/tool_call_rate.json and prints a
table with the machine load (figures under load are slower, not different).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path


def first_turns(model, tok, tasks, *, sample: bool, max_new_tokens: int) -> list[str]:
    import torch

    from toolrl.chat.template import render_prompt

    ids = [render_prompt(tok, t) for t in tasks]
    width = max(map(len, ids))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    inp = torch.tensor([[pad] * (width - len(x)) + list(x) for x in ids])
    att = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    with torch.inference_mode():
        if sample:
            torch.manual_seed(0)
            out = model.generate(input_ids=inp.repeat(2, 1), attention_mask=att.repeat(2, 1), do_sample=True,
                                 temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens)
        else:
            out = model.generate(input_ids=inp, attention_mask=att, do_sample=False, max_new_tokens=max_new_tokens)
    return tok.batch_decode(out[:, width:], skip_special_tokens=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--shots", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from toolrl.chat.parsers import get_parser
    from toolrl.models import resolve
    from toolrl_env_code.arith import make_arith_tasks

    path = resolve(args.model, progress=False)
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    parser = get_parser("auto")
    rows = []
    for shots in args.shots:
        for tool in (True, False):
            tasks = list(make_arith_tasks(args.n, seed=args.seed, difficulty="easy", shots=shots, tool=tool))
            t0 = time.perf_counter()
            greedy = first_turns(model, tok, tasks, sample=False, max_new_tokens=args.max_new_tokens)
            sampled = first_turns(model, tok, tasks, sample=True, max_new_tokens=args.max_new_tokens)
            seconds = time.perf_counter() - t0

            def score(outputs: list[str], tasks_: list) -> tuple[int, int, int]:
                calls = right_calls = right_answers = 0
                for text, task in zip(outputs, tasks_ * (len(outputs) // len(tasks_))):
                    a, b = map(int, re.search(r"(\d+) \* (\d+)", task.messages[-1]["content"]).groups())
                    turn = parser.parse(text)
                    py = [c for c in turn.tool_calls if c.name == "python"]
                    calls += bool(py)
                    right_calls += any(re.sub(r"\s", "", str(c.arguments.get("code", ""))) == f"print({a}*{b})"
                                       for c in py)
                    m = re.findall(r"<answer>\s*([-\d,]+)\s*</answer>", text)
                    right_answers += bool(m) and m[-1].replace(",", "") == str(a * b)
                return calls, right_calls, right_answers

            g, s = score(greedy, tasks), score(sampled, tasks)
            rows.append({"shots": shots, "tool": tool, "n": args.n, "greedy_calls": g[0], "greedy_exact_calls": g[1],
                         "greedy_right_answers": g[2], "sampled": 2 * args.n, "sampled_calls": s[0],
                         "sampled_exact_calls": s[1], "sampled_right_answers": s[2], "seconds": round(seconds, 1)})
    load = os.getloadavg()
    out = {"model": args.model, "seed": args.seed, "max_new_tokens": args.max_new_tokens, "rows": rows,
           "loadavg": load, "command": "plugins/envs/code/benchmarks/tool_call_rate_bench.py"}
    dest = Path(__file__).parent / "results" / "tool_call_rate.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{args.model}, easy arith-tool tasks (seed {args.seed}), first turn, load {load[0]:.1f}")
    print(f"{'shots':>5} {'tool':>5} | {'greedy: calls':>13} {'exact':>5} {'right':>5} | "
          f"{'T=1: calls':>10} {'exact':>5} {'right':>5} | seconds")
    for r in rows:
        print(f"{r['shots']:>5} {str(r['tool']):>5} | {r['greedy_calls']:>8}/{r['n']:<4} {r['greedy_exact_calls']:>5} "
              f"{r['greedy_right_answers']:>5} | {r['sampled_calls']:>5}/{r['sampled']:<4} "
              f"{r['sampled_exact_calls']:>5} {r['sampled_right_answers']:>5} | {r['seconds']}")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
