"""Prompt rendering (temporary: replaced by toolrl.chat once it lands)."""
from __future__ import annotations

from typing import Any


def render_chat(tokenizer: Any, messages: Any, tools: Any) -> list[int]:
    out = tokenizer.apply_chat_template(list(messages), tools=tools, add_generation_prompt=True, tokenize=True,
                                        return_dict=False)
    return list(out["input_ids"] if isinstance(out, dict) else out)
