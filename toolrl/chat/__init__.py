"""Chat templates and tool-call parsing.

- `render_prompt(tokenizer, task)` / `render_messages(tokenizer, messages, tools)`: the one
  prompt rendering shared by training, evaluation and serving.
- `ChatFormat.of(tokenizer)`: template analysis and token-exact tool-message appends.
- `get_parser(name)`: registered tool-call parsers (`hermes`, `json_block`, `auto`).
"""

from toolrl.chat.parsers import MalformedCall, ParsedTurn, ToolParser, get_parser
from toolrl.chat.template import ChatFormat, TemplateError, render_messages, render_prompt

__all__ = [
    "ChatFormat",
    "MalformedCall",
    "ParsedTurn",
    "TemplateError",
    "ToolParser",
    "get_parser",
    "render_messages",
    "render_prompt",
]
