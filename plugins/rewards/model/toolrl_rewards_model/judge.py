"""An LLM judge: a model behind any OpenAI-compatible endpoint grades each answer with a rubric.

One HTTP request per trajectory (`/chat/completions`, or `/completions` for
base models), at most `concurrency` at a time, each with a timeout and retries
on transport errors, 429 and 5xx. The score is the last match of a regular
expression in the reply, mapped from `score_range` onto [0, 1]. A reply without
a score, or a request that still fails after its retries, is not the policy's
fault: it gives None (the sample is excluded and counted) or 0.0 (`unparsable:
zero`), never an exception. A request the endpoint rejects as malformed or
unauthorised (400, 401, 403, 404, 422) is a configuration error and stops the
run with a message saying what to fix.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import string
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from toolrl.errors import RewardError

logger = logging.getLogger(__name__)

WHERE = "rewards[name=llm_judge].args"
FIELDS = ("question", "answer", "reference")

DEFAULT_RUBRIC = (
    "You are grading an assistant's answer.\n\n"
    "Question:\n{question}\n\n"
    "Answer:\n{answer}\n\n"
    "Rate how correct, complete and helpful the answer is, from 0 (wrong or useless) to 10 (fully correct). "
    "Give one short sentence of justification, then end with a line of the form \"Score: N\"."
)
REFERENCE_RUBRIC = (
    "You are grading an assistant's answer against a reference answer.\n\n"
    "Question:\n{question}\n\n"
    "Reference answer:\n{reference}\n\n"
    "Answer to grade:\n{answer}\n\n"
    "Rate from 0 to 10 how well the answer agrees with the reference (10: same meaning, 0: wrong or unrelated). "
    "Give one short sentence of justification, then end with a line of the form \"Score: N\"."
)
# "Score: 7", "score = 7.5", "**Score:** 8", "SCORE: -1" -> the number; the last match in the reply counts
DEFAULT_SCORE_REGEX = r"(?i)score\**\s*[:=]\s*\**\s*([-+]?\d+(?:\.\d+)?)"
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

_STATS: Counter[str] = Counter()
_STATS_LOCK = threading.Lock()


def judge_stats(reset: bool = False) -> dict[str, int]:
    """Counters over every judge call in this process.

    Keys: `requests` (HTTP attempts), `retries`, `replies`, `scored`, `unparsable`
    (replies without a score), `failed` (requests that failed after their retries),
    `max_in_flight` (the most concurrent requests seen). `reset=True` zeroes them after reading.
    """
    with _STATS_LOCK:
        out = dict(_STATS)
        if reset:
            _STATS.clear()
    return out


def _count(key: str, n: int = 1) -> None:
    with _STATS_LOCK:
        _STATS[key] += n


@dataclass(frozen=True)
class JudgeSettings:
    """The judge's validated arguments (built from the reward's args by `settings`)."""

    base_url: str
    model: str
    api_key: str | None
    rubric: str
    system: str | None
    score_regex: re.Pattern[str]
    score_range: tuple[float, float]
    unparsable: Literal["none", "zero"]
    endpoint: Literal["chat", "completions"]
    max_tokens: int
    temperature: float
    timeout: float
    retries: int
    backoff: float
    concurrency: int
    request_args: Mapping[str, Any] = field(default_factory=dict)
    fields: frozenset[str] = frozenset({"answer"})  # the rubric's fields


@dataclass(frozen=True)
class Verdict:
    """One judged answer: the judge's reply, the parsed number, the reward (None: excluded), and any error."""

    reply: str | None
    raw: float | None
    score: float | None
    error: str | None = None


