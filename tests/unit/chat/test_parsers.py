"""Tool-call parsers: the forms models emit, the malformed ones, and the round trip."""

import pytest

from toolrl.chat.parsers import AutoParser, HermesParser, JsonBlockParser, get_parser
from toolrl.errors import UnknownNameError
from toolrl.hookspecs import hookimpl
from toolrl.types import ToolCall

CALL = '{"name": "calculator", "arguments": {"expression": "17*23"}}'


def test_hermes_single_call_with_content_around():
    turn = HermesParser().parse(f"Let me compute.\n<tool_call>\n{CALL}\n</tool_call>")
    assert turn.content == "Let me compute."
    assert [(c.name, dict(c.arguments)) for c in turn.tool_calls] == [("calculator", {"expression": "17*23"})]
    assert turn.tool_calls[0].raw.startswith("<tool_call>") and turn.tool_calls[0].raw.endswith("</tool_call>")
    assert not turn.malformed


def test_hermes_several_calls_in_order():
    text = (f"<tool_call>{CALL}</tool_call>\n"
            '<tool_call>{"name": "search", "arguments": {"q": "x"}}</tool_call>')
    turn = HermesParser().parse(text)
    assert [c.name for c in turn.tool_calls] == ["calculator", "search"]
    assert turn.content == ""


def test_hermes_unclosed_block_with_complete_json_is_a_call():
    turn = HermesParser().parse(f"<tool_call>\n{CALL}\n")
    assert [c.name for c in turn.tool_calls] == ["calculator"]
    assert not turn.malformed


def test_hermes_unclosed_block_with_cut_json_is_malformed():
    turn = HermesParser().parse('<tool_call>\n{"name": "calculator", "argu')
    assert not turn.tool_calls
    [bad] = turn.malformed
    assert "not closed" in bad.reason and "JSON" in bad.reason


@pytest.mark.parametrize(
    "body, reason",
    [
        ('{"name": "calc", "arguments": {"x": 1+2}}', "the JSON is invalid"),
        ('{"arguments": {"x": 1}}', "no 'name'"),
        ('{"name": "calc", "arguments": [1, 2]}', "'arguments' must be a JSON object, got a JSON array"),
        ('{"name": "calc", "arguments": "{not json"}', "'arguments' is a string that is not valid JSON"),
        ('["calc"]', "expected a JSON object"),
        ("", "empty"),
    ],
)
def test_hermes_malformed_calls_say_what_is_wrong(body, reason):
    turn = HermesParser().parse(f"ok <tool_call>{body}</tool_call>")
    assert not turn.tool_calls
    [bad] = turn.malformed
    assert reason in bad.reason
    msg = bad.message()
    assert reason in msg and "<tool_call>" in msg and '"arguments"' in msg


def test_hermes_accepts_string_arguments_parameters_key_and_fenced_body():
    turn = HermesParser().parse(
        '<tool_call>{"name": "a", "arguments": "{\\"x\\": 1}"}</tool_call>'
        '<tool_call>{"name": "b", "parameters": {"y": 2}}</tool_call>'
        '<tool_call>```json\n{"name": "c", "arguments": {}}\n```</tool_call>'
    )
    assert [(c.name, dict(c.arguments)) for c in turn.tool_calls] == [("a", {"x": 1}), ("b", {"y": 2}), ("c", {})]


def test_hermes_text_without_calls():
    turn = HermesParser().parse("The answer is 391.")
    assert turn.content == "The answer is 391." and not turn.has_calls


def test_json_block_fenced_call_as_qwen_coder_writes_it():
    text = 'I will use the tool.\n```json\n{\n  "name": "calculator",\n  "arguments": {\n    "expression": "17*23"\n  }\n}\n```'
    turn = JsonBlockParser().parse(text)
    assert [(c.name, dict(c.arguments)) for c in turn.tool_calls] == [("calculator", {"expression": "17*23"})]
    assert turn.content == "I will use the tool."


def test_json_block_list_of_calls_and_bare_reply():
    turn = JsonBlockParser().parse('```json\n[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"k": 1}}]\n```')
    assert [c.name for c in turn.tool_calls] == ["a", "b"]
    bare = JsonBlockParser().parse(f"  {CALL}  ")
    assert [c.name for c in bare.tool_calls] == ["calculator"] and bare.content == ""


def test_json_block_ordinary_code_is_content_not_a_call():
    text = 'Here is data:\n```json\n{"city": "Paris", "population": 2100000}\n```\nand code:\n```python\nprint(1)\n```'
    turn = JsonBlockParser().parse(text)
    assert not turn.has_calls
    assert "Paris" in turn.content and "print(1)" in turn.content


def test_json_block_broken_call_is_malformed():
    turn = JsonBlockParser().parse('```json\n{"name": "calculator", "arguments": {"expression": 17*23}}\n```')
    assert not turn.tool_calls
    assert "the JSON is invalid" in turn.malformed[0].reason


def test_auto_reads_both_forms_and_prefers_tags():
    auto = AutoParser()
    assert [c.name for c in auto.parse(f"<tool_call>{CALL}</tool_call>").tool_calls] == ["calculator"]
    assert [c.name for c in auto.parse(f"```json\n{CALL}\n```").tool_calls] == ["calculator"]
    # with tags present, a JSON code block next to them is content
    mixed = auto.parse(f'```json\n{{"name": "x", "arguments": {{}}}}\n```\n<tool_call>{CALL}</tool_call>')
    assert [c.name for c in mixed.tool_calls] == ["calculator"]


@pytest.mark.parametrize("name", ["hermes", "json_block", "auto"])
def test_every_builtin_parser_round_trips_what_it_renders(name, plugin_manager):
    parser = get_parser(name)
    calls = [ToolCall("calculator", {"expression": "2*(3+4)", "unicode": "é"}),
             ToolCall("lookup", {"nested": {"a": [1, 2, None]}, "flag": True})]
    turn = parser.parse(parser.render(calls))
    assert [(c.name, dict(c.arguments)) for c in turn.tool_calls] == [(c.name, dict(c.arguments)) for c in calls]
    assert not turn.malformed


def test_registry_unknown_parser_names_the_available_ones(plugin_manager):
    with pytest.raises(UnknownNameError) as err:
        get_parser("hermess")
    assert "hermes" in str(err.value)


def test_third_party_parser_through_the_hook(plugin_manager):
    from toolrl.chat.parsers import ParsedTurn

    class Upper:
        name = "upper"

        def parse(self, text):
            return ParsedTurn(content=text.upper())

        def render(self, calls):
            return ""

    class Plugin:
        @hookimpl
        def register_tool_parsers(self, register):
            register("upper", Upper())

    plugin_manager.register(Plugin(), name="upper-plugin")
    assert get_parser("upper").parse("hi").content == "HI"
