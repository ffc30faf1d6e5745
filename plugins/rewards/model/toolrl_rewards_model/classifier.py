"""A reward model: any `AutoModelForSequenceClassification` checkpoint scores (prompt, completion).

The scorer (`RewardModelScorer`) loads the checkpoint once per process and is
kept in a cache keyed by (path, device, dtype); with `ray_actor: true` the same
class runs as a Ray actor instead (one per key and resources), so a large model
does not sit in the trainer's process. Only plain data (messages and strings)
crosses into the actor.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from toolrl.errors import RewardError

logger = logging.getLogger(__name__)

InputFormat = Literal["auto", "chat", "pair"]
Normalize = Literal["none", "sigmoid", "softmax"]
DTYPES = ("float32", "bfloat16", "float16")
WHERE = "rewards[name=reward_model].args"


@dataclass(frozen=True)
class Conversation:
    """What the reward model judges: the prompt messages and the completion (plain data, picklable)."""

    prompt: tuple[Mapping[str, Any], ...]
    completion: str
    episode: tuple[Mapping[str, Any], ...] = ()  # the whole episode, for conversation="episode"


@dataclass(frozen=True)
class ScoreOptions:
    """Per-call scoring options (the model itself is chosen by path/device/dtype)."""

    input_format: InputFormat = "auto"
    conversation: Literal["final", "episode"] = "final"
    batch_size: int = 8
    max_length: int = 1024
    label: int = 0
    normalize: Normalize = "none"


def resolve_device(device: str) -> str:
    """`auto` -> cuda when available else cpu; a cuda device that is not there is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RewardError(f"reward_model: device {device!r} was asked for but torch sees no CUDA device",
                          where=f"{WHERE}.device", fix="use device: cpu (or auto), or run on a machine with a GPU")
    if not (device == "cpu" or device.startswith(("cuda", "mps", "xpu"))):
        raise RewardError(f"reward_model: unknown device {device!r}", where=f"{WHERE}.device",
                          fix="use cpu, cuda, cuda:N or auto")
    return device


def check_model_path(model: str) -> str:
    """The checkpoint folder as an absolute path, or an error saying what is missing and how to get it."""
    p = Path(model).expanduser()
    if not p.is_dir():
        raise RewardError(
            f"reward_model: no checkpoint folder at {str(p)!r}", where=f"{WHERE}.model",
            fix="pass the folder that AutoModelForSequenceClassification.save_pretrained(...) wrote "
                "(with config.json and the weights next to the tokenizer files)")
    if not (p / "config.json").is_file():
        raise RewardError(
            f"reward_model: {str(p)!r} has no config.json, so it is not a Hugging Face checkpoint",
            where=f"{WHERE}.model",
            fix="save the model with model.save_pretrained(folder) and tokenizer.save_pretrained(folder)")
    return str(p.resolve())