def settings(*, base_url: str, model: str, api_key_env: str | None, rubric: str, system: str | None,
             score_regex: str, score_range: Sequence[float], unparsable: str, endpoint: str, max_tokens: int,
             temperature: float, timeout: float, retries: int, backoff: float, concurrency: int,
             request_args: Mapping[str, Any] | None) -> JudgeSettings:
    """Check the arguments and return them typed; every problem names the argument and the fix."""
    if not isinstance(base_url, str) or not re.match(r"^https?://[^/\s]+", base_url):
        raise RewardError(f"llm_judge: base_url must be an http(s) URL, got {base_url!r}", where=f"{WHERE}.base_url",
                          fix="use the endpoint's OpenAI base URL, e.g. http://127.0.0.1:8000/v1")
    if not model:
        raise RewardError("llm_judge: model is empty", where=f"{WHERE}.model",
                          fix="name the model the endpoint serves (GET <base_url>/models lists them)")
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise RewardError(f"llm_judge: the environment variable {api_key_env!r} is not set", where=f"{WHERE}.api_key_env",
                              fix=f"export {api_key_env}=<key>, or leave api_key_env unset for an endpoint without keys")
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(rubric) if name is not None}
    except ValueError as exc:
        raise RewardError(f"llm_judge: the rubric is not a valid template: {exc}", where=f"{WHERE}.rubric",
                          fix="write literal braces as {{ and }}") from None
    unknown = sorted(used - set(FIELDS))
    if unknown or "answer" not in used:
        what = f"unknown field(s) {unknown}" if unknown else "no {answer} field"
        raise RewardError(f"llm_judge: the rubric has {what}", where=f"{WHERE}.rubric",
                          fix="use {question}, {answer} and {reference} (answer is required); "
                              "write literal braces as {{ and }}")
    try:
        pattern = re.compile(score_regex)
    except re.error as exc:
        raise RewardError(f"llm_judge: score_regex does not compile: {exc}", where=f"{WHERE}.score_regex",
                          fix=f"use a valid Python regex whose group 1 is the number, e.g. {DEFAULT_SCORE_REGEX!r}") from None
    if pattern.groups < 1:
        raise RewardError("llm_judge: score_regex has no capturing group", where=f"{WHERE}.score_regex",
                          fix="put the number in group 1, e.g. 'Score: (\\d+)'")
    try:
        lo, hi = (float(x) for x in score_range)
    except (TypeError, ValueError):
        lo = hi = 0.0
    if not lo < hi:
        raise RewardError(f"llm_judge: score_range must be [low, high] with low < high, got {score_range!r}",
                          where=f"{WHERE}.score_range", fix="e.g. [0, 10] for a 0-10 rubric")
    checks = [("unparsable", unparsable in ("none", "zero"), "use none (exclude the sample) or zero"),
              ("endpoint", endpoint in ("chat", "completions"), "use chat or completions"),
              ("max_tokens", isinstance(max_tokens, int) and max_tokens >= 1, "use a positive integer"),
              ("timeout", timeout > 0, "use seconds > 0"),
              ("retries", isinstance(retries, int) and retries >= 0, "use 0 or more"),
              ("backoff", backoff >= 0, "use seconds >= 0"),
              ("concurrency", isinstance(concurrency, int) and concurrency >= 1, "use 1 or more")]
    for name, ok, fix in checks:
        if not ok:
            raise RewardError(f"llm_judge: bad {name}", where=f"{WHERE}.{name}", fix=fix)
    return JudgeSettings(base_url.rstrip("/"), model, api_key, rubric, system, pattern, (lo, hi),
                         unparsable, endpoint, max_tokens, float(temperature), float(timeout), retries,  # type: ignore[arg-type]
                         float(backoff), concurrency, dict(request_args or {}), frozenset(used))


def parse_score(reply: str, pattern: re.Pattern[str], score_range: tuple[float, float]) -> tuple[float, float] | None:
    """(raw number, reward in [0, 1]) from the last match of `pattern` in `reply`, or None without a match.

    The reward is `(raw - low) / (high - low)`, clipped to [0, 1].
    """
    found = None
    for m in pattern.finditer(reply or ""):
        found = m
    if found is None:
        return None
    try:
        raw = float(found.group(1))
    except (TypeError, ValueError):
        return None
    lo, hi = score_range
    return raw, min(1.0, max(0.0, (raw - lo) / (hi - lo)))


def render(conf: JudgeSettings, question: str, answer: str, reference: str) -> str:
    return conf.rubric.format(question=question, answer=answer, reference=reference)


async def judge(conf: JudgeSettings, prompts: Sequence[str]) -> list[Verdict]:
    """Send every rendered rubric to the endpoint (at most `concurrency` at a time) and parse the replies."""
    import httpx

    headers = {"Authorization": f"Bearer {conf.api_key}"} if conf.api_key else {}
    limit = asyncio.Semaphore(conf.concurrency)
    in_flight = 0

    async def one(client: httpx.AsyncClient, prompt: str) -> Verdict:
        nonlocal in_flight
        async with limit:
            in_flight += 1
            with _STATS_LOCK:
                _STATS["max_in_flight"] = max(_STATS["max_in_flight"], in_flight)
            try:
                reply, error = await _request(client, conf, prompt, headers)
            finally:
                in_flight -= 1
        if reply is None:
            _count("failed")
            return Verdict(None, None, None, error)
        _count("replies")
        parsed = parse_score(reply, conf.score_regex, conf.score_range)
        if parsed is None:
            _count("unparsable")
            return Verdict(reply, None, 0.0 if conf.unparsable == "zero" else None, "no score in the reply")
        _count("scored")
        return Verdict(reply, parsed[0], parsed[1])

    limits = httpx.Limits(max_connections=conf.concurrency, max_keepalive_connections=conf.concurrency)
    async with httpx.AsyncClient(timeout=conf.timeout, limits=limits) as client:
        return list(await asyncio.gather(*(one(client, p) for p in prompts)))


