"""Tool-call parsers: model text -> tool calls, and tool calls -> the text a parser accepts.

Parsers are registered by name through `register_tool_parsers` (built-ins:
`hermes`, `json_block`, `auto`) and looked up with `get_parser(name)`.

A parser never raises on the model's text. What it cannot read becomes a
`MalformedCall` with a message meant for the model ("the JSON is invalid:
... Write exactly: <tool_call>...</tool_call>"); the agent loop sends that
back as the tool message and counts it in `Trajectory.malformed_tool_calls`.

Forms understood:

- hermes / Qwen: ``<tool_call>{"name": "f", "arguments": {...}}</tool_call>``
  (several per turn; an unclosed final block is accepted when its JSON is
  complete, because models often stop right after the JSON).
- json_block: a fenced ```` ```json {"name": "f", "arguments": {...}} ``` ````
  block (Qwen2.5-Coder's habit), a fenced list of such objects, or a whole
  reply that is one such bare JSON object. A JSON block without both `name`
  and `arguments` is ordinary content, not a call.
- auto: hermes tags when the text has any, else json_block.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from toolrl.types import ToolCall

TOOL_CALL_EXAMPLE = '<tool_call>\n{"name": "<tool name>", "arguments": {"<arg>": <value>}}\n</tool_call>'


@dataclass(frozen=True)
class MalformedCall:
    """A tool call the parser found but could not read.

    Attributes:
        raw: the text of the attempted call.
        reason: what was wrong, in one sentence (shown to the model).
    """

    raw: str
    reason: str

    def message(self) -> str:
        """The tool-message text that tells the model what was wrong and how to write a call."""
        shown = self.raw if len(self.raw) <= 300 else self.raw[:300] + " ..."
        return (
            f"Error: your tool call could not be parsed: {self.reason}.\n"
            f"The call was: {shown}\n"
            f"Write each call exactly like this, with valid JSON:\n{TOOL_CALL_EXAMPLE}"
        )


@dataclass(frozen=True)
class ParsedTurn:
    """What a parser read from one assistant turn.

    Attributes:
        content: the text outside the tool-call markup (stripped).
        tool_calls: the calls that parsed, in order of appearance.
        malformed: the attempted calls that did not parse, in order of appearance.
    """

    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    malformed: tuple[MalformedCall, ...] = field(default=())

    @property
    def has_calls(self) -> bool:
        return bool(self.tool_calls or self.malformed)


@runtime_checkable
class ToolParser(Protocol):
    """Reads tool calls from an assistant turn's text and writes calls in its own form."""

    name: str

    def parse(self, text: str) -> ParsedTurn:
        """Never raises on the model's text; unreadable calls go to `ParsedTurn.malformed`."""
        ...

    def render(self, calls: Sequence[ToolCall]) -> str:
        """The text this parser reads back as `calls` (used by `toolrl doctor --model` and tests)."""
        ...


# ---------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------


def _call_from_obj(obj: Any, raw: str) -> ToolCall | MalformedCall:
    """A decoded JSON value -> ToolCall, or MalformedCall naming what is missing."""
    if not isinstance(obj, Mapping):
        return MalformedCall(raw, f"expected a JSON object with 'name' and 'arguments', got a JSON {_json_type(obj)}")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return MalformedCall(raw, "the object has no 'name' string (the tool to call)")
    if "arguments" in obj:
        args = obj["arguments"]
    elif "parameters" in obj:  # a common variant
        args = obj["parameters"]
    else:
        args = {}
    if isinstance(args, str):  # OpenAI style: arguments as a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            return MalformedCall(raw, f"'arguments' is a string that is not valid JSON ({exc.msg})")
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        return MalformedCall(raw, f"'arguments' must be a JSON object, got a JSON {_json_type(args)}")
    return ToolCall(name=name.strip(), arguments=dict(args), raw=raw)


def _json_type(v: Any) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(v), "null" if v is None else type(v).__name__)


