"""The `vllm` backend's asyncio path (`agenerate`, the trainer's) against its blocking path (`generate`) on the
CPU, with a stand-in engine: what the two paths cost around the same engine steps.

    .venv/bin/python benchmarks/async_path_overhead.py --out benchmarks/results/async_path_overhead.json

The stand-in's step sleeps `--step-ms` (a GPU step, the interpreter lock released) and then runs a little
Python per running request (vLLM's output processing), like the real engine's thread. The backend's engine
thread, request handles and vLLM-facing code are toolrl's own; only `vllm.LLM` is replaced. `--reps`
repetitions of both paths, alternating; the median and fastest of each, and the engine steps each ran.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console
from rich.table import Table

from toolrl.rollout import vllm_backend as vlb
from toolrl.rollout.base import BackendSettings, GenerationRequest, SamplingParams


class StandInEngine:
    """Greedy counting 'model': every request samples `max_tokens` tokens, one per step, FINAL_ONLY outputs."""

    def __init__(self, step_s: float, python_per_request: int):
        self.running: dict[str, list] = {}
        self.step_s, self.work = step_s, python_per_request

    def add_request(self, request_id, prompt, params):
        self.running[request_id] = [params.max_tokens, []]

    def abort_request(self, ids):
        for i in ids:
            self.running.pop(i, None)

    def step(self):
        time.sleep(self.step_s)
        x = 0
        for _ in range(len(self.running) * self.work):
            x += 1
        outs = []
        for rid, state in list(self.running.items()):
            state[1].append(len(state[1]) + 1)
            if len(state[1]) >= state[0]:
                flat = SimpleNamespace(start_indices=list(range(len(state[1]))), token_ids=list(state[1]),
                                       logprobs=[-0.1] * len(state[1]))
                comp = SimpleNamespace(token_ids=list(state[1]), logprobs=flat, finish_reason="length")
                outs.append(SimpleNamespace(request_id=rid, outputs=[comp], finished=True))
                del self.running[rid]
        return outs


class StandInLLM:
    def __init__(self, engine: StandInEngine):
        self.llm_engine = engine

    def collective_rpc(self, fn, args=()):
        return []


TYPES = vlb.VLLMTypes(SamplingParams=lambda **kw: SimpleNamespace(**kw),
                      TokensPrompt=lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids},
                      delta_kind="DELTA", final_kind="FINAL")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--step-ms", type=float, default=4.0)
    ap.add_argument("--python-per-request", type=int, default=20, help="loop iterations per request per step")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/results/async_path_overhead.json")
    a = ap.parse_args()
    settings = BackendSettings(model_path="stand-in", dtype="bfloat16", max_batch_size=a.requests, seed=0,
                               extra={"max_queue": 4 * a.requests})
    backend = vlb.VLLMBackend(settings, llm=StandInLLM(StandInEngine(a.step_ms / 1000, a.python_per_request)),
                              types=TYPES)
    reqs = [GenerationRequest((i + 1,), SamplingParams(max_tokens=a.tokens, seed=i)) for i in range(a.requests)]

    def agenerate():
        async def go():
            return await asyncio.gather(*(backend.agenerate(r) for r in reqs))

        return asyncio.run(go())

    paths = {"agenerate": agenerate, "generate": lambda: backend.generate(reqs)}
    seconds: dict[str, list[float]] = {k: [] for k in paths}
    steps: dict[str, list[int]] = {k: [] for k in paths}
    try:
        for f in paths.values():  # warm-up
            f()
        for rep in range(a.reps):
            for name in (list(paths) if rep % 2 == 0 else list(paths)[::-1]):
                s0, t = backend.stats()["engine_steps"], time.perf_counter()
                out = paths[name]()
                seconds[name].append(time.perf_counter() - t)
                steps[name].append(int(backend.stats()["engine_steps"] - s0))
                if any(len(o.token_ids) != a.tokens for o in out):
                    raise SystemExit(f"{name}: a request came back with the wrong length")
    finally:
        backend.close()
    base = statistics.median(seconds["generate"])
    rows = {k: {"seconds": v, "median_s": statistics.median(v), "fastest_s": min(v), "engine_steps": steps[k],
                "median_vs_generate": statistics.median(v) / base} for k, v in seconds.items()}
    res = {"requests": a.requests, "tokens": a.tokens, "step_ms": a.step_ms,
           "python_per_request": a.python_per_request, "reps": a.reps, "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    table = Table(title=f"{a.requests} requests x {a.tokens} tokens, stand-in step {a.step_ms} ms (CPU)")
    for col in ("path", "median s", "fastest s", "median / generate's", "extra ms (median)", "engine steps"):
        table.add_column(col)
    for k, r in rows.items():
        table.add_row(k, f"{r['median_s']:.4f}", f"{r['fastest_s']:.4f}", f"{r['median_vs_generate']:.3f}",
                      f"{(r['median_s'] - base) * 1000:.1f}", "/".join(map(str, sorted(set(r["engine_steps"])))))
    Console().print(table)


if __name__ == "__main__":
    main()
