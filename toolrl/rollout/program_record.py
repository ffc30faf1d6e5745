"""Recording an agent program's model calls as token-exact trajectories.

An agent program (`env: program`, docs/environments.md) talks to the policy
through an OpenAI-compatible endpoint: every request carries the whole
conversation as text. `EpisodeRecorder` turns those requests into token ids
without ever re-encoding what the model sampled:

* A request whose messages extend a previous call's conversation (its request
  messages, then the assistant reply exactly as the endpoint returned it, then
  new messages) with the same tools continues that call's *segment*: the prompt
  is the segment's ids so far (the previous prompt, the sampled ids as sampled)
  plus the template's text for the new messages, computed like the agent loop
  does (`ChatFormat.tool_suffix_ids`: the rest of the end-of-turn text and the
  new messages, rendered on a reference conversation). Those appended ids are
  context (`loss_mask` 0); the sampled ids get mask 1 and their logprobs.
* Any other request (the first one; one where the program edited or dropped
  earlier messages, changed the tools, or branched from an earlier point; a
  second request in flight on the same conversation) starts a new segment,
  whose prompt is the chat template's rendering of the request, exactly what
  the engine is given.

Each segment is one token sequence that was generated exactly as recorded, so
each trains correctly on its own: the trajectory is the segment of the last
finished call (it holds the final answer), the earlier segments are
`Trajectory.segments` (docs/environments.md, "Segments"); the trainer makes
every segment a training row with the episode's advantage
(`toolrl.trainer.segments`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolrl.chat.template import ChatFormat, TemplateError, render_messages
from toolrl.errors import ToolrlError
from toolrl.types import FinishReason, Segment, Task, ToolCall, Trajectory

logger = logging.getLogger(__name__)


class TokenBudgetError(ToolrlError):
    """A call would take a segment past `rollout.max_total_tokens` (the endpoint answers 400)."""


class EpisodeClosedError(ToolrlError):
    """A call arrived after its episode ended (the endpoint answers 401)."""


@dataclass(frozen=True)
class CallTicket:
    """One model call in flight: the segment it belongs to and the prompt the engine gets."""

    number: int  # 1-based call number within the episode
    segment: int
    prompt_ids: tuple[int, ...]
    extends: bool  # True: continues the segment; False: the segment starts with this call
    messages: tuple[Mapping[str, Any], ...]
    max_new_tokens: int  # what is left of the segment's token budget


@dataclass
class _Segment:
    index: int
    tools_key: str
    prompt_ids: list[int]
    first_messages: int
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    conversation: list[dict[str, Any]] = field(default_factory=list)  # request messages + the last reply
    last_sampled: tuple[int, ...] = ()
    busy: bool = False
    last_finished: int = 0  # the number of the segment's last finished call

    @property
    def sampled(self) -> int:
        return sum(self.mask)

    def segment(self) -> Segment:
        return Segment(tuple(self.prompt_ids), tuple(self.ids), tuple(self.mask), tuple(self.logprobs))


class EpisodeRecorder:
    """The calls of one episode, as segments of token ids (see the module doc).

    Args:
        tokenizer: the policy's tokenizer (its chat template renders every prompt).
        max_total_tokens: most response tokens (sampled + appended context) per segment,
            as `rollout.max_total_tokens` bounds an agent-loop trajectory.
    """

    def __init__(self, tokenizer: Any, *, max_total_tokens: int):
        self.tokenizer = tokenizer
        self.chat = ChatFormat.of(tokenizer)
        self.max_total_tokens = max_total_tokens
        self.segments: list[_Segment] = []
        self.calls = 0
        self.finished_calls = 0
        self.tool_calls: list[ToolCall] = []
        self.malformed = 0
        self.last_finish = "stop"
        self.closed = False
        self.started = time.perf_counter()
        self.generate_s = 0.0

    # ------------------------------------------------------------------ calls
    def begin(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None) -> CallTicket:
        """Register a request (messages as chat-template dicts); returns the prompt to generate from.

        Raises:
            EpisodeClosedError: the episode has ended.
            TokenBudgetError: the continued segment has no room left for a new turn.
            TemplateError: the chat template cannot render the request.
        """
        if self.closed:
            raise EpisodeClosedError("this episode has ended; its key is no longer accepted",
                                     fix="make every model call before the program returns")
        msgs = [dict(m) for m in messages]
        tools_key = json.dumps([dict(t) for t in tools or ()], sort_keys=True, default=str)
        self.calls += 1
        seg = self._extendable(msgs, tools_key)
        if seg is not None:
            new = msgs[len(seg.conversation):]
            try:
                suffix = self.chat.tool_suffix_ids(seg.last_sampled, new, list(tools or ()) or None,
                                                   add_generation_prompt=True)
            except TemplateError as exc:  # cannot append these messages: render the request afresh
                logger.debug("call %d starts a new segment: %s", self.calls, exc.what)
                seg = None
            else:
                room = self.max_total_tokens - len(seg.ids) - len(suffix)
                if room <= 0:
                    raise TokenBudgetError(
                        f"the conversation has used its token budget ({len(seg.ids)} response tokens, "
                        f"{len(suffix)} more for the new messages, rollout.max_total_tokens={self.max_total_tokens})",
                        fix="end the episode sooner, or raise rollout.max_total_tokens")
                seg.busy = True
                return CallTicket(self.calls, seg.index, tuple(seg.prompt_ids + seg.ids + suffix), True, tuple(msgs),
                                  room)
        prompt = render_messages(self.tokenizer, msgs, list(tools or ()) or None)
        seg = _Segment(len(self.segments), tools_key, list(prompt), first_messages=len(msgs), busy=True)
        self.segments.append(seg)
        return CallTicket(self.calls, seg.index, tuple(prompt), False, tuple(msgs), self.max_total_tokens)

    def _extendable(self, msgs: list[dict[str, Any]], tools_key: str) -> _Segment | None:
        """The idle segment whose conversation `msgs` extends with new messages (the newest if several)."""
        for seg in reversed(self.segments):
            n = len(seg.conversation)
            if seg.busy or not n or seg.tools_key != tools_key or len(msgs) <= n:
                continue
            if msgs[:n] == seg.conversation:
                return seg
        return None

    def finish(self, ticket: CallTicket, token_ids: Sequence[int], logprobs: Sequence[float], finish_reason: str,
               reply: Mapping[str, Any], tool_calls: Sequence[ToolCall] = (), malformed: int = 0,
               seconds: float = 0.0) -> None:
        """Record a finished call: the sampled ids and logprobs, and the reply as the program received it."""
        seg = self.segments[ticket.segment]
        seg.busy = False
        if self.closed:
            return
        if len(token_ids) != len(logprobs):
            raise ValueError(f"call {ticket.number}: {len(token_ids)} token ids but {len(logprobs)} logprobs")
        head = len(seg.prompt_ids) + len(seg.ids)
        context = list(ticket.prompt_ids[head:]) if ticket.extends else []
        seg.ids += context + [int(t) for t in token_ids]
        seg.mask += [0] * len(context) + [1] * len(token_ids)
        seg.logprobs += [0.0] * len(context) + [float(x) for x in logprobs]
        seg.conversation = [*ticket.messages, dict(reply)]
        seg.last_sampled = tuple(int(t) for t in token_ids)
        self.finished_calls += 1
        seg.last_finished = ticket.number
        self.last_finish = finish_reason
        self.tool_calls.extend(tool_calls)
        self.malformed += malformed
        self.generate_s += seconds

    def abort(self, ticket: CallTicket) -> None:
        """A call that produced nothing the program saw (an error, a disconnect): forget it.

        The segment stays as it was (a segment that this call opened stays empty and is dropped)."""
        self.segments[ticket.segment].busy = False

    def close(self) -> None:
        """No call is accepted from now on (late results of calls in flight are ignored)."""
        self.closed = True

    # ------------------------------------------------------------------ result
    def trajectory(self, task: Task, sample_index: int, *, result: Any = None, error: str | None = None,
                   fallback_prompt: Sequence[int] = ()) -> Trajectory:
        """The episode as a trajectory: the segment of the last finished call, earlier segments in `segments`.

        `error` (a traceback, a timeout) makes the finish reason `error`. `fallback_prompt` is the
        prompt of an episode that made no call (the task's rendering), so the trajectory has one.
        """
        self.close()
        used = [s for s in self.segments if s.conversation]
        if error is not None:
            finish: FinishReason = "error"
        else:
            finish = "length" if self.last_finish == "length" else "stop"
        timing = {"total_s": time.perf_counter() - self.started, "generate_s": self.generate_s}
        if not used:
            return Trajectory(
                task_id=task.id, sample_index=sample_index, prompt_ids=tuple(fallback_prompt), response_ids=(),
                loss_mask=(), logprobs=(), messages=tuple(dict(m) for m in task.messages),
                num_prompt_messages=len(task.messages), finish_reason=finish, num_turns=0, error=error,
                result=result, timing=timing)
        main = max(used, key=lambda s: s.last_finished)
        earlier = tuple(s.segment() for s in used if s is not main)
        return Trajectory(
            task_id=task.id, sample_index=sample_index, prompt_ids=tuple(main.prompt_ids),
            response_ids=tuple(main.ids), loss_mask=tuple(main.mask), logprobs=tuple(main.logprobs),
            messages=tuple(main.conversation), num_prompt_messages=main.first_messages,
            tool_calls=tuple(self.tool_calls), finish_reason=finish, num_turns=self.finished_calls,
            malformed_tool_calls=self.malformed, error=error, result=result, timing=timing, segments=earlier)
