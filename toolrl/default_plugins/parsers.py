"""Built-in tool-call parsers: hermes (`<tool_call>` JSON), json_block (fenced JSON), auto (both)."""

from toolrl.hookspecs import hookimpl


@hookimpl
def register_tool_parsers(register):
    from toolrl.chat.parsers import AutoParser, HermesParser, JsonBlockParser

    register("hermes", HermesParser)
    register("json_block", JsonBlockParser)
    register("auto", AutoParser)
