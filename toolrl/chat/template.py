"""Chat-template rendering that never re-encodes what the model sampled.

Three things live here:

- `render_prompt(tokenizer, task)` / `render_messages(tokenizer, messages, tools)`:
  the ONE way a conversation becomes prompt ids (training, evaluation and
  serving all call it), so evaluation reuses the training prompt exactly.
- Tool schemas for templates that ignore `tools=` (SmolLM2): detected once per
  tokenizer by rendering a probe tool; the schemas are then written into the
  system message in the hermes `<tool_call>` format (docs/rollout.md).
- `ChatFormat.tool_suffix_ids(...)`: the ids to append after a sampled
  assistant turn so that the sequence continues with the tool messages (and
  the next generation prompt), computed from a fixed *reference*
  conversation: render `ref + [assistant]` and `ref + [assistant, tools...]`
  as text and take the suffix. Only that suffix (plus whatever part of the
  template's end-of-turn text the model did not sample, e.g. Qwen's "\\n"
  after `<|im_end|>`) is tokenized; the model's own tokens are kept as ids.

This needs an append-only template (rendering more messages only appends
text). `toolrl doctor --model M` checks that (`toolrl.chat.template_check`).
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toolrl.errors import ToolrlError

logger = logging.getLogger(__name__)

_PROBE_TOOL_NAME = "toolrl_probe_tool_5f2c"
_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": _PROBE_TOOL_NAME,
        "description": "probe",
        "parameters": {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]},
    },
}
_SENTINEL = "TOOLRL_SENTINEL_8d1e"
_REF_USER = "toolrl reference question"
_REF_CALL = {"id": "call_ref", "type": "function", "function": {"name": _PROBE_TOOL_NAME, "arguments": {"x": "1"}}}


class TemplateError(ToolrlError):
    """The model's chat template cannot be used the way the agent loop needs."""


def tools_system_text(tools: Sequence[Mapping[str, Any]]) -> str:
    """The tool instructions written into the system message when the template ignores `tools=`.

    The format matches the `hermes` parser, so the default `auto` parser reads the model's calls.
    """
    lines = "\n".join(json.dumps(dict(t), ensure_ascii=False) for t in tools)
    return (
        "# Tools\n\n"
        "You can call the functions below to help with the user's request. Their signatures, in JSON "
        "Schema, are inside <tools></tools>:\n"
        f"<tools>\n{lines}\n</tools>\n\n"
        "To call a function, reply with a JSON object holding its name and arguments inside "
        "<tool_call></tool_call> tags, one block per call:\n"
        '<tool_call>\n{"name": "<function name>", "arguments": {"<argument>": <value>}}\n</tool_call>\n'
        "The results come back in the next message."
    )


@dataclass(frozen=True)
class TemplateInfo:
    """What was learned about a tokenizer's chat template (once per tokenizer).

    Attributes:
        uses_tools: the template renders `tools=` itself.
        tool_role: the template accepts `{"role": "tool"}` messages.
        turn_close: the text the template writes after an assistant message's content
            (e.g. "<|im_end|>\\n" for ChatML templates).
        end_of_turn_ids: token ids that end an assistant turn: the first token of
            `turn_close` when it is a special token, plus the tokenizer's and the
            generation config's EOS ids.
    """

    uses_tools: bool
    tool_role: bool
    turn_close: str
    end_of_turn_ids: tuple[int, ...]


