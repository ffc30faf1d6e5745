"""Tool calls in answers: the training parser's results in OpenAI's `tool_calls` shape."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

from toolrl.types import ToolCall

from toolrl_serving.errors import APIError

# what may start a tool call, per built-in parser; while streaming, text from there on waits for the parser
_MARKERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # name: (markers anywhere, markers at the start of the reply)
    "hermes": (("<tool_call>",), ()),
    "json_block": (("```",), ("{", "[")),
    "auto": (("<tool_call>", "```"), ("{", "[")),
}


class ToolCallParser:
    """Wraps a registered tool-call parser (`parser.parse(text) -> ParsedTurn`, see toolrl.chat.parsers).

    Calls the parser could not read (`ParsedTurn.malformed`) stay in the content as the model wrote
    them, so a client sees what was attempted.
    """

    def __init__(self, parser: Any):
        self.parser = parser
        markers = _MARKERS.get(getattr(parser, "name", ""))
        # an unknown (third-party) parser: hold the whole reply until it has been parsed
        self.hold_markers, self.hold_leading = markers if markers else ((), ())
        self.hold_all = markers is None

    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """(content without the tool-call markup, None when empty; the calls found)."""
        turn = self.parser.parse(text)
        calls = list(turn.tool_calls)
        if not calls:
            return text, []
        parts = [turn.content] + [m.raw for m in getattr(turn, "malformed", ())]
        content = "\n".join(p for p in parts if p)
        return (content or None), calls


def openai_tool_calls(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    return [{"id": c.id or f"call_{secrets.token_hex(12)}", "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(dict(c.arguments), ensure_ascii=False)}}
            for c in calls]


def render_error(exc: APIError) -> str:
    """An error after the stream started: one `data:` event in OpenAI's error shape."""
    body = {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}
    return "data: " + json.dumps(body) + "\n\n"
