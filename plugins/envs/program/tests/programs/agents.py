"""Agent programs used by the tests (plain openai clients; nothing here imports toolrl)."""

from __future__ import annotations

import asyncio
import time

FEW_SHOT_TOOL_CALL = [
    {"role": "user", "content": "What is the weather in Rome?"},
    {"role": "assistant",
     "content": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'},
    {"role": "tool", "content": "sunny, 25 C", "tool_call_id": "call_1"},
    {"role": "assistant", "content": "It is sunny and 25 C in Rome."},
    {"role": "user", "content": "What is the weather in Paris?"},
]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def _assistant(message):
    turn = {"role": "assistant", "content": message.content}
    if message.tool_calls:
        turn["tool_calls"] = [c.model_dump() for c in message.tool_calls]
    return turn


async def chat_three_turns(client, task):
    """Three calls on one growing conversation (each extends the last); returns the replies."""
    messages = list(task["messages"])
    replies = []
    for follow_up in ("Give one more.", "And a last one."):
        r = await client.chat.completions.create(model="policy", messages=messages, max_tokens=12)
        replies.append(r.choices[0].message.content)
        messages += [_assistant(r.choices[0].message), {"role": "user", "content": follow_up}]
    r = await client.chat.completions.create(model="policy", messages=messages, max_tokens=12)
    replies.append(r.choices[0].message.content)
    return replies


async def forgetful(client, task):
    """Two calls, then a third that drops the first exchange (a summarising agent): two segments."""
    messages = list(task["messages"])
    r1 = await client.chat.completions.create(model="policy", messages=messages, max_tokens=10)
    messages += [_assistant(r1.choices[0].message), {"role": "user", "content": "Another one."}]
    r2 = await client.chat.completions.create(model="policy", messages=messages, max_tokens=10)
    short = [messages[0], {"role": "user", "content": "Name a fruit."}]
    r3 = await client.chat.completions.create(model="policy", messages=short, max_tokens=10)
    return [r1.choices[0].message.content, r2.choices[0].message.content, r3.choices[0].message.content]


async def streamed_tool_call(client, task):
    """Streams a reply with tools (few-shot: the model calls get_weather), answers the call, asks again."""
    messages = list(FEW_SHOT_TOOL_CALL)
    stream = await client.chat.completions.create(model="policy", messages=messages, tools=[WEATHER_TOOL],
                                                  max_tokens=32, stream=True)
    content, calls, finish = "", [], None
    async for chunk in stream:
        for c in chunk.choices:
            content += c.delta.content or ""
            calls += c.delta.tool_calls or []
            finish = c.finish_reason or finish
    turn = {"role": "assistant", "content": content or None,
            "tool_calls": [{"id": c.id, "type": "function",
                            "function": {"name": c.function.name, "arguments": c.function.arguments}} for c in calls]}
    messages += [turn] + [{"role": "tool", "tool_call_id": c.id, "content": "rainy, 12 C"} for c in calls]
    r = await client.chat.completions.create(model="policy", messages=messages, tools=[WEATHER_TOOL], max_tokens=16)
    return {"finish": finish, "content": content, "calls": [(c.function.name, c.function.arguments) for c in calls],
            "answer": r.choices[0].message.content}


async def raises(client, task):
    await client.chat.completions.create(model="policy", messages=task["messages"], max_tokens=4)
    raise ValueError("the program broke on purpose")


async def hangs(client, task):
    await client.chat.completions.create(model="policy", messages=task["messages"], max_tokens=4)
    await asyncio.sleep(3600)


def blocks(client, task):
    """A synchronous program (openai.OpenAI client) that blocks its thread."""
    client.chat.completions.create(model="policy", messages=task["messages"], max_tokens=4)
    time.sleep(3600)


LEAKED: list[tuple[str, str]] = []


async def leaks_key(client, task):
    """Returns at once, leaving its key and URL behind (the test uses them after the episode)."""
    LEAKED.append((str(client.base_url), client.api_key))
    return "done"


async def tries_other_keys(client, task):
    """Waits for `leaks_key`'s episode to end, then calls with its key and with a made-up one; returns the
    status codes (and that its own key still works)."""
    import openai

    for _ in range(600):
        if LEAKED:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # the leaking episode has returned: its key is closed by now
    url, ended_key = LEAKED[-1]
    out = {}
    for name, key in (("ended", ended_key), ("foreign", "sk-toolrl-episode-made-up")):
        async with openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0) as other:
            try:
                await other.chat.completions.create(model="policy", messages=task["messages"], max_tokens=2)
                out[name] = 200
            except openai.APIStatusError as exc:
                out[name] = exc.status_code
                out[name + "_code"] = exc.code
    r = await client.chat.completions.create(model="policy", messages=task["messages"], max_tokens=2)
    out["own"] = 200 if r.choices else None
    return out


async def returns_a_set(client, task):
    """One call; returns a value that is not JSON (a set with the reply's length)."""
    r = await client.chat.completions.create(model="policy", messages=task["messages"], max_tokens=6)
    return {"short", len(r.choices[0].message.content or "")}