def _loads(text: str) -> tuple[Any, str | None]:
    """json.loads that returns (value, None) or (None, reason)."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"the JSON is invalid: {exc.msg} at line {exc.lineno} column {exc.colno}"


def _finish(content_parts: list[str], items: list[ToolCall | MalformedCall]) -> ParsedTurn:
    content = "".join(content_parts).strip()
    calls = tuple(i for i in items if isinstance(i, ToolCall))
    bad = tuple(i for i in items if isinstance(i, MalformedCall))
    return ParsedTurn(content=content, tool_calls=calls, malformed=bad)


def _dump_call(call: ToolCall) -> str:
    return json.dumps({"name": call.name, "arguments": dict(call.arguments)}, ensure_ascii=False)


# ---------------------------------------------------------------------------
# hermes / Qwen: <tool_call>{json}</tool_call>
# ---------------------------------------------------------------------------

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"


class HermesParser:
    """`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks (Hermes, Qwen2.5, many others)."""

    name = "hermes"

    def parse(self, text: str) -> ParsedTurn:
        content: list[str] = []
        items: list[ToolCall | MalformedCall] = []
        pos = 0
        while True:
            start = text.find(_OPEN, pos)
            if start < 0:
                content.append(text[pos:])
                break
            content.append(text[pos:start])
            body_start = start + len(_OPEN)
            end = text.find(_CLOSE, body_start)
            nxt = text.find(_OPEN, body_start)
            if end < 0 or (0 <= nxt < end):
                # unclosed block: accept it if its JSON is complete (models often stop right after it)
                stop = nxt if nxt >= 0 else len(text)
                body = text[body_start:stop]
                raw = text[start:stop]
                obj, err = _loads(body.strip())
                if err is None:
                    items.append(_call_from_obj(obj, raw))
                else:
                    items.append(MalformedCall(raw.strip(), f"the <tool_call> block is not closed with </tool_call> and {err[4:]}"))
                pos = stop
                continue
            body = text[body_start:end]
            raw = text[start : end + len(_CLOSE)]
            stripped = _strip_fence(body.strip())
            if not stripped:
                items.append(MalformedCall(raw, "the <tool_call> block is empty"))
            else:
                obj, err = _loads(stripped)
                items.append(MalformedCall(raw, err) if err else _call_from_obj(obj, raw))
            pos = end + len(_CLOSE)
        # a stray closing tag without an opening one is content; models do emit it, but it is no call
        return _finish(content, items)

    def render(self, calls: Sequence[ToolCall]) -> str:
        return "\n".join(f"{_OPEN}\n{_dump_call(c)}\n{_CLOSE}" for c in calls)


def _strip_fence(body: str) -> str:
    """`<tool_call>```json {...}```</tool_call>` happens; read the JSON inside the fence."""
    m = _FENCE_ONLY.fullmatch(body)
    return m.group(1).strip() if m else body


_FENCE_ONLY = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)

# ---------------------------------------------------------------------------
# ```json {"name": ..., "arguments": ...} ``` blocks (Qwen2.5-Coder) and bare JSON replies
# ---------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*(json|JSON|tool_call|tool_code)?[ \t]*\n?(.*?)```", re.DOTALL)
_NAME_AND_ARGS = re.compile(r'"name"\s*:.*"(arguments|parameters)"\s*:', re.DOTALL)


class JsonBlockParser:
    """Fenced ```` ```json ```` blocks holding `{"name", "arguments"}` (or a list of them), or a bare JSON reply."""

    name = "json_block"

    def parse(self, text: str) -> ParsedTurn:
        stripped = text.strip()
        if stripped.startswith(("{", "[")) and "```" not in stripped:
            bare = self._bare(stripped)
            if bare is not None:
                return bare
        content: list[str] = []
        items: list[ToolCall | MalformedCall] = []
        pos = 0
        for m in _FENCE.finditer(text):
            body = m.group(2).strip()
            found = self._block(body, m.group(0))
            if found is None:  # an ordinary code block: keep it as content
                continue
            content.append(text[pos : m.start()])
            items.extend(found)
            pos = m.end()
        content.append(text[pos:])
        return _finish(content, items)

    def _bare(self, stripped: str) -> ParsedTurn | None:
        found = self._block(stripped, stripped)
        if found is None:
            return None
        return _finish([], found)

    @staticmethod
    def _looks_like_call(obj: Any) -> bool:
        return isinstance(obj, Mapping) and "name" in obj and ("arguments" in obj or "parameters" in obj)

    def _block(self, body: str, raw: str) -> list[ToolCall | MalformedCall] | None:
        """The calls in one JSON block, or None when the block is not a tool call at all."""
        obj, err = _loads(body)
        if err is not None:
            # only a block that clearly tries to be a call counts as a malformed call
            return [MalformedCall(raw.strip(), err)] if _NAME_AND_ARGS.search(body) else None
        if self._looks_like_call(obj):
            return [_call_from_obj(obj, raw.strip())]
        if isinstance(obj, list) and obj and all(self._looks_like_call(o) for o in obj):
            return [_call_from_obj(o, raw.strip()) for o in obj]
        return None

    def render(self, calls: Sequence[ToolCall]) -> str:
        return "\n".join(f"```json\n{_dump_call(c)}\n```" for c in calls)


# ---------------------------------------------------------------------------
# auto: hermes tags if present, else JSON blocks
# ---------------------------------------------------------------------------


class AutoParser:
    """Hermes `<tool_call>` tags when the text has any, otherwise fenced/bare JSON calls."""

    name = "auto"

    def __init__(self) -> None:
        self._hermes = HermesParser()
        self._json = JsonBlockParser()

    def parse(self, text: str) -> ParsedTurn:
        if _OPEN in text:
            return self._hermes.parse(text)
        return self._json.parse(text)

    def render(self, calls: Sequence[ToolCall]) -> str:
        return self._hermes.render(calls)


BUILTIN_PARSERS: dict[str, type] = {"hermes": HermesParser, "json_block": JsonBlockParser, "auto": AutoParser}


def get_parser(name: str) -> ToolParser:
    """The parser registered under `name` (a class or factory is instantiated; an instance is returned as is)."""
    from toolrl import plugins

    obj = plugins.registry("tool_parsers").get(name)
    if isinstance(obj, type):
        obj = obj()
    elif not hasattr(obj, "parse") and callable(obj):
        obj = obj()
    if not hasattr(obj, "parse"):
        from toolrl.errors import PluginError

        raise PluginError(
            f"tool parser {name!r} has no parse(text) method",
            where=f"tool parser {name!r}",
            fix="register an object with parse(text) -> ParsedTurn and render(calls) -> str",
        )
    return obj
