"""The `memory` task suite: multi-session customer-support dialogues.

A simulated customer talks to support over several earlier sessions, stating
facts (their phone, city, allergy, order number …) among small talk. Those
sessions go into `env_args.sessions` and are loaded into the memory store
when the episode starts. The task's user message is a new request that needs
one of the facts (never naming it); the agent should `recall` it and answer
with it. With `update_prob > 0` the fact sometimes changes in a later session,
and only the newest value is right.

Metadata for rewards:
    relevant_memory_ids: ids of the notes that hold the needed fact (the `memory_recall` reward).
    keywords: words a good answer contains (the fact's value; for `keyword_recall`).
    reference: a reference answer (for `bleu2`).
    answer: the fact's value.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import Any

from toolrl.errors import ToolrlError
from toolrl.types import Task

from toolrl_env_memory.env import ENV_NAME, TOOLS
from toolrl_env_memory.facts import FILLERS, NAMES, SLOTS, Slot

SYSTEM_PROMPT = """You are a customer-support assistant for an online shop. You have a long-term memory of this \
customer's earlier conversations, searchable with tools:
- recall(query, k): returns the k notes from memory most similar to the query.
- remember(text): saves a new note about the customer.
To call a tool, write exactly:
<tool_call>
{{"name": "recall", "arguments": {{"query": "the customer's phone model", "k": 3}}}}
</tool_call>
When a request depends on something the customer told you before, recall it first; if notes disagree, the most \
recent session wins. Then answer in one or two sentences that state the remembered detail.
The customer is {name}. Today is {today}."""

DIFFICULTIES: dict[str, dict[str, Any]] = {
    # sessions: (min, max); facts: distinct facts stated in all sessions; fillers per session
    "easy": {"sessions": (1, 2), "facts": 3, "fillers": 1, "update_prob": 0.0},
    "medium": {"sessions": (2, 3), "facts": 5, "fillers": 2, "update_prob": 0.2},
    "hard": {"sessions": (3, 5), "facts": 8, "fillers": 3, "update_prob": 0.5},
}


def _check(name: str, value: Any, ok: bool, fix: str) -> None:
    if not ok:
        raise ToolrlError(f"memory suite: bad {name}={value!r}", where="toolrl data make memory", fix=fix)


def make_memory_tasks(n: int, seed: int = 0, *, difficulty: str = "medium", sessions: int | None = None,
                      facts: int | None = None, fillers: int | None = None, update_prob: float | None = None,
                      k: int | None = None) -> Iterator[Task]:
    """Yield `n` memory tasks.

    Args:
        difficulty: easy | medium | hard (sets the four knobs below; each can be overridden).
        sessions: earlier sessions per customer (fixed number; default from difficulty).
        facts: distinct facts the customer states across those sessions (1 to 16).
        fillers: small-talk lines per session.
        update_prob: chance that the needed fact is changed in a later session.
        k: if set, written to env_args as the default number of notes recall returns.
    """
    _check("difficulty", difficulty, difficulty in DIFFICULTIES, f"use one of {', '.join(DIFFICULTIES)}")
    preset = DIFFICULTIES[difficulty]
    if sessions is not None:
        _check("sessions", sessions, isinstance(sessions, int) and 1 <= sessions <= 20, "use 1 to 20")
    n_facts = preset["facts"] if facts is None else facts
    _check("facts", n_facts, isinstance(n_facts, int) and 1 <= n_facts <= len(SLOTS), f"use 1 to {len(SLOTS)}")
    n_fill = preset["fillers"] if fillers is None else fillers
    _check("fillers", n_fill, isinstance(n_fill, int) and 0 <= n_fill <= len(FILLERS), f"use 0 to {len(FILLERS)}")
    p_update = preset["update_prob"] if update_prob is None else update_prob
    _check("update_prob", p_update, isinstance(p_update, (int, float)) and 0 <= p_update <= 1, "use 0 to 1")
    if k is not None:
        _check("k", k, isinstance(k, int) and 1 <= k <= 10, "use 1 to 10")
    rng = random.Random(f"toolrl-memory-{seed}")
    for i in range(n):
        n_sessions = sessions if sessions is not None else rng.randint(*preset["sessions"])
        yield _make_task(rng, i, seed, difficulty, n_sessions, n_facts, n_fill, float(p_update), k)


def _make_task(rng: random.Random, index: int, seed: int, difficulty: str, n_sessions: int, n_facts: int,
               n_fill: int, p_update: float, k: int | None) -> Task:
    name = rng.choice(NAMES)
    user = f"{name.lower()}-{seed}-{index}"
    slots: list[Slot] = rng.sample(SLOTS, n_facts)
    target = slots[0]
    values = {s.name: rng.choice(s.values) for s in slots}
    # notes[session] = list of (text, tag); the target is stated early, the others anywhere
    notes: list[list[tuple[str, str | None]]] = [[] for _ in range(n_sessions)]
    early = max(1, (n_sessions + 1) // 2)
    target_session = rng.randrange(early)
    notes[target_session].append((rng.choice(target.statements).format(v=values[target.name]), "target"))
    for s in slots[1:]:
        notes[rng.randrange(n_sessions)].append((rng.choice(s.statements).format(v=values[s.name]), None))
    answer = values[target.name]
    updated = False
    if p_update > 0 and target_session + 1 < n_sessions and rng.random() < p_update:
        answer = rng.choice([v for v in target.values if v != values[target.name]])
        later = rng.randrange(target_session + 1, n_sessions)
        notes[later].append((rng.choice(target.updates).format(v=answer), "update"))
        updated = True
    for sess in notes:
        sess.extend((f, None) for f in rng.sample(FILLERS, n_fill))
        rng.shuffle(sess)
    start = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(200))
    dates, day = [], start
    for _ in range(n_sessions):
        dates.append(day.isoformat())
        day += dt.timedelta(days=rng.randint(3, 40))
    today = day.isoformat()
    env_sessions = [{"date": d, "notes": [text for text, _ in sess]} for d, sess in zip(dates, notes)]
    want = "update" if updated else "target"
    relevant = [f"s{si + 1}-{j}" for si, sess in enumerate(notes) for j, (_, tag) in enumerate(sess) if tag == want]
    question = rng.choice(target.questions)
    env_args: dict[str, Any] = {"user": user, "sessions": env_sessions}
    if k is not None:
        env_args["k"] = k
    return Task(
        id=f"memory-s{seed}-{index:05d}",
        messages=(
            {"role": "system", "content": SYSTEM_PROMPT.format(name=name, today=today)},
            {"role": "user", "content": question},
        ),
        tools=TOOLS,
        env=ENV_NAME,
        env_args=env_args,
        metadata={
            "answer": answer,
            "keywords": [answer],
            "reference": target.reference.format(v=answer),
            "relevant_memory_ids": relevant,
            "slot": target.name,
            "updated": updated,
            "difficulty": difficulty,
            "suite": "memory",
        },
    )