class ChatFormat:
    """A tokenizer's chat template, analysed once, with the renderings the agent loop needs.

    Use `ChatFormat.of(tokenizer)` (cached per tokenizer object).
    """

    _cache: weakref.WeakKeyDictionary[Any, ChatFormat] = weakref.WeakKeyDictionary()
    _cache_lock = threading.Lock()

    def __init__(self, tokenizer: Any, eos_token_ids: Sequence[int] = ()):
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(
                "the tokenizer has no chat template",
                where=str(getattr(tokenizer, "name_or_path", "tokenizer")),
                fix="use an instruct/chat model, or set tokenizer.chat_template to a Jinja template",
            )
        self.tokenizer = tokenizer
        self.info = self._analyse(eos_token_ids)

    @classmethod
    def of(cls, tokenizer: Any) -> ChatFormat:
        with cls._cache_lock:
            fmt = cls._cache.get(tokenizer)
            if fmt is None or fmt._template_text != tokenizer.chat_template:
                fmt = cls(tokenizer, _generation_eos_ids(tokenizer))
                fmt._template_text = tokenizer.chat_template
                cls._cache[tokenizer] = fmt
            return fmt

    _template_text: str | None = None

    # ------------------------------------------------------------------ rendering
    def render_text(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        add_generation_prompt: bool = False,
    ) -> str:
        """The conversation as text, with tool schemas in the system message when the template ignores them."""
        msgs = self._prepare(messages, tools)
        kwargs: dict[str, Any] = {}
        if tools and self.info.uses_tools:
            kwargs["tools"] = [dict(t) for t in tools]
        return self._apply(msgs, add_generation_prompt=add_generation_prompt, **kwargs)

    def encode(self, text: str) -> list[int]:
        """Text -> ids without adding BOS/EOS (the template writes every special token itself)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt_ids(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> list[int]:
        """Ids of the conversation followed by the generation prompt (the start of the assistant's turn)."""
        return self.encode(self.render_text(messages, tools, add_generation_prompt=True))

    def turn_close_remainder(self, sampled_ids: Sequence[int]) -> str:
        """The part of the template's end-of-turn text that the sampled turn does not already contain.

        A turn that stopped on the template's end-of-turn token (`<|im_end|>`) lacks only what
        follows it ("\\n" for ChatML); a turn that stopped on another EOS (`<|endoftext|>`) or a
        stop string gets the whole end-of-turn text, so the next message starts where the
        template expects it.
        """
        close = self.info.turn_close
        if sampled_ids:
            last = self.tokenizer.decode([sampled_ids[-1]], skip_special_tokens=False)
            if last and close.startswith(last):
                return close[len(last) :]
        return close

    def tool_suffix_text(
        self,
        tool_messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        add_generation_prompt: bool = True,
    ) -> str:
        """The text the template writes for `tool_messages` after a closed assistant turn.

        Computed on a fixed reference conversation, so the model's own text is never rendered.
        """
        ref = self._reference(tools)
        base = self.render_text(ref, tools)
        full = self.render_text([*ref, *tool_messages], tools, add_generation_prompt=add_generation_prompt)
        if not full.startswith(base):
            raise TemplateError(
                "the chat template is not append-only: rendering a tool message changes the text before it",
                where=str(getattr(self.tokenizer, "name_or_path", "tokenizer")),
                fix="run `toolrl doctor --model <model>` for details; use a template that only appends "
                "(most ChatML/Qwen/Llama templates do), or set tokenizer.chat_template",
            )
        return full[len(base) :]

    def tool_suffix_ids(
        self,
        sampled_ids: Sequence[int],
        tool_messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        add_generation_prompt: bool = True,
    ) -> list[int]:
        """Ids to append after a sampled assistant turn: the rest of its end-of-turn text, the
        tool messages, and (if asked) the next generation prompt."""
        text = self.turn_close_remainder(sampled_ids) + self.tool_suffix_text(
            tool_messages, tools, add_generation_prompt=add_generation_prompt
        )
        return self.encode(text)

    # ------------------------------------------------------------------ internals
    def _apply(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool, **kwargs: Any) -> str:
        try:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
            )
        except Exception as exc:
            raise TemplateError(
                f"the chat template failed to render the conversation: {type(exc).__name__}: {exc}",
                where=f"messages with roles {[m.get('role') for m in messages]}",
                fix="check the message roles/contents; run `toolrl doctor --model <model>`",
            ) from exc

    def _prepare(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None
    ) -> list[dict[str, Any]]:
        msgs = []
        for m in messages:
            d = dict(m)
            if d.get("content") is None:
                d["content"] = ""
            msgs.append(d)
        info = getattr(self, "info", None)
        if info is not None and not info.tool_role:
            msgs = [_tool_as_user(m) if m.get("role") == "tool" else m for m in msgs]
        if tools and info is not None and not info.uses_tools:
            block = tools_system_text(tools)
            if msgs and msgs[0].get("role") == "system":
                msgs[0] = {**msgs[0], "content": f"{msgs[0]['content']}\n\n{block}" if msgs[0]["content"] else block}
            else:
                msgs.insert(0, {"role": "system", "content": block})
        return msgs

    def _reference(self, tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
        """A small fixed conversation ending with an assistant turn that called a tool."""
        assistant: dict[str, Any] = {"role": "assistant", "content": ""}
        if self._ref_with_calls:
            assistant["tool_calls"] = [_REF_CALL]
        else:
            assistant["content"] = _SENTINEL
        return [{"role": "user", "content": _REF_USER}, assistant]

    _ref_with_calls = True

    def _analyse(self, eos_token_ids: Sequence[int]) -> TemplateInfo:
        user = [{"role": "user", "content": _REF_USER}]
        # 1. does the template render tools= itself?
        try:
            with_tools = self._apply(list(user), add_generation_prompt=True, tools=[_PROBE_TOOL])
            uses_tools = _PROBE_TOOL_NAME in with_tools
        except TemplateError:
            uses_tools = False
        # 2. what follows an assistant message's content?
        text = self._apply([*user, {"role": "assistant", "content": _SENTINEL}], add_generation_prompt=False)
        if _SENTINEL not in text:
            raise TemplateError(
                "the chat template does not render assistant messages' content",
                where=str(getattr(self.tokenizer, "name_or_path", "tokenizer")),
                fix="use a chat template that renders every message",
            )
        turn_close = text[text.rindex(_SENTINEL) + len(_SENTINEL) :]
        # 3. tool role, and whether the reference assistant message may carry tool_calls
        tool_role = True
        try:
            self._apply([*user, {"role": "assistant", "content": "", "tool_calls": [_REF_CALL]},
                         {"role": "tool", "content": "1", "tool_call_id": "call_ref"}], add_generation_prompt=True)
        except TemplateError:
            try:
                self._apply([*user, {"role": "assistant", "content": _SENTINEL},
                             {"role": "tool", "content": "1"}], add_generation_prompt=True)
                self._ref_with_calls = False
            except TemplateError:
                tool_role = False
                self._ref_with_calls = False
        if tool_role and self._ref_with_calls:
            # SmolLM2-style templates ignore tool_calls and render content only: that is fine,
            # but a template that renders nothing for a content-less call turn is not usable as a
            # reference, so keep the sentinel form there
            probe = self._apply([*user, {"role": "assistant", "content": "", "tool_calls": [_REF_CALL]}],
                                add_generation_prompt=False)
            if not probe.endswith(turn_close):
                self._ref_with_calls = False
        eot: list[int] = []
        close_ids = self.tokenizer.encode(turn_close, add_special_tokens=False) if turn_close else []
        special = set(getattr(self.tokenizer, "all_special_ids", []) or [])
        added = getattr(self.tokenizer, "added_tokens_decoder", {}) or {}
        if close_ids and (close_ids[0] in special or close_ids[0] in added):
            eot.append(int(close_ids[0]))
        for i in [getattr(self.tokenizer, "eos_token_id", None), *eos_token_ids]:
            if i is not None and int(i) not in eot:
                eot.append(int(i))
        if not eot:
            raise TemplateError(
                "cannot tell which token ends an assistant turn (no special end-of-turn token, no EOS id)",
                where=str(getattr(self.tokenizer, "name_or_path", "tokenizer")),
                fix="set tokenizer.eos_token to the template's end-of-turn token",
            )
        return TemplateInfo(uses_tools=uses_tools, tool_role=tool_role, turn_close=turn_close,
                            end_of_turn_ids=tuple(eot))


def _tool_as_user(m: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"}


def _generation_eos_ids(tokenizer: Any) -> list[int]:
    """EOS ids from the model folder's generation_config.json (Qwen lists two)."""
    import os

    path = getattr(tokenizer, "name_or_path", None)
    if not path:
        return []
    cfg = os.path.join(str(path), "generation_config.json")
    try:
        with open(cfg, encoding="utf-8") as fh:
            eos = json.load(fh).get("eos_token_id")
    except (OSError, ValueError):
        return []
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, list) else [eos])]


# ---------------------------------------------------------------------- public functions
def render_messages(
    tokenizer: Any, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None
) -> list[int]:
    """Prompt ids for a conversation (with generation prompt): the one rendering used everywhere."""
    return ChatFormat.of(tokenizer).prompt_ids(messages, tools)


def render_prompt(tokenizer: Any, task: Any) -> list[int]:
    """Prompt ids for a `Task`: its messages and tools through the chat template.

    Training, evaluation and serving all call this, so a model is evaluated on exactly the
    prompt it was trained on.
    """
    return render_messages(tokenizer, task.messages, task.tools or None)