class RewardModelScorer:
    """Loads a sequence-classification checkpoint and scores conversations with it, batched.

    Used in-process (cached by `get_scorer`) and as a Ray actor (`get_actor`).

    Args:
        path: checkpoint folder (model + tokenizer).
        device: a resolved torch device (`cpu`, `cuda:0`, ...).
        dtype: `float32`, `bfloat16` or `float16`.
        allow_untrained_head: load a checkpoint whose classification head is missing
            (it is then random); off by default because such a "reward" is noise.
        torch_threads: torch CPU threads to use in this process (None: leave as is).
    """

    def __init__(self, path: str, device: str = "cpu", dtype: str = "float32", allow_untrained_head: bool = False,
                 torch_threads: int | None = None) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if torch_threads:
            torch.set_num_threads(torch_threads)
        device = resolve_device(device)
        self.path, self.device, self.dtype = path, device, dtype
        self._lock = threading.Lock()  # one forward pass at a time; the tokenizer's settings are shared
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, dtype=getattr(torch, dtype), output_loading_info=True)
        except (OSError, ValueError, KeyError) as exc:
            raise RewardError(f"reward_model: could not load {path!r} as a sequence-classification model: {exc}",
                              where=f"{WHERE}.model",
                              fix="pass a checkpoint saved by AutoModelForSequenceClassification.save_pretrained; "
                                  "a causal LM needs a trained reward head first") from None
        base = getattr(model, "base_model_prefix", "") or "model"  # "model" (Llama, Qwen), "bert", ...
        head = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(base + "."))
        if head and not allow_untrained_head:
            raise RewardError(
                f"reward_model: {path!r} has no trained classification head (missing {head}); "
                "its scores would be random", where=f"{WHERE}.model",
                fix="point model at a trained reward model (save it with AutoModelForSequenceClassification."
                    "save_pretrained), or set allow_untrained_head: true for plumbing tests")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"  # positions as in an unbatched pass; the head finds the last token
        self.model = model.to(device).eval()
        self.num_labels = int(model.config.num_labels)
        self._takes_token_types = "token_type_ids" in inspect.signature(model.forward).parameters
        logger.info("reward model %s loaded on %s (%s, %d label(s))", path, device, dtype, self.num_labels)

    def ready(self) -> int:
        """The process id (a Ray actor's `ready.remote()` surfaces load errors)."""
        return os.getpid()

    def render(self, conv: Conversation, options: ScoreOptions) -> str | tuple[str, str]:
        """The text the model reads: a chat-template string, or a (prompt, completion) pair."""
        fmt = options.input_format
        if fmt == "auto":
            fmt = "chat" if getattr(self.tokenizer, "chat_template", None) else "pair"
        if fmt == "pair":
            users = [m.get("content") or "" for m in conv.prompt if m.get("role") == "user"]
            return (users[-1] if users else "", conv.completion)
        if not getattr(self.tokenizer, "chat_template", None):
            raise RewardError(f"reward_model: the tokenizer of {self.path!r} has no chat template",
                              where=f"{WHERE}.input_format",
                              fix="use input_format: pair (prompt and completion as a text pair) or auto")
        if options.conversation == "episode" and conv.episode:
            messages = [dict(m) for m in conv.episode]
        else:
            messages = [{"role": m.get("role"), "content": m.get("content") or ""} for m in conv.prompt]
            messages.append({"role": "assistant", "content": conv.completion})
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception as exc:  # noqa: BLE001 - templates raise anything (jinja errors, TypeError ...)
            raise RewardError(f"reward_model: the chat template of {self.path!r} failed on a conversation: {exc}",
                              where=f"{WHERE}.conversation",
                              fix="use conversation: final (prompt + final answer only) or input_format: pair") from None

    def score(self, conversations: Sequence[Conversation], options: ScoreOptions = ScoreOptions()) -> list[float]:
        """One score per conversation, in order; batched by length (`options.batch_size` per forward pass)."""
        import torch

        if options.label >= self.num_labels or options.label < 0:
            raise RewardError(f"reward_model: label {options.label} does not exist; {self.path!r} has "
                              f"{self.num_labels} label(s)", where=f"{WHERE}.label",
                              fix=f"use a label index from 0 to {self.num_labels - 1}")
        if options.normalize == "softmax" and self.num_labels < 2:
            raise RewardError("reward_model: normalize: softmax needs a model with at least 2 labels; this one has 1",
                              where=f"{WHERE}.normalize", fix="use normalize: sigmoid (or none) for a 1-label head")
        inputs = [self.render(c, options) for c in conversations]
        order = sorted(range(len(inputs)), key=lambda i: -self._length(inputs[i]))
        out: list[float] = [0.0] * len(inputs)
        with self._lock:
            for start in range(0, len(order), options.batch_size):
                idx = order[start:start + options.batch_size]
                enc = self._encode([inputs[i] for i in idx], options.max_length)
                with torch.inference_mode():
                    logits = self.model(**enc).logits.float()
                for row, i in enumerate(idx):
                    out[i] = _normalize(logits[row], options.label, options.normalize)
        return out

    def _length(self, item: str | tuple[str, str]) -> int:
        return len(item) if isinstance(item, str) else len(item[0]) + len(item[1])

    def _encode(self, items: list[Any], max_length: int) -> Any:
        tok = self.tokenizer
        if isinstance(items[0], str):  # chat-template text: already has its special tokens; keep the end
            tok.truncation_side = "left"
            enc = tok(items, add_special_tokens=False, padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
        else:
            tok.truncation_side = "right"
            enc = tok([a for a, _ in items], [b for _, b in items], padding=True, truncation=True,
                      max_length=max_length, return_tensors="pt")
        if not self._takes_token_types:
            enc.pop("token_type_ids", None)
        return {k: v.to(self.device) for k, v in enc.items()}


def _normalize(row: Any, label: int, how: str) -> float:
    if how == "softmax":
        return float(row.softmax(-1)[label])
    value = float(row[label])
    if how == "sigmoid":
        return 1.0 / (1.0 + math.exp(-value)) if value >= 0 else math.exp(value) / (1.0 + math.exp(value))
    return value


# -- caches: one scorer per (path, device, dtype) in this process; one actor per key + resources -----------

_SCORERS: dict[tuple[str, str, str], RewardModelScorer] = {}
_ACTORS: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()


def get_scorer(path: str, device: str, dtype: str, allow_untrained_head: bool = False) -> RewardModelScorer:
    """The process-wide scorer for (path, device, dtype), loaded on first use."""
    device = resolve_device(device)
    key = (path, device, dtype)
    with _LOCK:
        scorer = _SCORERS.get(key)
        if scorer is None:
            scorer = RewardModelScorer(path, device, dtype, allow_untrained_head)
            _SCORERS[key] = scorer
        return scorer


def get_actor(path: str, device: str, dtype: str, allow_untrained_head: bool, num_cpus: float,
              num_gpus: float) -> Any:
    """The process's Ray actor for this model and resources; starts Ray locally when it is not running."""
    key = (path, device, dtype, num_cpus, num_gpus)
    with _LOCK:
        actor = _ACTORS.get(key)
        if actor is not None:
            return actor
        ray = _ray()
        free = ray.available_resources()
        for res, amount in (("CPU", num_cpus), ("GPU", num_gpus)):
            if amount > free.get(res, 0.0) + 1e-9:
                raise RewardError(
                    f"reward_model: the actor asks for {amount:g} {res}(s) but the Ray cluster has "
                    f"{free.get(res, 0.0):g} free", where=f"{WHERE}.num_{res.lower()}s",
                    fix=f"lower num_{res.lower()}s (0 shares the trainer's), or give Ray more (ray.num_cpus)")
        threads = max(1, int(num_cpus)) if num_cpus >= 1 else None
        actor = ray.remote(RewardModelScorer).options(num_cpus=num_cpus, num_gpus=num_gpus, max_concurrency=1).remote(
            path, device, dtype, allow_untrained_head, threads)
        try:
            pid = ray.get(actor.ready.remote())
        except ray.exceptions.RayTaskError as exc:
            ray.kill(actor)
            cause = getattr(exc, "cause", None)
            if isinstance(cause, RewardError):
                raise cause from None
            raise
        logger.info("reward model %s runs in Ray actor pid %d", path, pid)
        _ACTORS[key] = actor
        return actor


def _ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError:
        raise RewardError("reward_model: ray_actor: true needs Ray, which is not installed",
                          where=f"{WHERE}.ray_actor", fix="pip install 'toolrl[ray]', or set ray_actor: false") from None
    if not ray.is_initialized():
        logger.info("starting a local Ray instance for the reward model actor")
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    return ray


async def _score_on_actor(actor: Any, conversations: list[Conversation], options: ScoreOptions) -> list[float]:
    import ray

    try:
        return await actor.score.remote(conversations, options)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, RewardError):
            raise cause from None
        raise


