"""`env: program`: the episode driver that runs agent programs against the recording endpoint.

    {"id": "t1", "messages": [...], "env": "program",
     "env_args": {"entry": "examples/agent_program/agent.py:run", "timeout": 120}}

For every episode: a key of its own, a program thread with an `openai`
client bound to the endpoint, the program's return value as
`Trajectory.result`, and the recorded calls as its tokens. A program that
raises or runs past `timeout` is one failed episode (finish reason `error`,
the traceback in `Trajectory.error` and the log), never a failed run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolrl.chat.template import render_prompt
from toolrl.errors import ToolrlError
from toolrl.rollout.program_loop import EpisodeJob, RolloutServices
from toolrl.types import Trajectory

from toolrl_env_program.endpoint import EpisodeSession, ProgramEndpoint
from toolrl_env_program.programs import ProgramFailed, ProgramThread, load_entry

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0
DEFAULT_MODEL = "policy"


@dataclass(frozen=True)
class ProgramOptions:
    """`env_args` of a program task (over the config's `envs.program` defaults).

    Attributes:
        entry: "module:function" or "path/to/file.py:function"; `run(client, task) -> result`.
        timeout: seconds an episode may take, model calls included; past it the episode fails.
        model: the model name the program sends (`model=` of its requests).
        args: anything for the program; it gets it as `task["env_args"]["args"]`.
    """

    entry: str
    timeout: float = DEFAULT_TIMEOUT
    model: str = DEFAULT_MODEL
    args: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_args(cls, args: Mapping[str, Any], where: str) -> ProgramOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ToolrlError(f"unknown env_args {unknown} for env: program", where=where,
                              fix=f"use only {sorted(known)}; put the program's own settings under args")
        if "entry" not in args:
            raise ToolrlError("env: program needs env_args.entry, the program to run", where=where,
                              fix='add "env_args": {"entry": "my_module:run"} to the task, or envs.program.entry '
                                  "to the config")
        timeout = args.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ToolrlError(f"env_args.timeout must be a positive number of seconds, got {timeout!r}", where=where,
                              fix="e.g. timeout: 120")
        model = args.get("model", DEFAULT_MODEL)
        if not isinstance(model, str) or not model:
            raise ToolrlError(f"env_args.model must be a non-empty string, got {model!r}", where=where,
                              fix=f"leave it out (the model is then called {DEFAULT_MODEL!r})")
        extra = args.get("args", {}) or {}
        if not isinstance(extra, Mapping):
            raise ToolrlError("env_args.args must be a mapping", where=where, fix="e.g. args: {max_steps: 3}")
        load_entry(args["entry"], f"{where}: env_args.entry")
        return cls(args["entry"], float(timeout), model, dict(extra))


class ProgramDriver:
    """The `program` environment: runs every episode's agent program (see the module doc)."""

    def __call__(self, ctx: Any, **args: Any) -> Any:
        raise ToolrlError("the 'program' environment runs whole episodes; it is not a tool executor",
                          where="env: program",
                          fix="run it through toolrl's rollout (toolrl train / toolrl eval / run_episodes), which "
                              "hands program tasks to it")

    async def run_episodes(self, jobs: Sequence[EpisodeJob], services: RolloutServices) -> list[Trajectory]:
        options = [ProgramOptions.from_args(job.args, f"task {job.task.id!r}") for job in jobs]
        models = sorted({o.model for o in options})
        if len(models) > 1:
            raise ToolrlError(f"the program tasks of one batch name different models {models}", where="env_args.model",
                              fix="give every program task the same env_args.model (or set envs.program.model)")
        _quiet_http_clients()
        endpoint = ProgramEndpoint(services, model_name=models[0] if models else DEFAULT_MODEL)
        await endpoint.start()
        try:
            return list(await asyncio.gather(*(self._episode(job, opts, endpoint, services)
                                               for job, opts in zip(jobs, options))))
        finally:
            await endpoint.stop()

    async def _episode(self, job: EpisodeJob, opts: ProgramOptions, endpoint: ProgramEndpoint,
                       services: RolloutServices) -> Trajectory:
        session = endpoint.open(job)
        task = job.task.to_dict()
        task["env_args"] = {**task["env_args"], "args": dict(opts.args)}
        runner = ProgramThread(load_entry(opts.entry), endpoint.base_url, session.key, task, opts.timeout,
                               name=f"toolrl-program-{job.task.id}#{job.sample_index}")
        result, error = None, None
        runner.start()
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(runner.future), opts.timeout)
        except asyncio.TimeoutError:
            stack = runner.where()
            runner.cancel()
            error = (f"the agent program did not finish within env_args.timeout={opts.timeout:g}s"
                     + (f"; it was here:\n{stack}" if stack else ""))
        except ProgramFailed as exc:
            error = f"the agent program raised:\n{exc.trace}"
        finally:
            endpoint.close(session)
        traj = session.recorder.trajectory(job.task, job.sample_index, result=_portable(result, job),
                                           error=error, fallback_prompt=_fallback_prompt(services, job))
        if error is not None and session.backend_errors:  # the rollout backend failed under the program
            traj = dataclasses.replace(traj, infra_error=True,
                                       error=f"{error}\nrollout backend errors: {session.backend_errors[:3]}")
        _log(traj, session, services.settings.debug, services.tokenizer)
        return traj


def _quiet_http_clients() -> None:
    """The programs' HTTP clients log every request at INFO; one line per model call drowns the run's log.
    Loggers someone configured explicitly are left alone."""
    for name in ("httpx", "httpx2"):
        log = logging.getLogger(name)
        if log.level == logging.NOTSET:
            log.setLevel(logging.WARNING)


def _portable(result: Any, job: EpisodeJob) -> Any:
    """The result, if it can travel between processes (Ray pickles trajectories); else its repr."""
    try:
        pickle.dumps(result)
    except Exception as exc:
        logger.warning("the result of %s#%d cannot be pickled (%s); rewards get its repr instead",
                       job.task.id, job.sample_index, exc)
        return repr(result)
    return result


def _fallback_prompt(services: RolloutServices, job: EpisodeJob) -> list[int]:
    try:
        return render_prompt(services.tokenizer, job.task)
    except ToolrlError:
        return []


def _log(t: Trajectory, session: EpisodeSession, debug: bool, tokenizer: Any) -> None:
    head = (f"[program] task={t.task_id} sample={t.sample_index} finish={t.finish_reason} calls={t.num_turns} "
            f"segments={1 + len(t.segments)} sampled_tokens={t.num_sampled_tokens + sum(sum(s.loss_mask) for s in t.segments)}"
            f" result={t.result!r}"[:400])
    if t.error is not None:
        logger.warning("agent program failed on %s#%d: %s", t.task_id, t.sample_index, t.error)
    if not debug:
        return
    lines = [head]
    for k, seg in enumerate([*t.segments, t]):
        lines.append(f"segment {k} prompt: " + tokenizer.decode(list(seg.prompt_ids), skip_special_tokens=False))
        lines.append(f"segment {k} response: " + tokenizer.decode(list(seg.response_ids), skip_special_tokens=False))
    if t.error:
        lines.append(f"error: {t.error}")
    # debug output must show even where INFO is filtered out: log at the logger's own level
    logger.log(max(logging.INFO, logger.getEffectiveLevel()), "\n".join(lines))
