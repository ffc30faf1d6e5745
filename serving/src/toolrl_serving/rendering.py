"""Prompts through `toolrl.chat`: the one rendering training, evaluation and serving share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from toolrl_serving.errors import invalid


def render_chat(tokenizer: Any, messages: Sequence[Mapping[str, Any]],
                tools: Sequence[Mapping[str, Any]] | None) -> list[int]:
    """Prompt ids (conversation + generation prompt); a template that cannot render them is a 400."""
    from toolrl.chat.template import TemplateError, render_messages

    try:
        return render_messages(tokenizer, messages, tools)
    except TemplateError as exc:
        raise invalid("messages", f"the model's chat template cannot render these messages: {exc.what}",
                      code="invalid_messages") from None


def end_of_turn_ids(tokenizer: Any) -> tuple[int, ...]:
    """Token ids that end an assistant turn (the template's end-of-turn token and the EOS ids)."""
    from toolrl.chat.template import ChatFormat

    return ChatFormat.of(tokenizer).info.end_of_turn_ids
