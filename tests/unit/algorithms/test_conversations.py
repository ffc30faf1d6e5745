"""SFT/DPO data: JSONL formats, and encoding with the real SmolLM2 chat template (the RL rollout's code path)."""

import json

import pytest

from toolrl.errors import TaskFormatError
from toolrl.trainer.conversations import (
    PreferencePair,
    assistant_text,
    encode_conversation,
    encode_pair,
    load_conversations,
    load_pairs,
)

TOOLS = [{"type": "function", "function": {"name": "python", "description": "run code",
                                           "parameters": {"type": "object", "properties": {"code": {"type": "string"}}}}}]
CALL = '<tool_call>\n{"name": "python", "arguments": {"code": "print(123 * 456)"}}\n</tool_call>'
CONV = [
    {"role": "system", "content": "Use the tool."},
    {"role": "user", "content": "What is 123 * 456?"},
    {"role": "assistant", "content": CALL},
    {"role": "tool", "name": "python", "tool_call_id": "call_1_0", "content": "56088"},
    {"role": "assistant", "content": "<answer>56088</answer>"},
]


@pytest.fixture(scope="module")
def tok(smollm2_path):
    from toolrl.trainer.modeling import load_tokenizer

    return load_tokenizer(smollm2_path)


def test_encoding_matches_the_template_and_masks_only_assistant_tokens(tok):
    from toolrl.chat.template import ChatFormat

    fmt = ChatFormat.of(tok)
    t = encode_conversation(tok, CONV, TOOLS, example_id="x")
    assert list(t.prompt_ids) == fmt.prompt_ids(CONV[:2], TOOLS)  # the RL prompt, exactly
    full = tok.decode(list(t.prompt_ids) + list(t.response_ids), skip_special_tokens=False)
    assert full + fmt.turn_close_remainder(t.response_ids) == fmt.render_text(CONV, TOOLS)
    # the masked tokens are the two assistant turns, each closed by the end-of-turn token
    runs, cur = [], []
    for i, m in zip(t.response_ids, t.loss_mask):
        if m:
            cur.append(i)
        elif cur:
            runs, cur = runs + [cur], []
    runs.append(cur)
    eot = tok.convert_ids_to_tokens(fmt.info.end_of_turn_ids[0])
    assert [tok.decode(r, skip_special_tokens=False) for r in runs] == [CALL + eot, "<answer>56088</answer>" + eot]
    assert "56088" in tok.decode([i for i, m in zip(t.response_ids, t.loss_mask) if not m])  # the tool result


def test_structured_tool_calls_are_written_as_hermes_blocks():
    msg = {"role": "assistant", "content": "",
           "tool_calls": [{"id": "c", "type": "function",
                           "function": {"name": "python", "arguments": '{"code": "print(1)"}'}}]}
    assert assistant_text(msg) == '<tool_call>\n{"name": "python", "arguments": {"code": "print(1)"}}\n</tool_call>'
    assert assistant_text({"role": "assistant", "content": "hi"}) == "hi"


def test_pair_shares_the_prompt(tok):
    pair = PreferencePair("p", tuple(CONV[:2]), tuple(CONV[2:]), ({"role": "assistant", "content": "<answer>1</answer>"},),
                          tuple(TOOLS))
    chosen, rejected = encode_pair(tok, pair)
    assert chosen.prompt_ids == rejected.prompt_ids
    assert sum(rejected.loss_mask) == len(rejected.response_ids)  # one assistant turn, all trained on


def test_conversation_needs_a_prompt_before_the_assistant(tok):
    with pytest.raises(TaskFormatError, match="prompt messages"):
        encode_conversation(tok, [{"role": "assistant", "content": "hi"}])
    with pytest.raises(TaskFormatError, match="consecutive assistant"):
        encode_conversation(tok, [CONV[1], {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}])


def test_loading_names_the_line_and_the_problem(tmp_path):
    p = tmp_path / "sft.jsonl"
    p.write_text(json.dumps({"id": "a", "messages": CONV}) + "\n" + json.dumps({"id": "b", "messages": CONV[:2]}) + "\n")
    with pytest.raises(TaskFormatError) as exc:
        load_conversations(p)
    assert "sft.jsonl:2" in str(exc.value) and "no assistant message" in str(exc.value)
    p.write_text(json.dumps({"id": "a", "messages": CONV, "extra": 1}) + "\n")
    with pytest.raises(TaskFormatError, match="unknown field"):
        load_conversations(p)
    p.write_text(json.dumps({"id": "a", "messages": CONV}) + "\n")
    assert load_conversations(p)[0].messages[2]["content"] == CALL

    q = tmp_path / "pairs.jsonl"
    q.write_text(json.dumps({"prompt": CONV[:2], "chosen": CONV[2:], "rejected": CONV[1:]}) + "\n")
    with pytest.raises(TaskFormatError, match="'rejected' must start with the assistant"):
        load_pairs(q)
    q.write_text(json.dumps({"prompt": CONV[:2], "chosen": CONV[2:], "rejected": [CONV[4]]}) + "\n")
    assert load_pairs(q)[0].id == "0"
    with pytest.raises(TaskFormatError, match="does not exist"):
        load_pairs(tmp_path / "missing.jsonl")
