"""The agent loop: tasks in, token-exact trajectories out.

    settings = LoopSettings.from_config(cfg.rollout, seed=cfg.trainer.seed, envs=cfg.envs)
    trajs = await run_episodes(tasks, n=4, backend=backend, tokenizer=tok, settings=settings, ctx=ctx)
    trajs = run_episodes_sync(...)                      # from synchronous code

Results are task-major: task 0 samples 0..n-1, then task 1, ... Every
episode runs concurrently (the backend batches their generations, slow
environments wait without holding anyone up), and the batch always
completes: a failing or hung environment, a bad tool call or a backend error
ends that one trajectory with finish reason `error` (or tells the model what
was wrong), never the batch. Tasks whose environment is an episode driver
(`env: program`, toolrl.rollout.program_loop) are handed to it whole; their
trajectories come back in the same task-major order.

One episode:
    ids = render_prompt(task)                   # the prompt, once per task
    loop over turns:
        sampled = backend.agenerate(ids + response)       -> mask 1, rollout logprobs
        calls = parser.parse(decode(sampled))             (decode only to read the calls)
        no calls / no env            -> stop
        results = env.step(call) ...  (or an error message for a malformed call)
        response += ids of [rest of end-of-turn, tool messages, generation prompt]  -> mask 0
The model's tokens are never decoded and re-encoded (docs/rollout.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolrl.chat.parsers import ParsedTurn, ToolParser, get_parser
from toolrl.chat.template import ChatFormat, render_prompt
from toolrl.env import EnvContext
from toolrl.errors import ToolrlError
from toolrl.rollout.base import GenerationRequest, QueueFullError, RolloutBackend, SamplingParams
from toolrl.rollout import program_loop
from toolrl.rollout.env_calls import EnvCaller, EnvTimeoutError
from toolrl.types import Task, ToolCall, ToolResult, Trajectory

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopSettings:
    """How episodes run (from `rollout.*` in the config; see docs/config.md)."""

    max_turns: int = 4
    max_new_tokens: int = 256
    max_total_tokens: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    tool_parser: str = "auto"
    env_timeout: float = 30.0
    max_tool_result_chars: int = 2000
    debug: bool = False
    seed: int = 0
    env_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, rollout: Any, seed: int = 0, envs: Mapping[str, Mapping[str, Any]] | None = None,
                    **overrides: Any) -> LoopSettings:
        """Build from a `RolloutConfig` (`cfg.rollout`), the run seed and `cfg.envs` defaults."""
        values = dict(
            max_turns=rollout.max_turns, max_new_tokens=rollout.max_new_tokens,
            max_total_tokens=rollout.max_total_tokens, temperature=rollout.temperature, top_p=rollout.top_p,
            top_k=rollout.top_k, stop=tuple(rollout.stop), tool_parser=rollout.tool_parser,
            env_timeout=rollout.env_timeout, max_tool_result_chars=rollout.max_tool_result_chars,
            debug=rollout.debug, seed=seed, env_defaults=dict(envs or {}),
            ignore_eos=getattr(rollout, "ignore_eos", False), min_tokens=getattr(rollout, "min_tokens", 0),
        )
        values.update(overrides)
        return cls(**values)

    def sampling(self, max_tokens: int, stop_ids: Sequence[int], seed: int) -> SamplingParams:
        # ignore_eos (fixed-length benchmarks): no end-of-turn stop ids either
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                              max_tokens=max_tokens, stop_token_ids=() if self.ignore_eos else tuple(stop_ids),
                              stop=self.stop, seed=seed, ignore_eos=self.ignore_eos,
                              min_tokens=min(self.min_tokens, max_tokens))


def derive_seed(*parts: Any) -> int:
    """A stable 63-bit seed from any parts (run seed, step, task id, sample index, turn)."""
    h = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFF_FFFF_FFFF_FFFF


async def run_episodes(
    tasks: Sequence[Task],
    n: int,
    backend: RolloutBackend,
    tokenizer: Any,
    settings: LoopSettings,
    ctx: EnvContext | None = None,
    *,
    step: int = 0,
) -> list[Trajectory]:
    """Run `n` episodes of every task concurrently; task-major order.

    Sample i of task t is seeded by (settings.seed, step, t.id, i): the same seed, step and
    tasks reproduce the same trajectories. `ctx` holds run-scoped resources the environments
    share; when None, a fresh one is made and closed at the end.
    """
    from toolrl import plugins

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    envs = plugins.registry("environments")
    for name in sorted({t.env for t in tasks if t.env}):
        envs.get(name)  # an unknown environment is the user's mistake: fail before any generation
    own_ctx = ctx is None
    ctx = ctx or EnvContext()
    runner = _Runner(backend, tokenizer, settings, ctx, get_parser(settings.tool_parser), step)
    try:
        drivers = program_loop.episode_drivers(tasks, envs)  # environments that run whole episodes (env: program)
        prompts = {id(t): render_prompt(tokenizer, t) for t in tasks if t.env not in drivers}
        services = program_loop.RolloutServices(backend, tokenizer, settings, ctx, step)
        return await program_loop.run_mixed(tasks, n, drivers, services,
                                            lambda task, i: runner.episode(task, prompts[id(task)], i))
    finally:
        runner.close()
        if own_ctx:
            await ctx.aclose()


def run_episodes_sync(*args: Any, **kwargs: Any) -> list[Trajectory]:
    """`run_episodes` for synchronous callers (not from inside a running event loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_episodes(*args, **kwargs))
    raise RuntimeError("run_episodes_sync was called inside a running event loop; use `await run_episodes(...)`")


