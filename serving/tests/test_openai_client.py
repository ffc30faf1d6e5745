"""The official `openai` client against a real server (uvicorn, 127.0.0.1, real SmolLM2)."""

from __future__ import annotations

import json

import openai
import pytest

pytestmark = pytest.mark.integration

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


def test_chat_completion(openai_client, model_id):
    r = openai_client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "Say hello."}],
                                              max_tokens=8, temperature=0)
    assert r.object == "chat.completion" and r.model == model_id
    (choice,) = r.choices
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_n_choices_and_seed_reproducible(openai_client, model_id):
    kwargs = dict(model=model_id, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8,
                  temperature=1.0, n=3, seed=1234)
    a = openai_client.chat.completions.create(**kwargs)
    b = openai_client.chat.completions.create(**kwargs)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]


def test_stop_string_is_cut(openai_client, model_id):
    msgs = [{"role": "user", "content": "Count: 1, 2, 3"}]
    free = openai_client.chat.completions.create(model=model_id, messages=msgs, max_tokens=12, temperature=0)
    text = free.choices[0].message.content
    assert len(text) > 3
    stop = text[2:4]  # a string we know the greedy answer contains
    cut = openai_client.chat.completions.create(model=model_id, messages=msgs, max_tokens=12, temperature=0,
                                                stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_streaming_matches_non_streaming(openai_client, model_id):
    msgs = [{"role": "user", "content": "Write one sentence about the sea."}]
    whole = openai_client.chat.completions.create(model=model_id, messages=msgs, max_tokens=16, temperature=0)
    stream = openai_client.chat.completions.create(model=model_id, messages=msgs, max_tokens=16, temperature=0,
                                                   stream=True, stream_options={"include_usage": True})
    parts, finish, usage, roles = [], None, None, []
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            if c.delta.content:
                parts.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert roles == ["assistant"]
    assert len(parts) > 1, "the answer should arrive in several pieces"
    assert "".join(parts) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_tool_calls_parsed_by_training_parser(openai_client, model_id, server, smollm2_path):
    """The model (few-shot) answers with a <tool_call> block; the server returns it as OpenAI tool_calls,
    exactly as the training parser reads the raw text."""
    from transformers import AutoTokenizer

    from toolrl.chat.parsers import get_parser
    from toolrl.chat.template import render_messages

    r = openai_client.chat.completions.create(model=model_id, messages=FEW_SHOT_TOOL_CALL, tools=[WEATHER_TOOL],
                                              max_tokens=32, temperature=0)
    (choice,) = r.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls, choice.message
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    assert isinstance(args, dict)
    # the same prompt as raw text (completions endpoint, token ids) and the training parser give the same call
    tok = AutoTokenizer.from_pretrained(str(smollm2_path))
    ids = render_messages(tok, FEW_SHOT_TOOL_CALL, [WEATHER_TOOL])
    raw = openai_client.completions.create(model=model_id, prompt=ids, max_tokens=32, temperature=0).choices[0].text
    parsed = get_parser("auto").parse(raw)
    assert [(c.name, dict(c.arguments)) for c in parsed.tool_calls] == [
        (c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls]


def test_tool_calls_streamed(openai_client, model_id):
    stream = openai_client.chat.completions.create(model=model_id, messages=FEW_SHOT_TOOL_CALL, tools=[WEATHER_TOOL],
                                                   max_tokens=32, temperature=0, stream=True)
    calls, content, finish = [], "", None
    for chunk in stream:
        for c in chunk.choices:
            content += c.delta.content or ""
            calls += c.delta.tool_calls or []
            finish = c.finish_reason or finish
    assert finish == "tool_calls"
    assert calls and calls[0].function.name and json.loads(calls[0].function.arguments) is not None
    assert "<tool_call>" not in content, "tool-call markup must not leak into the streamed content"


def test_tool_choice_none_returns_text(openai_client, model_id):
    r = openai_client.chat.completions.create(model=model_id, messages=FEW_SHOT_TOOL_CALL, tools=[WEATHER_TOOL],
                                              tool_choice="none", max_tokens=32, temperature=0)
    assert r.choices[0].message.tool_calls is None
    assert "<tool_call>" in r.choices[0].message.content


def test_text_completions_batch_of_prompts(openai_client, model_id):
    r = openai_client.completions.create(model=model_id, prompt=["Once upon a time", "The capital of France is"],
                                         max_tokens=6, n=2, temperature=0.7, seed=3)
    assert r.object == "text_completion"
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert all(c.text for c in r.choices)
    assert 4 <= r.usage.completion_tokens <= 4 * 6


def test_completions_stream(openai_client, model_id):
    whole = openai_client.completions.create(model=model_id, prompt="The sea is", max_tokens=10, temperature=0)
    parts = [c.choices[0].text for c in openai_client.completions.create(
        model=model_id, prompt="The sea is", max_tokens=10, temperature=0, stream=True) if c.choices]
    assert "".join(parts) == whole.choices[0].text


def test_models_list(openai_client, model_id):
    models = openai_client.models.list()
    assert [m.id for m in models.data] == [model_id]


def test_errors_in_openai_shape(openai_client, model_id, server):
    with pytest.raises(openai.NotFoundError) as e:
        openai_client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    for field, kwargs in [("max_tokens", {"max_tokens": 10_000}), ("n", {"n": 50}),
                          ("temperature", {"temperature": 7}), ("messages", {"messages": []})]:
        args = {"model": model_id, "messages": [{"role": "user", "content": "hi"}], **kwargs}
        with pytest.raises(openai.BadRequestError) as e:
            openai_client.chat.completions.create(**args)
        assert e.value.status_code == 400
        assert e.value.body["param"] == field, e.value.body
        assert e.value.body["type"] == "invalid_request_error"
    bad = openai.OpenAI(base_url=server.base_url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.body["code"] == "invalid_api_key"
    bad.close()


def test_long_prompt_refused(openai_client, model_id):
    with pytest.raises(openai.BadRequestError) as e:
        openai_client.chat.completions.create(model=model_id, max_tokens=4,
                                              messages=[{"role": "user", "content": "word " * 2000}])
    assert e.value.body["code"] == "context_length_exceeded" and e.value.body["param"] == "messages"