def conversations_of(trajectories: Sequence[Any], tasks: Sequence[Any], completions: Sequence[str]) -> list[Conversation]:
    """Plain-data conversations for the batch: the prompt messages and the final answer."""
    out = []
    for traj, task, completion in zip(trajectories, tasks, completions):
        n = getattr(traj, "num_prompt_messages", 0)
        prompt = tuple(traj.messages[:n]) if n else tuple(task.messages)
        out.append(Conversation(tuple(dict(m) for m in prompt), completion or "",
                                tuple(dict(m) for m in traj.messages)))
    return out


async def reward_model(
    trajectories: Sequence[Any],
    *,
    tasks: Sequence[Any],
    completions: Sequence[str],
    model: str,
    device: str = "cpu",
    dtype: str = "float32",
    input_format: InputFormat = "auto",
    conversation: Literal["final", "episode"] = "final",
    batch_size: int = 8,
    max_length: int = 1024,
    label: int = 0,
    normalize: Normalize = "none",
    allow_untrained_head: bool = False,
    ray_actor: bool = False,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
) -> list[float]:
    """Score each (prompt, completion) with a sequence-classification reward model.

    The checkpoint is any `AutoModelForSequenceClassification` folder (a
    Skywork/ArmoRM-style reward model, a cross-encoder, your own trained head).
    The text it reads is the tokenizer's chat template applied to the prompt
    messages plus the final answer as an assistant turn (`input_format: chat`),
    or the last user message and the answer as a text pair (`pair`, for
    BERT-style cross-encoders); `auto` picks chat when the tokenizer has a
    template. The model is loaded once per process, per (model, device, dtype),
    and reused by every later call; with `ray_actor: true` it lives in its own
    Ray actor instead (started on first use; a local Ray starts if none runs).

    Args:
        trajectories: the batch (toolrl passes it positionally).
        tasks: each trajectory's task (passed by toolrl); its messages are the prompt
            when the trajectory does not record `num_prompt_messages`.
        completions: the final assistant message of each trajectory (passed by toolrl).
        model: the checkpoint folder (config.json, weights and tokenizer files).
        device: `cpu`, `cuda`, `cuda:N` or `auto` (cuda when available).
        dtype: `float32`, `bfloat16` or `float16`.
        input_format: `auto`, `chat` or `pair` (see above).
        conversation: `final`: prompt + final answer; `episode`: every message of the
            episode (tool calls and results too) through the chat template.
        batch_size: conversations per forward pass (sorted by length to pad less).
        max_length: tokens per input; longer chat inputs lose their beginning, pairs
            their longer part.
        label: which output logit is the reward (0 for a 1-label head).
        normalize: `none` (the raw logit), `sigmoid` (into (0, 1)) or `softmax` (the
            probability of `label` over all labels).
        allow_untrained_head: accept a checkpoint whose classification head is missing
            (randomly initialised); for plumbing tests only.
        ray_actor: score in a Ray actor instead of this process.
        num_cpus: the actor's CPUs (with `ray_actor`).
        num_gpus: the actor's GPUs (with `ray_actor`; pair with `device: cuda`).

    Returns:
        One float per trajectory: the chosen logit, or its normalised value.

    Example:
        ```yaml
        rewards:
          - {name: reward_model, weight: 1.0,
             args: {model: /ckpt/my-rm, normalize: sigmoid, ray_actor: true, num_gpus: 1, device: cuda}}
        ```
    """
    if dtype not in DTYPES:
        raise RewardError(f"reward_model: unknown dtype {dtype!r}", where=f"{WHERE}.dtype", fix=f"use one of {DTYPES}")
    if batch_size < 1 or max_length < 8:
        raise RewardError(f"reward_model: batch_size must be >= 1 and max_length >= 8, got {batch_size} and "
                          f"{max_length}", where=f"{WHERE}.batch_size", fix="use e.g. batch_size: 8, max_length: 1024")
    for arg, value, allowed in (("input_format", input_format, ("auto", "chat", "pair")),
                                ("conversation", conversation, ("final", "episode")),
                                ("normalize", normalize, ("none", "sigmoid", "softmax"))):
        if value not in allowed:
            raise RewardError(f"reward_model: unknown {arg} {value!r}", where=f"{WHERE}.{arg}",
                              fix=f"use one of {list(allowed)}")
    path = check_model_path(model)
    options = ScoreOptions(input_format, conversation, batch_size, max_length, label, normalize)
    convs = conversations_of(trajectories, tasks, completions)
    if not convs:
        return []
    if ray_actor:
        actor = await asyncio.to_thread(get_actor, path, device, dtype, allow_untrained_head, float(num_cpus),
                                        float(num_gpus))
        return await _score_on_actor(actor, convs, options)
    scorer = await asyncio.to_thread(get_scorer, path, device, dtype, allow_untrained_head)
    return await asyncio.to_thread(scorer.score, convs, options)