async def _request(client: Any, conf: JudgeSettings, prompt: str, headers: Mapping[str, str]) -> tuple[str | None, str]:
    """(reply text, '') or (None, why) after the retries; raises RewardError for a request the endpoint rejects."""
    import httpx

    if conf.endpoint == "chat":
        messages = ([{"role": "system", "content": conf.system}] if conf.system else []) + [
            {"role": "user", "content": prompt}]
        url, body = f"{conf.base_url}/chat/completions", {"messages": messages}
    else:
        url, body = f"{conf.base_url}/completions", {"prompt": (conf.system + "\n\n" if conf.system else "") + prompt}
    body.update({"model": conf.model, "max_tokens": conf.max_tokens, "temperature": conf.temperature,
                 **conf.request_args})
    why, wait = "", 0.0
    for attempt in range(conf.retries + 1):
        if attempt:
            _count("retries")
            await asyncio.sleep(max(wait, conf.backoff * 2 ** (attempt - 1)))
        _count("requests")
        try:
            resp = await client.post(url, json=body, headers=headers)
        except httpx.TimeoutException:
            why = f"timed out after {conf.timeout:g} s"
            continue
        except httpx.TransportError as exc:
            why = f"{type(exc).__name__}: {exc}"
            continue
        if resp.status_code in RETRY_STATUS:
            why = f"HTTP {resp.status_code}: {resp.text[:200]}"
            wait = _retry_after(resp.headers.get("retry-after"))
            continue
        if resp.status_code >= 400:
            raise _rejected(conf, url, resp)
        try:
            choice = resp.json()["choices"][0]
            text = choice["message"]["content"] if conf.endpoint == "chat" else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError):
            why = f"the reply is not an OpenAI {conf.endpoint} completion: {resp.text[:200]!r}"
            continue
        return text or "", ""
    logger.warning("llm_judge: %s failed after %d attempt(s): %s", url, conf.retries + 1, why)
    return None, why


def _retry_after(value: str | None) -> float:
    """Seconds from a numeric Retry-After header (a 503/429 from a full server), capped at 30; else 0."""
    try:
        return min(30.0, max(0.0, float(value))) if value else 0.0
    except ValueError:
        return 0.0


def _rejected(conf: JudgeSettings, url: str, resp: Any) -> RewardError:
    detail = resp.text[:300]
    fixes = {
        401: "set api_key_env to an environment variable holding a key the endpoint accepts",
        403: "use a key that may call this model",
        404: f"check base_url (it usually ends in /v1) and model (GET {conf.base_url}/models lists them)",
    }
    return RewardError(f"llm_judge: {url} rejected the request with HTTP {resp.status_code}: {detail}",
                       where=f"{WHERE} (base_url={conf.base_url!r}, model={conf.model!r})",
                       fix=fixes.get(resp.status_code, "fix the request arguments (max_tokens, request_args, model) "
                                                       "that the endpoint's message names"))


def _question(traj: Any, task: Any) -> str:
    n = getattr(traj, "num_prompt_messages", 0)
    prompt = traj.messages[:n] if n else task.messages
    users = [m.get("content") or "" for m in prompt if m.get("role") == "user"]
    return users[-1] if users else ""


def _reference(meta: Mapping[str, Any], key: str, task: Any) -> str:
    ref = meta.get(key)
    if isinstance(ref, (list, tuple)) and ref and all(isinstance(r, str) for r in ref):
        ref = "\n".join(ref)
    if not isinstance(ref, str) or not ref.strip():
        raise RewardError(f"llm_judge: the rubric uses {{reference}} but metadata[{key!r}] holds no reference text "
                          f"(got {ref!r})", where=f"task {task.id!r}",
                          fix=f"add metadata.{key} to the task, set reference_key, or use a rubric without {{reference}}")
    return ref


