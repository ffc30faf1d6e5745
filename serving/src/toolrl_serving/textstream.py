"""Token ids -> text for answers: incremental decoding, stop strings, tool-call hold-back.

The streamed deltas of one choice always add up to the same text a
non-streaming request returns for the same ids (`final_text`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """The text before the earliest stop string, and whether one was found."""
    cut = -1
    for s in stop:
        i = text.find(s)
        if i >= 0 and (cut < 0 or i < cut):
            cut = i
    return (text, False) if cut < 0 else (text[:cut], True)


def final_text(tokenizer: Any, ids: Sequence[int], stop: Sequence[str]) -> tuple[str, bool]:
    return cut_at_stop(decode(tokenizer, ids), stop)


def _partial_suffix(text: str, needles: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a needle."""
    best = 0
    for s in needles:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


class TextStream:
    """Turns the ids of one choice, as they arrive, into text that is safe to send.

    Holds back text that might be the start of a stop string, an incomplete UTF-8
    character, and (when a tool-call parser is active) everything from the first
    tool-call marker on, since a tool call is sent whole once the parser has seen it:
    `hold_markers` start a call anywhere, `hold_leading` only at the start of the
    reply (a bare JSON answer), and `hold_all` holds the whole reply.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str] = (), hold_markers: Sequence[str] = (),
                 hold_leading: Sequence[str] = (), hold_all: bool = False):
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.hold_markers = tuple(m for m in hold_markers if m)
        self.hold_leading = tuple(m for m in hold_leading if m)
        self.hold_all = hold_all
        self.ids: list[int] = []
        self.text = ""  # decoded so far (may run past a stop string)
        self.sent = ""  # what the caller has been given
        self.stopped = False  # a stop string was seen: the caller should end the generation
        self.holding = False  # a tool-call marker was seen: the rest waits for the parser
        self._prefix = 0
        self._read = 0

    def push(self, new_ids: Sequence[int]) -> str:
        """Add ids; return the new text that may be sent now (often "")."""
        if self.stopped or not new_ids:
            return ""
        self.ids.extend(int(i) for i in new_ids)
        before = decode(self.tokenizer, self.ids[self._prefix:self._read])
        after = decode(self.tokenizer, self.ids[self._prefix:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""  # an incomplete character: wait for the next token
        self.text += after[len(before):]
        self._prefix, self._read = self._read, len(self.ids)
        return self._release()

    def _release(self) -> str:
        text, found = cut_at_stop(self.text, self.stop)
        if found:
            self.stopped = True
            safe = len(text)
        else:
            safe = len(text) - _partial_suffix(text, self.stop)
        if self.hold_all:
            self.holding = True
            safe = 0
        stripped = text.lstrip()
        if self.hold_leading and not self.sent.strip():
            if not stripped:
                safe = min(safe, len(self.sent))  # only whitespace so far: the reply may still open with JSON
            elif stripped.startswith(self.hold_leading):
                self.holding = True
                safe = min(safe, len(self.sent))
        if self.hold_markers:
            for m in self.hold_markers:
                i = text.find(m)
                if i >= 0:
                    self.holding = True
                    safe = min(safe, i)
            if not self.holding:
                safe = min(safe, len(text) - _partial_suffix(text[:safe], self.hold_markers))
        safe = max(safe, len(self.sent))
        delta = text[len(self.sent):safe]
        self.sent += delta
        return delta

    def finish(self) -> str:
        """The full answer text (stop string removed); call once at the end."""
        full, found = final_text(self.tokenizer, self.ids, self.stop)
        self.stopped = self.stopped or found
        return full

    def rest(self, full: str) -> str:
        """What is left to send so that everything sent equals `full` (when it extends what was sent;
        whitespace that a parser stripped from what was already sent is forgiven)."""
        for sent in (self.sent, self.sent.strip()):
            if full.startswith(sent):
                delta = full[len(sent):]
                self.sent += delta
                return delta
        return ""
