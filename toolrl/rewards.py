"""Rewards: the contract a reward plugin implements, and the weighted composition.

The contract (docs/plugin-guide.md walks through it)
----------------------------------------------------
A reward is a plain function, sync or async, registered under a name through
the `register_rewards` hook. toolrl calls it once per batch:

    def my_reward(trajectories, *, tasks, metadata, env_states, completions, **args) -> list[float | None]

* `trajectories` (the first positional parameter, any name): the batch, a
  `list[toolrl.types.Trajectory]`. Trajectories that hit an infrastructure
  error are never passed in (they are masked out of the update).
* The keywords toolrl passes, each a list aligned with `trajectories`
  (`REWARD_KEYWORDS`):
    - `tasks`:       the `toolrl.types.Task` each trajectory was sampled from;
    - `metadata`:    `tasks[i].metadata` (ground truth, tests, references ...);
    - `env_states`:  `trajectories[i].env_state`, the environment's final state
                     (`Environment.state()`), None for tasks without environment;
    - `completions`: `trajectories[i].final_text`, the content of the last
                     assistant message (the final answer);
    - `result`:      `trajectories[i].result`, what an agent program returned
                     (`env: program`, docs/environments.md), None otherwise.
  A reward receives the keywords it names in its signature; one with `**kwargs`
  receives all of them. Nothing else is passed implicitly.
* `args`: the config's `rewards[i].args`, passed as keyword arguments. Every key
  must be a parameter of the function (or it must take `**kwargs`); required
  parameters that are neither documented keywords nor in `args` are an error.
  Both are checked before anything runs (`prepare_rewards`).
* It returns one value per trajectory: a finite float (ints, bools and numpy
  scalars are accepted), or None to exclude that sample from the update (it is
  counted in `reward/none/<name>`). Anything else — NaN, inf, a string, the wrong
  number of values — or an exception is a `RewardError` naming the reward, its
  plugin, the task id and the value; with `on_error: skip` the affected samples
  are excluded instead and counted in `reward/errors/<name>`.

Composition
-----------
`compute_rewards` calls every configured reward on the batch (sync rewards first,
in the calling thread, one after another; then the async rewards, concurrently)
and sums them by weight: `total = sum(weight_k * value_k)`. A sample is excluded
(`RewardResult.total is None`) when it hit an infrastructure error, when any
component returned None for it, or when a component failed on it with
`on_error: skip`.

Metrics (all floats):
    reward/mean             mean total over included samples (absent if none); the
                            trainer adds reward/std, /min, /max, /accuracy beside it
    reward/<name>           mean raw (unweighted) value of one component
    reward/excluded         number of excluded samples (all reasons)
    reward/infra_error      number of samples masked for infrastructure errors
    reward/none/<name>      samples for which <name> returned None
    reward/errors/<name>    samples on which <name> failed (on_error: skip)
    timing/reward/<name>    wall time of <name> on this batch (seconds)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import numbers
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from toolrl.errors import ConfigError, ConfigProblem, RewardError
from toolrl.types import RewardResult, Task, Trajectory

logger = logging.getLogger(__name__)

REWARD_KEYWORDS: tuple[str, ...] = ("tasks", "metadata", "env_states", "completions", "result")
"""The keywords toolrl passes to a reward (each a list aligned with the trajectories)."""

RESERVED_NAMES = frozenset({"total", "mean", "std", "min", "max", "accuracy", "excluded", "infra_error",
                            "none", "errors", "kl_penalty", "zero_std_groups"})
"""Reward names that would collide with composition and step metrics (`reward/mean` ...)."""

RewardValue = float | None
RewardFn = Callable[..., Any]


@dataclass(frozen=True)
class PreparedReward:
    """A configured reward, resolved and checked: what `compute_rewards` calls.

    Attributes:
        name: the registered name (also the metric name `reward/<name>`).
        fn: the registered function.
        weight: its weight in the total.
        args: keyword arguments from the config.
        on_error: "raise" or "skip".
        plugin: the plugin that registered it (for error messages).
        distribution: the distribution of that plugin, None for built-ins/hand registration.
        keywords: the documented keywords this function receives.
    """

    name: str
    fn: RewardFn
    weight: float = 1.0
    args: Mapping[str, Any] = field(default_factory=dict)
    on_error: Literal["raise", "skip"] = "raise"
    plugin: str = "?"
    distribution: str | None = None
    keywords: frozenset[str] = frozenset(REWARD_KEYWORDS)

    @property
    def owner(self) -> str:
        """'plugin P (distribution D)', for messages."""
        dist = f", distribution {self.distribution}" if self.distribution else ""
        return f"plugin {self.plugin!r}{dist}"


# --------------------------------------------------------------------------
# Resolving and checking the configured rewards
# --------------------------------------------------------------------------


def prepare_rewards(specs: Sequence[Any], *, registry: Any = None) -> list[PreparedReward]:
    """Resolve reward specs to functions and check that each can be called as configured.

    Call it once at start-up so that a wrong name or argument fails before any
    model loads; `compute_rewards` accepts its result in place of the specs.

    Args:
        specs: `toolrl.config.RewardSpec` objects or dicts with the same keys
            (`name`, `weight`, `args`, `on_error`), e.g. `config.rewards`.
        registry: where names are looked up: a `toolrl.plugins.Registry`, a
            mapping `name -> function`, or None for the installed plugins.

    Returns:
        One `PreparedReward` per spec, in order.

    Raises:
        ConfigError: a spec has an unknown key or a value of the wrong type.
        UnknownNameError: no plugin registered that name.
        RewardError: no rewards, a duplicate, a reserved name, or a signature
            that cannot take the documented keywords plus `args`.
    """
    from toolrl.config import RewardSpec

    reg = _as_registry(registry)
    if not specs:
        raise RewardError(
            "no reward is configured", where="rewards",
            fix="add at least one, e.g. rewards: [{name: math_equiv, weight: 1.0}] "
                "(`toolrl plugins --all` lists the installed rewards)",
        )
    out: list[PreparedReward] = []
    seen: set[str] = set()
    for i, raw in enumerate(specs):
        if isinstance(raw, PreparedReward):
            out.append(raw)
            continue
        spec = raw if isinstance(raw, RewardSpec) else _validate_spec(raw, i)
        where = f"rewards[{i}] ({spec.name})"
        if spec.name in seen:
            raise RewardError(f"reward {spec.name!r} is listed twice", where=where,
                              fix="list each reward once and set its weight")
        seen.add(spec.name)
        if spec.name in RESERVED_NAMES:
            raise RewardError(f"the reward name {spec.name!r} is reserved for composition metrics", where=where,
                              fix=f"register the reward under another name (reserved: {sorted(RESERVED_NAMES)})")
        entry = reg.entry(spec.name)
        prepared = PreparedReward(
            name=spec.name, fn=entry.obj, weight=float(spec.weight), args=dict(spec.args), on_error=spec.on_error,
            plugin=entry.plugin, distribution=entry.distribution,
        )
        keywords = check_signature(prepared.fn, prepared.args, name=spec.name, where=where, owner=prepared.owner)
        out.append(_replace(prepared, keywords=keywords))
    return out


def _replace(p: PreparedReward, **changes: Any) -> PreparedReward:
    import dataclasses

    return dataclasses.replace(p, **changes)


def _validate_spec(raw: Any, index: int) -> Any:
    from pydantic import ValidationError

    from toolrl.config import RewardSpec

    if not isinstance(raw, Mapping):
        raise ConfigError([ConfigProblem(f"rewards.{index}", raw, "a reward must be a mapping",
                                         "write {name: math_equiv, weight: 1.0}")])
    try:
        return RewardSpec.model_validate(dict(raw))
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            key = ".".join(["rewards", str(index), *(str(p) for p in err["loc"])])
            problems.append(ConfigProblem(key, err.get("input"), err["msg"].rstrip("."),
                                          "valid keys: name, weight, args, on_error (raise | skip)"))
        raise ConfigError(problems) from None


def _as_registry(registry: Any) -> Any:
    from toolrl.plugins import Entry, Registry
    from toolrl.plugins import registry as installed

    if registry is None:
        return installed("rewards")
    if isinstance(registry, Registry):
        return registry
    if isinstance(registry, Mapping):
        reg = Registry("rewards")
        for name, fn in registry.items():
            reg.add(Entry(name, fn, "<registry argument>", None))
        return reg
    raise TypeError(f"registry must be a toolrl.plugins.Registry, a mapping or None, not {type(registry).__name__}")


def check_signature(fn: RewardFn, args: Mapping[str, Any], *, name: str, where: str = "",
                    owner: str = "") -> frozenset[str]:
    """Check that `fn` can be called as a reward with `args`; return the keywords it receives.

    Args:
        fn: the reward function.
        args: the keyword arguments the config gives it.
        name: the reward name (for messages).
        where: where it is configured (for messages), e.g. "rewards[0] (math_equiv)".
        owner: who registered it (for messages).

    Returns:
        The subset of `REWARD_KEYWORDS` that `fn` declares (all of them if it takes `**kwargs`).

    Raises:
        RewardError: naming the parameter or argument that does not fit.
    """
    who = f"reward {name!r}" + (f" ({owner})" if owner else "")
    where = where or f"reward {name!r}"
    for key in args:
        if key in REWARD_KEYWORDS:
            raise RewardError(f"args.{key} clashes with the keyword {key!r} that toolrl passes to every reward",
                              where=where,
                              fix=f"remove {key!r} from args (toolrl passes: {', '.join(REWARD_KEYWORDS)})")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check, pass everything
        return frozenset(REWARD_KEYWORDS)
    params = list(sig.parameters.values())
    P = inspect.Parameter
    positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    if not positional and not any(p.kind is P.VAR_POSITIONAL for p in params):
        raise RewardError(f"{who} takes no positional parameter for the batch of trajectories", where=where,
                          fix="define it as fn(trajectories, *, tasks, metadata, env_states, completions, **args)")
    first = positional[0] if positional else None
    rest = [p for p in params if p is not first and p.kind is not P.VAR_POSITIONAL]
    var_kw = any(p.kind is P.VAR_KEYWORD for p in rest)
    named = {p.name: p for p in rest if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)}
    for p in rest:
        if p.kind is P.POSITIONAL_ONLY and p.default is P.empty:
            raise RewardError(f"{who} has a second required positional-only parameter {p.name!r}", where=where,
                              fix="toolrl passes only the trajectories positionally; make the rest keyword parameters")
    unknown = [k for k in args if k not in named and not var_kw]
    if unknown:
        accepts = sorted(k for k in named if k not in REWARD_KEYWORDS)
        raise RewardError(
            f"{who} does not accept the argument(s) {unknown} given in args", where=where,
            fix=(f"its arguments are: {', '.join(accepts)}" if accepts else "it takes no arguments")
            + "; remove the others from args (or add **kwargs to the function)",
        )
    keywords = frozenset(REWARD_KEYWORDS) if var_kw else frozenset(k for k in REWARD_KEYWORDS if k in named)
    missing = [p.name for p in named.values()
               if p.default is P.empty and p.name not in keywords and p.name not in args]
    if missing:
        raise RewardError(
            f"{who} requires the parameter(s) {missing}, which toolrl does not pass", where=where,
            fix=f"toolrl passes only {', '.join(REWARD_KEYWORDS)}; set the others under args "
                f"(e.g. args: {{{missing[0]}: ...}}) or give them defaults",
        )
    return keywords


# --------------------------------------------------------------------------
# Calling and composing
# --------------------------------------------------------------------------


@dataclass
class _Outcome:
    values: list[RewardValue]
    errors: list[str | None]
    seconds: float


async def compute_rewards(
    trajectories: Sequence[Trajectory],
    tasks: Sequence[Task] | Mapping[str, Task],
    specs: Sequence[Any],
    *,
    registry: Any = None,
) -> tuple[list[RewardResult], dict[str, float]]:
    """Score a batch with every configured reward and sum them by weight.

    Args:
        trajectories: the batch.
        tasks: the tasks the batch was sampled from, in any order and possibly
            repeated (one per trajectory is fine), or a mapping `task.id -> Task`.
            Every trajectory's `task_id` must be among them.
        specs: `config.rewards` (RewardSpec or dicts), or `prepare_rewards(...)`'s result.
        registry: see `prepare_rewards`.

    Returns:
        `(results, metrics)`: one `RewardResult` per trajectory, in order, and the
        metrics listed in this module's docstring.

    Raises:
        RewardError: a reward with `on_error: raise` failed or returned a bad value;
            a trajectory's task is missing from `tasks`.

    Example:
        >>> results, metrics = await compute_rewards(trajs, tasks, config.rewards)  # doctest: +SKIP
        >>> [r.total for r in results], metrics["reward/math_equiv"]  # doctest: +SKIP
    """
    prepared = prepare_rewards(specs, registry=registry)
    by_id = _index_tasks(tasks)
    scored = [i for i, t in enumerate(trajectories) if not t.infra_error]
    batch = [trajectories[i] for i in scored]
    batch_tasks = []
    for t in batch:
        task = by_id.get(t.task_id)
        if task is None:
            raise RewardError(f"trajectory {t.task_id}#{t.sample_index} has no task in the batch",
                              where=f"task {t.task_id!r}", fix="pass the tasks the trajectories were sampled from")
        batch_tasks.append(task)
    keywords: dict[str, list[Any]] = {
        "tasks": batch_tasks,
        "metadata": [task.metadata for task in batch_tasks],
        "env_states": [t.env_state for t in batch],
        "completions": [t.final_text for t in batch],
        "result": [t.result for t in batch],
    }
    outcomes = await _run_all(prepared, batch, keywords)

    results: list[RewardResult] = [RewardResult(None, {}, "infra_error")] * len(trajectories)
    for j, i in enumerate(scored):
        components: dict[str, float | None] = {}
        reason = None
        for r, out in zip(prepared, outcomes):
            components[r.name] = out.values[j]
            if reason is None and out.errors[j] is not None:
                reason = f"reward {r.name!r} failed: {out.errors[j]}"
        if reason is None:
            nones = [name for name, v in components.items() if v is None]
            if nones:
                reason = f"reward {nones[0]!r} returned None"
        total = None if reason else sum(r.weight * components[r.name] for r in prepared)  # type: ignore[operator]
        results[i] = RewardResult(total, components, reason)
    return results, _metrics(results, prepared, outcomes, len(trajectories) - len(scored))


async def _run_all(prepared: list[PreparedReward], batch: list[Trajectory],
                   keywords: Mapping[str, list[Any]]) -> list[_Outcome]:
    """Sync rewards first, one after the other; then the async ones, concurrently.

    Running a sync reward while async ones wait on I/O would stall the event loop
    under them, and their timeouts (a sandbox run's, say) could expire spuriously.
    """
    if not batch:
        return [_Outcome([], [], 0.0) for _ in prepared]
    outcomes: list[_Outcome | None] = [None] * len(prepared)
    for k, r in enumerate(prepared):
        if not _is_async(r.fn):
            outcomes[k] = await _run_one(r, batch, keywords)
    pending = [k for k, out in enumerate(outcomes) if out is None]
    gathered = await asyncio.gather(*(_run_one(prepared[k], batch, keywords) for k in pending),
                                    return_exceptions=True)
    for item in gathered:  # raise the first failure in config order
        if isinstance(item, BaseException):
            raise item
    for k, out in zip(pending, gathered):
        outcomes[k] = out  # type: ignore[assignment]
    return outcomes  # type: ignore[return-value]


def _is_async(fn: RewardFn) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)  # async __call__


def compute_rewards_sync(
    trajectories: Sequence[Trajectory],
    tasks: Sequence[Task] | Mapping[str, Task],
    specs: Sequence[Any],
    *,
    registry: Any = None,
) -> tuple[list[RewardResult], dict[str, float]]:
    """`compute_rewards` for code without an event loop (same arguments and result).

    Every call runs on one event loop that lives as long as the process, so
    resources a reward keeps across calls (a sandbox pool, say) stay usable.
    Calling it from inside a running event loop is an error: await
    `compute_rewards` there instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RewardError("compute_rewards_sync was called from inside a running event loop",
                          fix="use `await toolrl.rewards.compute_rewards(...)` in async code")
    from toolrl import runtime

    return runtime.current().run(compute_rewards(trajectories, tasks, specs, registry=registry))


def reward_loop() -> asyncio.AbstractEventLoop:
    """The process-wide event loop that `compute_rewards_sync` runs on: `toolrl.runtime.current().loop`."""
    from toolrl import runtime

    return runtime.current().loop


def _index_tasks(tasks: Sequence[Task] | Mapping[str, Task]) -> dict[str, Task]:
    if isinstance(tasks, Mapping):
        return dict(tasks)
    out: dict[str, Task] = {}
    for task in tasks:
        old = out.get(task.id)
        if old is not None and old is not task and old != task:
            raise RewardError(f"two different tasks share the id {task.id!r}", where=f"task {task.id!r}",
                              fix="give every task a unique id")
        out[task.id] = task
    return out


async def _run_one(r: PreparedReward, batch: list[Trajectory], keywords: Mapping[str, list[Any]]) -> _Outcome:
    n = len(batch)
    ids = [t.task_id for t in batch]
    kwargs = {k: v for k, v in keywords.items() if k in r.keywords}
    kwargs.update(r.args)
    start = time.perf_counter()
    try:
        value = r.fn(list(batch), **kwargs)
        if inspect.isawaitable(value):
            value = await value
    except Exception as exc:
        return _batch_failure(r, ids, _describe_exception(r, exc, ids), exc, start)
    seconds = time.perf_counter() - start
    values = _as_list(value)
    if values is None or len(values) != n:
        got = (f"{len(values)} values" if values is not None else f"a {type(value).__name__}: {_short(value)}")
        err = RewardError(
            f"reward {r.name!r} ({r.owner}) returned {got} for a batch of {n} trajectories",
            where=f"tasks {_id_list(ids)}",
            fix="return a list with exactly one float (or None) per trajectory, in order",
        )
        return _batch_failure(r, ids, err, None, start)
    out_values: list[RewardValue] = []
    errors: list[str | None] = [None] * n
    for j, v in enumerate(values):
        checked = _check_value(v)
        if isinstance(checked, str):
            err = RewardError(
                f"reward {r.name!r} ({r.owner}) returned {_short(v)} for task {ids[j]!r} "
                f"(sample {batch[j].sample_index}, batch index {j}): {checked}",
                where=f"task {ids[j]!r}",
                fix="return a finite float, or None to exclude the sample; "
                    f"or set on_error: skip for {r.name!r} to exclude failing samples and count them",
            )
            if r.on_error == "raise":
                raise err
            logger.warning("%s (excluded: on_error=skip)", err.what)
            errors[j] = f"returned {_short(v)}"
            out_values.append(None)
        else:
            out_values.append(checked)
    return _Outcome(out_values, errors, seconds)


def _batch_failure(r: PreparedReward, ids: list[str], err: RewardError, cause: BaseException | None,
                   start: float) -> _Outcome:
    if r.on_error == "raise":
        raise err from cause
    logger.warning("%s (the %d sample(s) are excluded: on_error=skip)", err.what, len(ids))
    return _Outcome([None] * len(ids), [err.what] * len(ids), time.perf_counter() - start)


def _describe_exception(r: PreparedReward, exc: Exception, ids: list[str]) -> RewardError:
    if isinstance(exc, RewardError):
        what = f"reward {r.name!r} ({r.owner}) failed: {exc.what}"
        where = exc.where or f"tasks {_id_list(ids)}"
        fix = exc.fix or "fix the reward or its inputs"
    else:
        what = f"reward {r.name!r} ({r.owner}) raised {type(exc).__name__}: {exc}"
        where = f"tasks {_id_list(ids)}"
        fix = "fix the reward (the traceback above shows where it failed)"
    return RewardError(what, where=where,
                       fix=f"{fix}; or set on_error: skip for {r.name!r} to exclude the batch's samples and count them")


def _as_list(value: Any) -> list[Any] | None:
    if value is None or isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        return None
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):
        value = value.tolist()  # numpy arrays, torch tensors
        if not isinstance(value, list):
            return None
    return list(value)


