"""The `arith-tool` suite: arithmetic and GSM-style word problems solved with the `python` tool.

Problems come from reasoning-gym's seeded generators; the ground truth is
`metadata.answer`, and the model answers `<answer>N</answer>` (see
prompts.py), which `math_equiv` scores (or `#### N` with `answer_format=hash`,
for `gsm8k_exact`).

Difficulty presets (every generator's reasoning-gym config):

* easy: `products` of two 3–4 digit numbers. Small models get these wrong in
  their head and right with one tool call, so the reward separates tool use
  within a few dozen GRPO steps. (The default one worked example, `shots=1`,
  is what makes a 0.5B model call the tool at all; see docs/tasks.md.)
* medium: products (3–5 digits), chain sums, mixed + - * expressions, GCDs,
  prime counts.
* hard: longer expressions, 4–6 digit products of up to 3 factors, gsm_symbolic
  word problems, decimal arithmetic, LCMs of up to 3 numbers, linear equations.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from toolrl.errors import ToolrlError
from toolrl.types import Task

from toolrl_env_code.env import ENV_NAME, PYTHON_TOOL
from toolrl_env_code.prompts import ANSWER_FORMS, ARITH_SYSTEM, ARITH_SYSTEM_NO_TOOL

GENERATORS: tuple[str, ...] = (
    "basic_arithmetic", "chain_sum", "products", "gsm_symbolic", "decimal_arithmetic", "decimal_chain_sum",
    "gcd", "lcm", "count_primes", "simple_equations",
)
"""reasoning-gym generators whose answers are numbers that the math rewards score."""

DIFFICULTIES: dict[str, dict[str, dict[str, Any]]] = {
    "easy": {
        "products": {"min_terms": 2, "max_terms": 2, "min_digits": 3, "max_digits": 4},
    },
    "medium": {
        "products": {"min_terms": 2, "max_terms": 2, "min_digits": 3, "max_digits": 5},
        "chain_sum": {"min_terms": 3, "max_terms": 5, "min_digits": 3, "max_digits": 4},
        "basic_arithmetic": {"min_terms": 3, "max_terms": 4, "min_digits": 2, "max_digits": 3,
                             "operators": ("+", "-", "*"), "allow_negation": False},
        "gcd": {"min_numbers": 2, "max_numbers": 2, "min_value": 100, "max_value": 10000},
        "count_primes": {"min_n": 100, "max_n": 3000},
    },
    "hard": {
        "basic_arithmetic": {"min_terms": 4, "max_terms": 6, "min_digits": 3, "max_digits": 5},
        "products": {"min_terms": 2, "max_terms": 3, "min_digits": 4, "max_digits": 6},
        "gsm_symbolic": {},
        "decimal_arithmetic": {},
        "lcm": {"min_numbers": 2, "max_numbers": 3, "min_value": 10, "max_value": 1000},
        "simple_equations": {"min_value": 10, "max_value": 1000},
    },
}

# Used when `generators=` names one that the chosen difficulty has no preset for.
FALLBACK_CONFIG: dict[str, dict[str, Any]] = {
    "basic_arithmetic": {"min_terms": 3, "max_terms": 5, "min_digits": 2, "max_digits": 4},
    "chain_sum": {"min_terms": 3, "max_terms": 6, "min_digits": 2, "max_digits": 4},
    "products": {"min_terms": 2, "max_terms": 2, "min_digits": 3, "max_digits": 4},
    "gcd": {"min_value": 100, "max_value": 10000},
    "lcm": {"min_value": 10, "max_value": 500},
    "count_primes": {"min_n": 100, "max_n": 5000},
}

OVERRIDABLE = ("min_digits", "max_digits", "min_terms", "max_terms")


def _error(what: str, fix: str) -> ToolrlError:
    return ToolrlError(what, where="toolrl data make arith-tool", fix=fix)


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, Sequence):
        return [str(v).strip() for v in value]
    raise _error(f"generators must be a comma-separated list, got {value!r}", "write generators=products,chain_sum")


def _configs(difficulty: str, generators: Any, overrides: dict[str, int]) -> dict[str, dict[str, Any]]:
    import dataclasses

    from reasoning_gym.factory import DATASETS

    if difficulty not in DIFFICULTIES:
        raise _error(f"unknown difficulty {difficulty!r}", f"use one of {', '.join(DIFFICULTIES)}")
    preset = DIFFICULTIES[difficulty]
    names = list(preset) if generators is None else _as_list(generators)
    if not names:
        raise _error("generators is empty", f"name at least one of {', '.join(GENERATORS)}")
    bad = [g for g in names if g not in GENERATORS]
    if bad:
        raise _error(f"unknown or unsupported generator(s) {bad}",
                     f"use any of {', '.join(GENERATORS)} (reasoning-gym generators with numeric answers)")
    configs: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for g in dict.fromkeys(names):
        cfg = dict(preset.get(g, FALLBACK_CONFIG.get(g, {})))
        fields = {f.name for f in dataclasses.fields(DATASETS[g][1])}
        for key, value in overrides.items():
            if key in fields:
                cfg[key] = value
                used.add(key)
        configs[g] = cfg
    unused = sorted(set(overrides) - used)
    if unused:
        raise _error(f"{', '.join(unused)} apply to none of the generators {list(configs)}",
                     "digit/term knobs apply to products, chain_sum, basic_arithmetic, decimal_chain_sum")
    return configs


def make_arith_tasks(n: int, seed: int = 0, *, difficulty: str = "easy", generators: Any = None,
                     min_digits: int | None = None, max_digits: int | None = None, min_terms: int | None = None,
                     max_terms: int | None = None, tool: bool = True, answer_format: str = "tag",
                     shots: int = 1) -> Iterator[Task]:
    """Yield `n` arithmetic tasks for the `python` environment.

    Args:
        difficulty: easy | medium | hard (which generators, and their ranges).
        generators: comma-separated reasoning-gym generators to mix uniformly (default: the difficulty's).
        min_digits, max_digits, min_terms, max_terms: override the ranges of the generators that have them.
        tool: False writes the same problems without the tool (a no-tool baseline for evaluation).
        answer_format: "tag" asks for `<answer>N</answer>` (math_equiv), "hash" for `#### N` (gsm8k_exact).
        shots: worked examples put before the question as earlier turns (a multiplication asked, the tool
            called, its output, the answer), with numbers that differ per task; 0 to 3. Default 1: with none,
            Qwen2.5-Coder-0.5B never calls the tool (0/16 sampled), with one some samples do
            (0.06 to 0.6 of them, depending on the problems; docs/tasks.md).
    """
    import reasoning_gym

    overrides = {k: v for k, v in {"min_digits": min_digits, "max_digits": max_digits, "min_terms": min_terms,
                                   "max_terms": max_terms}.items() if v is not None}
    for k, v in overrides.items():
        if not isinstance(v, int) or v < 1:
            raise _error(f"{k} must be a whole number >= 1, got {v!r}", f"e.g. {k}=3")
    if not isinstance(tool, bool):
        raise _error(f"tool must be true or false, got {tool!r}", "write tool=false")
    if not isinstance(shots, int) or isinstance(shots, bool) or not 0 <= shots <= 3:
        raise _error(f"shots must be 0, 1, 2 or 3, got {shots!r}", "e.g. shots=1")
    if answer_format not in ANSWER_FORMS:
        raise _error(f"unknown answer_format {answer_format!r}",
                     "use tag (<answer>N</answer>, for math_equiv) or hash (#### N, for gsm8k_exact)")
    configs = _configs(difficulty, generators, overrides)
    datasets = {}
    for g, cfg in configs.items():
        try:
            datasets[g] = reasoning_gym.create_dataset(g, size=n, seed=_derive(seed, g), **cfg)
        except (AssertionError, ValueError, TypeError) as exc:
            raise _error(f"reasoning-gym rejected the {g} config {cfg}: {exc}",
                         "check min_*/max_* (min must not exceed max)") from None
    rng = random.Random(f"toolrl-arith-tool-{seed}")
    names = list(configs)
    taken = dict.fromkeys(names, 0)
    system = (ARITH_SYSTEM if tool else ARITH_SYSTEM_NO_TOOL).format(answer_form=ANSWER_FORMS[answer_format])
    demo_rng = random.Random(f"toolrl-arith-tool-demos-{seed}")  # its own stream: shots do not change the problems
    for i in range(n):
        g = names[rng.randrange(len(names))]
        j = taken[g]
        taken[g] += 1
        item = datasets[g][j]
        demos = [m for _ in range(shots) for m in _demonstration(demo_rng, tool, answer_format)]
        yield Task(
            id=f"arith-tool-s{seed}-{i:05d}",
            messages=({"role": "system", "content": system}, *demos,
                      {"role": "user", "content": item["question"].strip()}),
            tools=(PYTHON_TOOL,) if tool else (),
            env=ENV_NAME if tool else None,
            metadata={
                "answer": str(item["answer"]),
                "answer_format": {"tag": "answer_tag", "hash": "hash"}[answer_format],
                "source": f"reasoning_gym/{g}",
                "source_index": j,
                "difficulty": difficulty,
                "suite": "arith-tool",
            },
        )


def _demonstration(rng: random.Random, tool: bool, answer_format: str) -> list[dict[str, str]]:
    """One worked example as chat turns: a 3-4 digit multiplication, solved with the tool (or directly)."""
    a, b = rng.randint(100, 9999), rng.randint(100, 9999)
    answer = f"<answer>{a * b}</answer>" if answer_format == "tag" else f"#### {a * b}"
    user = {"role": "user", "content": f"Solve the following multiplication: {a} * {b}. Give only the result as your "
                                       "final answer."}
    if not tool:
        return [user, {"role": "assistant", "content": answer}]
    call = '<tool_call>\n{"name": "python", "arguments": {"code": "print(%d * %d)"}}\n</tool_call>' % (a, b)
    return [user, {"role": "assistant", "content": call}, {"role": "tool", "content": str(a * b)},
            {"role": "assistant", "content": answer}]


def _derive(seed: int, name: str) -> int:
    return zlib.crc32(f"{seed}:{name}".encode()) & 0x7FFFFFFF
