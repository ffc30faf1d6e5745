"""SFT conversations and DPO preference pairs: the JSONL formats, and their encoding into token ids + loss masks.

SFT file, one conversation per line (OpenAI chat format, tool calls included):

    {"id": "t1", "tools": [...],
     "messages": [{"role": "system", ...}, {"role": "user", ...},
                  {"role": "assistant", "content": "<tool_call>\\n{...}\\n</tool_call>"},
                  {"role": "tool", "content": "56088"},
                  {"role": "assistant", "content": "<answer>56088</answer>"}]}

DPO file, one pair per line: the shared `prompt` messages, then the `chosen`
and the `rejected` continuation (assistant turns and tool results):

    {"id": "t1", "tools": [...], "prompt": [...], "chosen": [...], "rejected": [...]}

An assistant message's text is its `content`; structured `tool_calls`
(OpenAI form, no tags in the content) are written as hermes `<tool_call>`
blocks, the format toolrl's prompts teach and its `auto` parser reads.

Encoding goes through exactly the code the RL rollout uses: the prompt is
`ChatFormat.prompt_ids` (= `render_messages`), each assistant turn is its
text's ids plus the template's end-of-turn token (what a sampled turn ends
with), and the tool messages after a turn are `ChatFormat.tool_suffix_ids`.
The result is a `Trajectory` with loss mask 1 on assistant tokens only, so SFT
and DPO batches are built and run by the RL trainer's batch and forward code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolrl.errors import TaskFormatError
from toolrl.types import Trajectory

_ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Conversation:
    """One SFT example: a whole conversation; every assistant message is trained on."""

    id: str
    messages: tuple[Mapping[str, Any], ...]
    tools: tuple[Mapping[str, Any], ...] = ()
    metadata: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "messages": [dict(m) for m in self.messages],
                               "tools": [dict(t) for t in self.tools]}
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


@dataclass(frozen=True)
class PreferencePair:
    """One DPO example: a prompt and two continuations, the chosen one preferred."""

    id: str
    prompt: tuple[Mapping[str, Any], ...]
    chosen: tuple[Mapping[str, Any], ...]
    rejected: tuple[Mapping[str, Any], ...]
    tools: tuple[Mapping[str, Any], ...] = ()
    metadata: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "prompt": [dict(m) for m in self.prompt],
                               "chosen": [dict(m) for m in self.chosen],
                               "rejected": [dict(m) for m in self.rejected], "tools": [dict(t) for t in self.tools]}
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


def _messages(value: Any, field: str, where: str) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list) or not value:
        raise TaskFormatError(f"'{field}' must be a non-empty list of chat messages", where=where,
                              fix=f'e.g. "{field}": [{{"role": "assistant", "content": "..."}}]')
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or m.get("role") not in _ROLES:
            raise TaskFormatError(f"{field}[{i}] must be an object with 'role' in {list(_ROLES)}, got {m!r}",
                                  where=where, fix='write {"role": "assistant", "content": "..."}')
        if not isinstance(m.get("content") or "", str):
            raise TaskFormatError(f"{field}[{i}].content must be a string", where=where, fix="flatten content to text")
    return tuple(dict(m) for m in value)


def _rows(path: str | Path, kind: str) -> list[tuple[str, dict[str, Any]]]:
    p = Path(path)
    if not p.is_file():
        raise TaskFormatError(f"the {kind} file does not exist", where=str(p),
                              fix="set data.train_file to a JSONL file (make one with `toolrl data sft` / `toolrl data dpo`)")
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{p}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskFormatError(f"not valid JSON: {exc.msg}", where=where, fix="write one JSON object per line") from None
        if not isinstance(obj, dict):
            raise TaskFormatError(f"a line must be a JSON object, got {type(obj).__name__}", where=where,
                                  fix="write one JSON object per line")
        rows.append((where, obj))
    if not rows:
        raise TaskFormatError(f"the {kind} file has no examples", where=str(p), fix="write one JSON object per line")
    return rows


def _check_keys(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise TaskFormatError(f"unknown field(s) {unknown}", where=where, fix=f"use only {sorted(allowed)}")


def load_conversations(path: str | Path) -> list[Conversation]:
    """Read an SFT JSONL file; errors name the file, the line and the field."""
    out = []
    for i, (where, obj) in enumerate(_rows(path, "SFT")):
        _check_keys(obj, {"id", "messages", "tools", "metadata"}, where)
        msgs = _messages(obj.get("messages"), "messages", where)
        if not any(m["role"] == "assistant" for m in msgs):
            raise TaskFormatError("the conversation has no assistant message to train on", where=where,
                                  fix="add the assistant's reply (SFT trains on assistant messages only)")
        out.append(Conversation(str(obj.get("id", i)), msgs, tuple(obj.get("tools") or ()), obj.get("metadata")))
    return out


def load_pairs(path: str | Path) -> list[PreferencePair]:
    """Read a DPO JSONL file of {prompt, chosen, rejected}; errors name the file, the line and the field."""
    out = []
    for i, (where, obj) in enumerate(_rows(path, "preference-pair")):
        _check_keys(obj, {"id", "prompt", "chosen", "rejected", "tools", "metadata"}, where)
        prompt = _messages(obj.get("prompt"), "prompt", where)
        chosen = _messages(obj.get("chosen"), "chosen", where)
        rejected = _messages(obj.get("rejected"), "rejected", where)
        for name, cont in (("chosen", chosen), ("rejected", rejected)):
            if cont[0]["role"] != "assistant":
                raise TaskFormatError(f"'{name}' must start with the assistant's reply, not a {cont[0]['role']!r} "
                                      "message", where=where, fix="put the shared messages under 'prompt'")
        out.append(PreferencePair(str(obj.get("id", i)), prompt, chosen, rejected, tuple(obj.get("tools") or ()),
                                  obj.get("metadata")))
    return out


def write_jsonl(rows: Sequence[Conversation | PreferencePair], out: str | Path) -> Path:
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
    tmp.replace(p)
    return p


def assistant_text(message: Mapping[str, Any]) -> str:
    """The text an assistant turn is trained to produce: its content, plus hermes blocks for structured tool calls."""
    text = message.get("content") or ""
    blocks = []
    for call in message.get("tool_calls") or ():
        fn = call.get("function", call) if isinstance(call, Mapping) else {}
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                pass
        blocks.append("<tool_call>\n" + json.dumps({"name": fn.get("name"), "arguments": args}, ensure_ascii=False)
                      + "\n</tool_call>")
    if blocks and "<tool_call>" not in text:
        text = "\n".join([text, *blocks]) if text else "\n".join(blocks)
    return text


def encode_conversation(tokenizer: Any, messages: Sequence[Mapping[str, Any]],
                        tools: Sequence[Mapping[str, Any]] = (), *, example_id: str = "example") -> Trajectory:
    """Token ids and loss mask of a conversation, as the agent loop would have produced them.

    The prompt is everything before the first assistant message; each assistant
    message is trained on (mask 1, ending with the end-of-turn token), the tool
    (or user) messages between assistant turns are not (mask 0). Messages after
    the last assistant message are dropped.
    """
    from toolrl.chat.template import ChatFormat

    first = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), None)
    if first is None or first == 0:
        raise TaskFormatError("a conversation needs prompt messages followed by an assistant message",
                              where=f"example {example_id}", fix="start with a system/user message")
    last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    fmt = ChatFormat.of(tokenizer)
    tools_arg = list(tools) or None
    prompt_ids = fmt.prompt_ids(list(messages[:first]), tools_arg)
    eot = fmt.info.end_of_turn_ids[0]
    ids: list[int] = []
    mask: list[int] = []
    i = first
    while i <= last:
        turn = fmt.encode(assistant_text(messages[i])) + [eot]
        ids += turn
        mask += [1] * len(turn)
        j = i + 1
        while j <= last and messages[j].get("role") != "assistant":
            j += 1
        between = [dict(m) for m in messages[i + 1 : j]]
        if j <= last:
            if not between:
                raise TaskFormatError(f"messages[{i}] and messages[{j}] are consecutive assistant messages",
                                      where=f"example {example_id}", fix="merge them into one assistant message")
            suffix = fmt.tool_suffix_ids(turn, between, tools_arg, add_generation_prompt=True)
            ids += suffix
            mask += [0] * len(suffix)
        i = j
    return Trajectory(task_id=example_id, sample_index=0, prompt_ids=tuple(prompt_ids), response_ids=tuple(ids),
                      loss_mask=tuple(mask), logprobs=tuple([0.0] * len(ids)), messages=tuple(messages),
                      num_prompt_messages=first)


def encode_pair(tokenizer: Any, pair: PreferencePair) -> tuple[Trajectory, Trajectory]:
    """The chosen and the rejected conversation (same prompt ids, so a forward pass can share the prompt)."""
    chosen = encode_conversation(tokenizer, [*pair.prompt, *pair.chosen], pair.tools, example_id=f"{pair.id}/chosen")
    rejected = encode_conversation(tokenizer, [*pair.prompt, *pair.rejected], pair.tools,
                                   example_id=f"{pair.id}/rejected")
    return chosen, rejected