async def llm_judge(
    trajectories: Sequence[Any],
    *,
    tasks: Sequence[Any],
    metadata: Sequence[Mapping[str, Any]],
    completions: Sequence[str],
    base_url: str,
    model: str,
    api_key_env: str | None = None,
    rubric: str = DEFAULT_RUBRIC,
    system: str | None = None,
    score_regex: str = DEFAULT_SCORE_REGEX,
    score_range: Sequence[float] = (0.0, 10.0),
    unparsable: Literal["none", "zero"] = "none",
    endpoint: Literal["chat", "completions"] = "chat",
    reference_key: str = "reference",
    max_tokens: int = 256,
    temperature: float = 0.0,
    timeout: float = 60.0,
    retries: int = 2,
    backoff: float = 0.5,
    concurrency: int = 8,
    request_args: Mapping[str, Any] | None = None,
) -> list[float | None]:
    """Grade each final answer with an LLM behind an OpenAI-compatible endpoint.

    The rubric is a `str.format` template with the fields `{question}` (the last
    user message of the prompt), `{answer}` (the final answer; required) and
    `{reference}` (`metadata[reference_key]`; a task without it is an error when
    the rubric uses it). The reward is the last match of `score_regex` in the
    reply (group 1), mapped from `score_range` onto [0, 1] and clipped.

    Args:
        trajectories: the batch (toolrl passes it positionally).
        tasks: each trajectory's task, for the question and for errors (passed by toolrl).
        metadata: each task's metadata, for `{reference}` (passed by toolrl).
        completions: the final assistant message of each trajectory (passed by toolrl).
        base_url: the endpoint's OpenAI base URL, e.g. `http://127.0.0.1:8000/v1` for `toolrl serve`.
        model: the model name sent in each request.
        api_key_env: environment variable holding the API key (sent as a Bearer token); unset: no key.
        rubric: the prompt template (default: a 0-10 rubric without a reference; `REFERENCE_RUBRIC`
            compares with `{reference}`).
        system: an optional system message.
        score_regex: a Python regex whose group 1 is the score; the default matches
            "Score: 7", "score = 7.5", "**Score:** 8".
        score_range: `[low, high]` of the rubric's scale, mapped onto [0, 1].
        unparsable: `none`: a reply without a score excludes the sample (counted in
            `reward/none/llm_judge`); `zero`: it scores 0.0.
        endpoint: `chat` (`/chat/completions`) or `completions` (`/completions`, the rubric as a raw prompt).
        reference_key: the metadata key of the reference.
        max_tokens: most tokens the judge may write.
        temperature: the judge's sampling temperature (0: greedy).
        timeout: seconds per HTTP attempt.
        retries: further attempts after a timeout, a connection error, 408/409/429 or 5xx.
        backoff: seconds before the first retry, doubled for each next one (a numeric
            Retry-After header of a 429/503 is honoured, up to 30 s).
        concurrency: most requests in flight at once.
        request_args: extra fields for every request body (`seed`, `top_p`, `stop`, ...).

    Returns:
        One value per trajectory: the normalised score in [0, 1], or None when the judge
        gave no score or could not be reached (0.0 instead with `unparsable: zero` for the former).

    Example:
        ```yaml
        rewards:
          - {name: llm_judge, weight: 1.0,
             args: {base_url: "http://127.0.0.1:8000/v1", model: judge, api_key_env: JUDGE_KEY}}
        ```
    """
    conf = settings(base_url=base_url, model=model, api_key_env=api_key_env, rubric=rubric, system=system,
                    score_regex=score_regex, score_range=score_range, unparsable=unparsable, endpoint=endpoint,
                    max_tokens=max_tokens, temperature=temperature, timeout=timeout, retries=retries,
                    backoff=backoff, concurrency=concurrency, request_args=request_args)
    uses_reference = "reference" in conf.fields
    prompts = []
    for traj, task, meta, answer in zip(trajectories, tasks, metadata, completions):
        ref = _reference(meta, reference_key, task) if uses_reference else ""
        prompts.append(render(conf, _question(traj, task), answer or "", ref))
    verdicts = await judge(conf, prompts)
    bad = [v for v in verdicts if v.score is None]
    if bad:
        logger.warning("llm_judge: %d of %d answers got no score (%s); first: %s", len(bad), len(verdicts),
                       "excluded" if conf.unparsable == "none" else "scored 0", bad[0].error)
    return [v.score for v in verdicts]
