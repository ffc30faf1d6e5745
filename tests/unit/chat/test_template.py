"""Chat-template rendering with the real SmolLM2 and Qwen2.5-Coder tokenizers (tokenizers only: fast)."""

import copy

import pytest
from transformers import AutoTokenizer

from toolrl.chat.template import ChatFormat, TemplateError, render_messages, render_prompt, tools_system_text
from toolrl.types import Task

TOOLS = [{"type": "function", "function": {
    "name": "calculator", "description": "Evaluate arithmetic",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}]
PROMPT = [{"role": "system", "content": "Use the calculator."}, {"role": "user", "content": "What is 17*23+58?"}]


@pytest.fixture(scope="module")
def smol_tok(smollm2_path):
    return AutoTokenizer.from_pretrained(smollm2_path)


@pytest.fixture(scope="module")
def qwen_tok(qwen05_path):
    return AutoTokenizer.from_pretrained(qwen05_path)


@pytest.fixture(params=["smol", "qwen"])
def tok(request, smol_tok, qwen_tok):
    return smol_tok if request.param == "smol" else qwen_tok


def test_template_analysis_of_both_models(smol_tok, qwen_tok):
    smol, qwen = ChatFormat.of(smol_tok).info, ChatFormat.of(qwen_tok).info
    assert smol.uses_tools is False and qwen.uses_tools is True  # SmolLM2's template ignores tools=
    assert smol.turn_close == qwen.turn_close == "<|im_end|>\n"
    assert smol.end_of_turn_ids[0] == smol_tok.convert_tokens_to_ids("<|im_end|>")
    assert qwen.end_of_turn_ids[0] == qwen_tok.convert_tokens_to_ids("<|im_end|>")
    assert ChatFormat.of(smol_tok) is ChatFormat.of(smol_tok)  # analysed once per tokenizer


def test_smollm2_gets_tool_schemas_in_the_system_prompt(smol_tok):
    text = ChatFormat.of(smol_tok).render_text(PROMPT, TOOLS, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nUse the calculator.\n\n# Tools")
    assert '"name": "calculator"' in text and "<tool_call>" in text
    # without a system message, one is created (and replaces SmolLM2's default system prompt)
    text2 = ChatFormat.of(smol_tok).render_text(PROMPT[1:], TOOLS)
    assert text2.startswith("<|im_start|>system\n# Tools") and "SmolLM, trained by Hugging Face" not in text2
    # no tools, no block
    assert "# Tools" not in ChatFormat.of(smol_tok).render_text(PROMPT, None)


def test_qwen_renders_tools_itself(qwen_tok):
    text = ChatFormat.of(qwen_tok).render_text(PROMPT, TOOLS, add_generation_prompt=True)
    assert text.count('"name": "calculator"') == 1
    assert tools_system_text(TOOLS) not in text
    assert text.endswith("<|im_start|>assistant\n")


def test_render_prompt_is_render_messages_of_the_task(tok):
    task = Task(id="t", messages=tuple(PROMPT), tools=tuple(TOOLS))
    ids = render_prompt(tok, task)
    assert ids == render_messages(tok, PROMPT, TOOLS)
    assert tok.decode(ids) == ChatFormat.of(tok).render_text(PROMPT, TOOLS, add_generation_prompt=True)


@pytest.mark.parametrize("n_tools", [1, 2])
def test_incremental_ids_equal_the_full_rendering(tok, n_tools):
    """prompt + sampled ids + tool suffix + sampled ids == the template's rendering of the whole conversation."""
    fmt = ChatFormat.of(tok)
    eot = fmt.info.end_of_turn_ids[0]
    a1 = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "17*23"}}\n</tool_call>'
    tool_msgs = [{"role": "tool", "content": str(391 + i), "tool_call_id": f"c{i}"} for i in range(n_tools)]
    a2 = "The answer is 449."
    ids = fmt.prompt_ids(PROMPT, TOOLS)
    sampled1 = fmt.encode(a1) + [eot]  # as if sampled, ending on <|im_end|>
    ids += sampled1
    ids += fmt.tool_suffix_ids(sampled1, tool_msgs, TOOLS)
    ids += fmt.encode(a2) + [eot]
    msgs = [*PROMPT, {"role": "assistant", "content": a1}, *tool_msgs, {"role": "assistant", "content": a2}]
    full = fmt.encode(fmt.render_text(msgs, TOOLS))
    assert full[: len(ids)] == ids
    assert tok.decode(full[len(ids):]) == "\n"  # only the part of the end-of-turn the model never samples


def test_tool_suffix_without_generation_prompt_ends_the_episode_cleanly(tok):
    fmt = ChatFormat.of(tok)
    sampled = fmt.encode("x") + [fmt.info.end_of_turn_ids[0]]
    with_gen = tok.decode(fmt.tool_suffix_ids(sampled, [{"role": "tool", "content": "5"}], TOOLS))
    without = tok.decode(fmt.tool_suffix_ids(sampled, [{"role": "tool", "content": "5"}], TOOLS,
                                             add_generation_prompt=False))
    assert with_gen.endswith("<|im_start|>assistant\n") and with_gen.startswith("\n<|im_start|>")
    assert without.endswith("<|im_end|>\n") and with_gen.startswith(without)


def test_turn_cut_by_another_token_gets_the_whole_end_of_turn(qwen_tok):
    fmt = ChatFormat.of(qwen_tok)
    endoftext = qwen_tok.convert_tokens_to_ids("<|endoftext|>")
    assert fmt.turn_close_remainder([11, endoftext]) == "<|im_end|>\n"
    assert fmt.turn_close_remainder([11, fmt.info.end_of_turn_ids[0]]) == "\n"


def _with_template(tok, template):
    t = copy.deepcopy(tok)
    t.chat_template = template
    return t


def test_non_append_only_template_is_refused_with_a_fix(smol_tok):
    # the header counts the messages: every new message rewrites the start of the text
    tmpl = ("{{ messages|length }} messages\n{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
            "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    fmt = ChatFormat.of(_with_template(smol_tok, tmpl))
    with pytest.raises(TemplateError) as err:
        fmt.tool_suffix_text([{"role": "tool", "content": "1"}])
    assert "append-only" in str(err.value) and "toolrl doctor --model" in str(err.value)


def test_template_without_tool_role_gets_tool_results_as_user_messages(smol_tok):
    tmpl = ("{% for m in messages %}{% if m.role not in ['system', 'user', 'assistant'] %}"
            "{{ raise_exception('roles must be system, user or assistant') }}{% endif %}"
            "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    fmt = ChatFormat.of(_with_template(smol_tok, tmpl))
    assert fmt.info.tool_role is False
    text = fmt.tool_suffix_text([{"role": "tool", "content": "391"}])
    assert text == "<|im_start|>user\n<tool_response>\n391\n</tool_response><|im_end|>\n<|im_start|>assistant\n"


def test_tokenizer_without_chat_template(smol_tok):
    t = copy.deepcopy(smol_tok)
    t.chat_template = None
    with pytest.raises(TemplateError) as err:
        ChatFormat.of(t)
    assert "no chat template" in str(err.value)
