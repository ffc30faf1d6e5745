"""Ask the served demo model one arithmetic question with the python tool, through the official openai client.

    python scripts/demo_query.py --base-url http://127.0.0.1:8765/v1 --model demo

If the model calls the tool, the call is executed in the Docker sandbox (the
same `toolrl-sandbox` pool the training environment uses), the result is sent
back, and the model's final answer is printed: the whole agent turn, served.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

PYTHON_TOOL = {
    "type": "function",
    "function": {
        "name": "python",
        "description": "Run Python code in a sandbox and return what it prints.",
        "parameters": {"type": "object", "properties": {"code": {"type": "string", "description": "Python code"}},
                       "required": ["code"]},
    },
}


def run_in_sandbox(code: str) -> str:
    from toolrl_sandbox import SandboxPool

    async def go() -> str:
        async with SandboxPool(size=1) as pool:
            r = await pool.run(code, timeout=10.0)
            return (r.stdout + r.stderr).strip() or f"(no output; status {r.status})"

    return asyncio.run(go())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tasks", required=True, help="A task file; the first task's messages are sent as they are.")
    a = ap.parse_args()
    from openai import OpenAI

    from toolrl.types import load_tasks

    task = load_tasks(a.tasks)[0]
    client = OpenAI(base_url=a.base_url, api_key="not-needed-on-loopback")
    messages = [dict(m) for m in task.messages]
    print(f"user: {messages[-1]['content']}   (expected answer: {task.metadata.get('answer')})")
    for _ in range(3):
        tools = [dict(t) for t in task.tools] or [PYTHON_TOOL]
        resp = client.chat.completions.create(model=a.model, messages=messages, tools=tools, temperature=0,
                                              max_tokens=160)
        msg = resp.choices[0].message
        if msg.content:
            print(f"assistant: {msg.content}")
        if not msg.tool_calls:
            break
        messages.append({"role": "assistant", "content": msg.content or "",
                         "tool_calls": [tc.model_dump() for tc in msg.tool_calls]})
        for tc in msg.tool_calls:
            args = json.loads(tc.function.arguments or "{}")
            print(f"assistant -> tool {tc.function.name}({json.dumps(args)})")
            result = run_in_sandbox(args.get("code", "")) if tc.function.name == "python" else "unknown tool"
            print(f"tool: {result}")
            messages.append({"role": "tool", "tool_call_id": tc.id, "content": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
