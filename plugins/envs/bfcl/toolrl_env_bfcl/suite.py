"""The `bfcl` task suite: BFCL v4 function-calling questions as toolrl tasks.

Single-turn categories (simple, parallel, multiple, parallel_multiple, the
live_* ones, irrelevance) become one task each, in `ast` mode, with BFCL's
possible answers in `metadata.ground_truth` for `bfcl_ast`.

A multi-turn conversation of N user turns becomes N tasks: the task for turn
t shows turns 0..t-1 as history (the user's requests, the ground-truth calls
as the assistant's `<tool_call>` blocks, and their real results as tool
messages), and asks turn t. The environment replays those calls at reset so
its state matches the history; `metadata.ground_truth` holds turn t's calls
for `bfcl_state`.

`split` holds out a fixed 20% of BFCL entries (by a hash of the entry id, so
all turns of a conversation fall on the same side): train on `split=train`,
evaluate on `split=test`.
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from toolrl.errors import ToolrlError
from toolrl.types import Task

from toolrl_env_bfcl.bfcl_data import CATEGORIES, MULTI_TURN, class_functions, load_category, to_tool
from toolrl_env_bfcl.env import ENV_NAME
from toolrl_env_bfcl.multi_turn import World, parse_call, result_text

SYSTEM_PROMPT = """You are an expert at composing function calls. You are given a question and a set of functions. \
Call the function(s) that answer the question, with arguments taken from the question. To call a function, write \
exactly:
<tool_call>
{"name": "<function name>", "arguments": {"<argument>": <value>}}
</tool_call>
Write one block per call; for several independent calls, write several blocks in the same reply. If none of the \
functions fits the question, say so and call nothing."""

MULTI_TURN_SYSTEM = """You are an assistant that fulfils the user's requests by calling the functions you are \
given; their effects persist for the whole conversation. To call a function, write exactly:
<tool_call>
{"name": "<function name>", "arguments": {"<argument>": <value>}}
</tool_call>
You may write several blocks in one reply; results come back in the next message. When the current request is done, \
reply briefly without a call."""

DEFAULT_CATEGORIES = ("simple", "parallel", "multiple", "parallel_multiple", "multi_turn")
TEST_FRACTION = 0.2


def in_split(bfcl_id: str, split: str) -> bool:
    if split == "all":
        return True
    test = (zlib.crc32(bfcl_id.encode()) % 1000) < TEST_FRACTION * 1000
    return test if split == "test" else not test


def _categories(value: Any) -> list[str]:
    names = [c.strip() for c in value.split(",") if c.strip()] if isinstance(value, str) else \
        [str(c) for c in value] if isinstance(value, Sequence) else []
    bad = [c for c in names if c not in CATEGORIES]
    if not names or bad:
        raise ToolrlError(f"bad BFCL categories {bad or value!r}", where="toolrl data make bfcl",
                          fix=f"use a comma-separated list of: {', '.join(CATEGORIES)}")
    return list(dict.fromkeys(names))


def hermes_block(name: str, arguments: Mapping[str, Any]) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": dict(arguments)}, ensure_ascii=False) + \
        "\n</tool_call>"


def _user_messages(turn: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": m["role"], "content": m["content"]} for m in turn]


def single_turn_task(entry: Mapping[str, Any], category: str) -> Task:
    turn = entry["question"][0]
    system = [m for m in turn if m["role"] == "system"]
    rest = [m for m in turn if m["role"] != "system"]
    sys_text = SYSTEM_PROMPT + ("\n\n" + "\n".join(m["content"] for m in system) if system else "")
    return Task(
        id=f"bfcl-{entry['id']}",
        messages=({"role": "system", "content": sys_text}, *_user_messages(rest)),
        tools=tuple(to_tool(f) for f in entry["function"]),
        env=ENV_NAME,
        env_args={"mode": "ast"},
        metadata={"ground_truth": entry["ground_truth"], "category": category, "bfcl_id": entry["id"],
                  "suite": "bfcl"},
    )


def multi_turn_tasks(entry: Mapping[str, Any], category: str) -> list[Task]:
    """One task per user turn of a multi-turn entry."""
    classes = list(entry["involved_classes"])
    excluded = set(entry.get("excluded_function") or ())
    docs = [f for c in classes for f in class_functions(c) if f["name"] not in excluded]
    tools = tuple(to_tool(f) for f in docs)
    functions = [f["name"] for f in docs]
    config = {c: entry["initial_config"][c] for c in classes if c in entry["initial_config"]}
    world = World(classes, config)  # plays the ground truth to write the history
    history: list[dict[str, Any]] = [{"role": "system", "content": MULTI_TURN_SYSTEM}]
    replay: list[str] = []
    tasks = []
    for t, (turn, answer) in enumerate(zip(entry["question"], entry["ground_truth"])):
        if not turn:
            continue
        history.extend(_user_messages(turn))
        tasks.append(Task(
            id=f"bfcl-{entry['id']}-turn{t}",
            messages=tuple(dict(m) for m in history),
            tools=tools,
            env=ENV_NAME,
            env_args={"mode": "multi_turn", "involved_classes": classes, "initial_config": config,
                      "replay": list(replay), "functions": functions},
            metadata={"ground_truth": list(answer), "category": category, "bfcl_id": entry["id"], "turn": t,
                      "suite": "bfcl"},
        ))
        if answer:
            blocks, results = [], []
            for text in answer:
                name, args, kwargs = parse_call(text)
                blocks.append(hermes_block(name, world.keyword_args(name, args, kwargs)))
                results.append(result_text(world.call(name, args, kwargs)))
            history.append({"role": "assistant", "content": "\n".join(blocks)})
            history.extend({"role": "tool", "content": r} for r in results)
        replay.extend(answer)
    return tasks


def make_bfcl_tasks(n: int, seed: int = 0, *, categories: Any = ",".join(DEFAULT_CATEGORIES), split: str = "train",
                    turns: str = "all") -> Iterator[Task]:
    """Yield `n` BFCL tasks drawn without replacement from the chosen categories.

    Args:
        categories: comma-separated, any of simple, parallel, multiple, parallel_multiple, live_simple,
            live_multiple, live_parallel, live_parallel_multiple, irrelevance, multi_turn.
        split: train (80% of entries), test (the other 20%), or all.
        turns: multi-turn only: all (one task per turn) or first (the first turn of each conversation).
    """
    cats = _categories(categories)
    if split not in ("train", "test", "all"):
        raise ToolrlError(f"bad split {split!r}", where="toolrl data make bfcl", fix="use train, test or all")
    if turns not in ("all", "first"):
        raise ToolrlError(f"bad turns {turns!r}", where="toolrl data make bfcl", fix="use all or first")
    # the pool: (category, entry, turn index or None); turns are expanded lazily (the history needs a world)
    pool: list[tuple[str, Mapping[str, Any], int | None]] = []
    for c in cats:
        for entry in load_category(c):
            if not in_split(entry["id"], split):
                continue
            if c in MULTI_TURN:
                count = 1 if turns == "first" else len(entry["question"])
                pool.extend((c, entry, t) for t in range(count) if entry["question"][t])
            else:
                pool.append((c, entry, None))
    if n > len(pool):
        raise ToolrlError(f"only {len(pool)} BFCL tasks in categories {cats} (split={split}), {n} asked for",
                          where="toolrl data make bfcl",
                          fix=f"use --n {len(pool)} or less, or add categories"
                          + (", or use split=all" if split != "all" else ""))
    random.Random(f"toolrl-bfcl-{seed}").shuffle(pool)
    expanded: dict[str, list[Task]] = {}
    for c, entry, t in pool[:n]:
        if t is None:
            yield single_turn_task(entry, c)
            continue
        if entry["id"] not in expanded:
            expanded[entry["id"]] = multi_turn_tasks(entry, c)
        yield next(task for task in expanded[entry["id"]] if task.metadata["turn"] == t)
