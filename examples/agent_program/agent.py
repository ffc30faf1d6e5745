"""A small tool-using agent written with the plain `openai` client: its own calculator and its own loop.

Nothing here knows about toolrl. Point it at any OpenAI-compatible server and it runs:

    import asyncio, openai
    client = openai.AsyncOpenAI(base_url="http://127.0.0.1:8000/v1", api_key="...")
    print(asyncio.run(run(client, {"messages": [{"role": "user", "content": "What is 1234 * 5678?"}]})))

`toolrl train` runs it as `env: program` (config.yaml): toolrl passes a client bound to its
recording rollout endpoint, trains on the recorded tokens, and rewards the returned answer.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from typing import Any

MODEL = "policy"  # the name toolrl's rollout endpoint serves (env_args.model changes it)
MAX_STEPS = 3
SYSTEM = ("You are a careful assistant. Use the calculator tool for every calculation instead of computing in "
          "your head. When you have the result, reply with the final answer alone inside answer tags, for "
          "example: <answer>7006652</answer>")
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression exactly (integers, + - * / and parentheses).",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "e.g. 1234 * 5678"}},
            "required": ["expression"],
        },
    },
}
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.USub: operator.neg, ast.UAdd: operator.pos}


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.operand))
    raise ValueError("only numbers, + - * / and parentheses are allowed")


def calculator(expression: str) -> str:
    """The tool: the value of an arithmetic expression, or what was wrong with it."""
    try:
        value = _eval(ast.parse(str(expression), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, TypeError) as exc:
        return f"error: {exc}"
    return str(int(value)) if float(value).is_integer() else str(value)


def final_answer(text: str | None) -> int | None:
    """The integer inside <answer>...</answer>, or None."""
    m = re.search(r"<answer>\s*(-?[\d,]+)\s*</answer>", text or "")
    return int(m.group(1).replace(",", "")) if m else None


# one worked example, so that even the untrained model sometimes calls the tool (and GRPO has a signal)
EXAMPLE = [
    {"role": "user", "content": "What is 2201 * 6864?"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "call_0", "type": "function", "function": {
        "name": "calculator", "arguments": json.dumps({"expression": "2201 * 6864"})}}]},
    {"role": "tool", "tool_call_id": "call_0", "content": "15107664"},
    {"role": "assistant", "content": "<answer>15107664</answer>"},
]


async def run(client: Any, task: dict[str, Any]) -> int | None:
    """Answer the task's question with the calculator; return the final answer (None if there is none)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, *EXAMPLE]
    messages += [m for m in task["messages"] if m["role"] != "system"]
    for _ in range(MAX_STEPS):
        response = await client.chat.completions.create(model=MODEL, messages=messages, tools=[CALCULATOR])
        message = response.choices[0].message
        calls = message.tool_calls or []
        turn: dict[str, Any] = {"role": "assistant", "content": message.content}
        if calls:
            turn["tool_calls"] = [c.model_dump() for c in calls]
        messages.append(turn)
        if not calls:
            return final_answer(message.content)
        for call in calls:
            try:
                args = json.loads(call.function.arguments or "{}")
            except json.JSONDecodeError:
                args = {}
            result = calculator(args.get("expression", "")) if call.function.name == "calculator" \
                else f"error: unknown tool {call.function.name!r}"
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    return None