@dataclass
class _Episode:
    """The growing state of one trajectory."""

    task: Task
    sample_index: int
    prompt_ids: list[int]
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    turns: int = 0
    malformed: int = 0
    tool_errors: int = 0
    infra_error: bool = False
    error: str | None = None
    finish: str = "stop"
    env_state: Any = None
    timing: dict[str, float] = field(default_factory=lambda: {"generate_s": 0.0, "env_s": 0.0})

    def add(self, ids: Sequence[int], logprobs: Sequence[float] | None) -> None:
        self.ids.extend(ids)
        if logprobs is None:
            self.mask.extend([0] * len(ids))
            self.logprobs.extend([0.0] * len(ids))
        else:
            self.mask.extend([1] * len(ids))
            self.logprobs.extend(float(x) for x in logprobs)

    def trajectory(self) -> Trajectory:
        return Trajectory(
            task_id=self.task.id, sample_index=self.sample_index, prompt_ids=tuple(self.prompt_ids),
            response_ids=tuple(self.ids), loss_mask=tuple(self.mask), logprobs=tuple(self.logprobs),
            messages=tuple(self.messages), num_prompt_messages=len(self.task.messages),
            tool_calls=tuple(self.tool_calls), finish_reason=self.finish,  # type: ignore[arg-type]
            num_turns=self.turns, malformed_tool_calls=self.malformed, tool_errors=self.tool_errors,
            infra_error=self.infra_error, error=self.error, env_state=self.env_state, timing=dict(self.timing),
        )


