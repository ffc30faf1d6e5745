"""The `gsm` suite: GSM-style word problems (reasoning-gym's `gsm_symbolic`) for the `python` tool.

The shape of the GRPO-on-GSM8K recipe: the model is asked to end with the
answer after four hashes (`#### 72`), scored by `gsm8k_exact`
(toolrl-rewards-math) against `metadata.answer`; here it may also run Python
through the `python` tool. The problems are GSM8K templates with fresh numbers
(reasoning-gym regenerates them from a seed), so no dataset download is
needed; for GSM8K itself, convert its parquet with `toolrl data convert`
(docs/tasks.md).

    toolrl data make gsm --n 200 --seed 0 --out data/gsm_train.jsonl
    toolrl data make gsm --n 50 --seed 1 --out data/gsm_eval.jsonl tool=false   # a no-tool baseline
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from toolrl.types import Task

from toolrl_env_code.arith import make_arith_tasks


def make_gsm_tasks(n: int, seed: int = 0, *, tool: bool = True, shots: int = 1) -> Iterator[Task]:
    """Yield `n` gsm_symbolic problems that ask for `#### N`.

    Args:
        tool: offer the `python` tool (False: the same problems without it).
        shots: worked examples (a tool call and its `#### N` answer) before the question, 0 to 3.
    """
    for task in make_arith_tasks(n, seed, generators="gsm_symbolic", answer_format="hash", tool=tool, shots=shots):
        index = task.id.rsplit("-", 1)[1]
        yield dataclasses.replace(task, id=f"gsm-s{seed}-{index}",
                                  metadata={**task.metadata, "suite": "gsm", "difficulty": "gsm_symbolic"})