def _check_value(v: Any) -> float | None | str:
    """The value as a float (or None), or a string saying why it is not acceptable."""
    if v is None:
        return None
    if not isinstance(v, numbers.Real):
        return f"a {type(v).__name__} is not a float"
    f = float(v)
    if not math.isfinite(f):
        return "the value is not finite"
    return f


def _short(v: Any, limit: int = 80) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _id_list(ids: Sequence[str], limit: int = 5) -> str:
    uniq = list(dict.fromkeys(ids))
    shown = ", ".join(repr(i) for i in uniq[:limit])
    return shown + (f" and {len(uniq) - limit} more" if len(uniq) > limit else "")


def _metrics(results: list[RewardResult], prepared: list[PreparedReward], outcomes: list[_Outcome],
             infra: int) -> dict[str, float]:
    m: dict[str, float] = {}
    totals = [r.total for r in results if r.total is not None]
    if totals:
        m["reward/mean"] = sum(totals) / len(totals)
    m["reward/excluded"] = float(sum(1 for r in results if r.total is None))
    m["reward/infra_error"] = float(infra)
    for r, out in zip(prepared, outcomes):
        vals = [v for v in out.values if v is not None]
        if vals:
            m[f"reward/{r.name}"] = sum(vals) / len(vals)
        errs = sum(1 for e in out.errors if e is not None)
        m[f"reward/errors/{r.name}"] = float(errs)
        m[f"reward/none/{r.name}"] = float(sum(1 for v in out.values if v is None) - errs)
        m[f"timing/reward/{r.name}"] = out.seconds
    return m