class _Runner:
    """Shared state of one `run_episodes` call."""

    def __init__(self, backend: RolloutBackend, tokenizer: Any, settings: LoopSettings, ctx: EnvContext,
                 parser: ToolParser, step: int):
        self.backend = backend
        self.tokenizer = tokenizer
        self.settings = settings
        self.ctx = ctx
        self.parser = parser
        self.step = step
        self.chat = ChatFormat.of(tokenizer)
        self.stop_ids = self.chat.info.end_of_turn_ids
        self.env_calls = EnvCaller(settings.env_timeout)

    def close(self) -> None:
        self.env_calls.close()

    async def episode(self, task: Task, prompt_ids: list[int], sample_index: int) -> Trajectory:
        t0 = time.perf_counter()
        ep = _Episode(task, sample_index, list(prompt_ids), messages=[dict(m) for m in task.messages])
        seed = derive_seed(self.settings.seed, self.step, task.id, sample_index)
        env = None
        try:
            if task.env:
                env = await self._make_env(task)
            await self._turns(ep, env, seed)
        except Exception as exc:  # the batch always completes: this trajectory ends with the error
            ep.finish = "error"
            ep.error = ep.error or _describe(exc)
            if isinstance(exc, ToolrlError):  # a clear, expected problem (e.g. a prompt too long)
                logger.warning("episode %s#%d ended with an error: %s", task.id, sample_index, exc)
            elif not isinstance(exc, (EnvTimeoutError, _EnvFailure)):
                logger.exception("episode %s#%d failed", task.id, sample_index)
        finally:
            if env is not None:
                await self._finish_env(ep, env)
        ep.timing["total_s"] = time.perf_counter() - t0
        traj = ep.trajectory()
        if self.settings.debug:
            self._debug_log(traj)
        return traj

    # ------------------------------------------------------------------ turns
    async def _turns(self, ep: _Episode, env: Any, seed: int) -> None:
        s = self.settings
        tools = list(ep.task.tools) or None
        for turn in range(1, s.max_turns + 1):
            budget = s.max_total_tokens - len(ep.ids)
            if budget <= 0:
                ep.finish = "length"
                return
            req = GenerationRequest(
                prompt_ids=tuple(ep.prompt_ids + ep.ids),
                sampling=s.sampling(min(s.max_new_tokens, budget), self.stop_ids, derive_seed(seed, turn)),
                request_id=f"{ep.task.id}#{ep.sample_index}/t{turn}",
            )
            g0 = time.perf_counter()
            result = await self._generate(req)
            ep.timing["generate_s"] += time.perf_counter() - g0
            if result.finish_reason == "abort":
                raise RuntimeError("the backend aborted the generation")
            ep.turns = turn
            ep.add(result.token_ids, result.logprobs)
            text = self._decode_turn(result.token_ids, result.finish_reason)
            ep.messages.append({"role": "assistant", "content": text})
            parsed = self.parser.parse(text)
            calls = [dataclasses.replace(c, id=f"call_{turn}_{i}") for i, c in enumerate(parsed.tool_calls)]
            ep.tool_calls.extend(calls)
            ep.malformed += len(parsed.malformed)
            if result.finish_reason == "length":
                ep.finish = "length"  # a cut-off turn is never executed, even if it holds a complete call
                return
            if env is None or not parsed.has_calls:
                ep.finish = "stop"
                return
            tool_messages, done = await self._run_tools(ep, env, calls, parsed)
            last = done or turn == s.max_turns
            suffix = self.chat.tool_suffix_ids(result.token_ids, tool_messages, tools, add_generation_prompt=not last)
            if len(ep.ids) + len(suffix) > s.max_total_tokens:
                ep.finish = "length"
                return
            ep.add(suffix, None)
            ep.messages.extend(tool_messages)
            if done:
                ep.finish = "env_done"
                return
        ep.finish = "max_turns"

    async def _generate(self, req: GenerationRequest) -> Any:
        """`backend.agenerate`, waiting (not failing) while the backend's queue is full."""
        delay = 0.01
        while True:
            try:
                return await self.backend.agenerate(req)
            except QueueFullError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _decode_turn(self, ids: Sequence[int], finish: str) -> str:
        """The turn's text (to parse and to record), without the end-of-turn token it stopped on."""
        if finish == "stop" and ids and ids[-1] in self.stop_ids:
            ids = ids[:-1]
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    async def _run_tools(self, ep: _Episode, env: Any, calls: list[ToolCall],
                         parsed: ParsedTurn) -> tuple[list[dict[str, Any]], bool]:
        """Execute the turn's calls in order (then answer malformed ones); returns tool messages and done."""
        messages: list[dict[str, Any]] = []
        done = False
        e0 = time.perf_counter()
        try:
            for call in calls:
                result = await self._step(env, call)
                if result.infra_error:
                    ep.infra_error = True
                    ep.error = f"infrastructure error in environment {ep.task.env!r}: {result.text[:500]}"
                    raise _EnvFailure(ep.error)
                info = result.info or {}
                if info.get("status") == "error" or info.get("error"):
                    ep.tool_errors += 1
                messages.append({"role": "tool", "name": call.name, "tool_call_id": call.id,
                                 "content": self._truncate(result.text)})
                done = done or bool(result.done)
            for bad in parsed.malformed:
                messages.append({"role": "tool", "content": bad.message()})
        finally:
            ep.timing["env_s"] += time.perf_counter() - e0
        return messages, done

    async def _step(self, env: Any, call: ToolCall) -> ToolResult:
        try:
            result = await self.env_calls.call(f"environment step ({call.name})", env.step, call)
        except EnvTimeoutError:
            raise
        except Exception as exc:
            raise _EnvFailure(f"environment step ({call.name}) raised {_describe(exc)}") from exc
        if not isinstance(result, ToolResult):
            raise _EnvFailure(f"environment step ({call.name}) returned {type(result).__name__}, not a ToolResult")
        return result

    def _truncate(self, text: str) -> str:
        limit = self.settings.max_tool_result_chars
        text = "" if text is None else str(text)
        if len(text) <= limit:
            return text
        return text[:limit] + f"\n... [truncated {len(text) - limit} characters]"

    # ------------------------------------------------------------------ environment lifecycle
    async def _make_env(self, task: Task) -> Any:
        from toolrl import plugins
        from toolrl.env import maybe_await

        factory = plugins.registry("environments").get(task.env)
        args = {**dict(self.settings.env_defaults.get(task.env, {}) or {}), **dict(task.env_args)}
        try:
            env = await maybe_await(factory(self.ctx, **args))
        except Exception as exc:
            raise _EnvFailure(f"creating environment {task.env!r} raised {_describe(exc)}") from exc
        try:
            await self.env_calls.call(f"environment reset ({task.env})", env.reset, task)
        except EnvTimeoutError:
            await self._close_quietly(env)
            raise
        except Exception as exc:
            await self._close_quietly(env)
            raise _EnvFailure(f"environment reset ({task.env}) raised {_describe(exc)}") from exc
        return env

    async def _finish_env(self, ep: _Episode, env: Any) -> None:
        try:
            if hasattr(env, "state"):
                ep.env_state = await self.env_calls.call("environment state", env.state)
        except Exception as exc:
            logger.warning("environment state() failed for %s#%d: %s", ep.task.id, ep.sample_index, _describe(exc))
        await self._close_quietly(env)

    async def _close_quietly(self, env: Any) -> None:
        if not hasattr(env, "close"):
            return
        try:
            await self.env_calls.call("environment close", env.close)
        except Exception as exc:  # closing must not change the trajectory
            logger.warning("environment close() failed: %s", _describe(exc))

    # ------------------------------------------------------------------ debug
    def _debug_log(self, t: Trajectory) -> None:
        lines = [f"[rollout debug] task={t.task_id} sample={t.sample_index} finish={t.finish_reason} "
                 f"turns={t.num_turns} sampled_tokens={t.num_sampled_tokens} malformed={t.malformed_tool_calls}"
                 + (f" error={t.error}" if t.error else "")]
        lines.append("prompt: " + self.tokenizer.decode(list(t.prompt_ids), skip_special_tokens=False))
        for m in t.completion_messages:
            lines.append(f"{m['role']}: {m.get('content')}")
        for c in t.tool_calls:
            lines.append(f"tool call {c.id}: {c.name}({dict(c.arguments)})")
        sampled = [round(lp, 4) for lp, k in zip(t.logprobs, t.loss_mask) if k]
        lines.append(f"logprobs of sampled tokens: {sampled}")
        # debug output must show even where INFO is filtered out: log at the logger's own level
        logger.log(max(logging.INFO, logger.getEffectiveLevel()), "\n".join(lines))


class _EnvFailure(Exception):
    """An environment raised or misbehaved (the message is the trajectory's `error`)."""


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, (_EnvFailure, EnvTimeoutError)):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
