"""Write multiplication tasks for the agent program (JSONL, docs/tasks.md):

    python examples/agent_program/make_tasks.py --n 200 --seed 1000 --out data/agent_train.jsonl
    python examples/agent_program/make_tasks.py --n 32 --seed 7 --out data/agent_eval.jsonl

Products of two 3-4 digit numbers; `env: program` (the program itself is named in config.yaml,
`envs.program.entry`); the answer in `metadata.answer` for the `result_match` reward.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def make_tasks(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        a, b = rng.randint(100, 9999), rng.randint(100, 9999)
        tasks.append({"id": f"mul-s{seed}-{i:05d}", "messages": [{"role": "user", "content": f"What is {a} * {b}?"}],
                      "env": "program", "metadata": {"answer": str(a * b)}})
    return tasks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(t) + "\n" for t in make_tasks(args.n, args.seed)))
    print(f"wrote {args.n} tasks to {out}")


if __name__ == "__main__":
    main()
