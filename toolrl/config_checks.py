"""Checks of a run's config that need several keys at once (batch divisibility, estimator needs, placement,
offline objectives). `toolrl.config.Config` runs them after field validation; each problem names its key,
value and fix.

Kept apart from `toolrl.config` (which holds the sections) and importing nothing from it, so the two never
import each other: the checks read the validated config through attribute access only.
"""

from __future__ import annotations

from typing import Any

from toolrl.errors import ConfigProblem


class _CombinationError(ValueError):
    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def _estimator_needs(name: str) -> Any:
    """The registered estimator's declared needs (`toolrl.algorithms.spec`); None if no plugin registers it."""
    from toolrl.algorithms.spec import registered_needs

    return registered_needs(name)


def combination_problems(cfg: Any) -> list[ConfigProblem]:
    """Checks that need several keys at once."""
    if cfg.algorithm.objective != "rl":
        return _offline_problems(cfg)
    out: list[ConfigProblem] = []
    needs = _estimator_needs(cfg.algorithm.advantage)
    groups = bool(needs and needs.groups)
    batch = cfg.batch_size
    mini = cfg.trainer.mini_batch_size or batch
    if mini > batch or batch % mini:
        out.append(ConfigProblem(
            "trainer.mini_batch_size", cfg.trainer.mini_batch_size,
            f"the batch of {batch} trajectories (data.prompts_per_step={cfg.data.prompts_per_step} x "
            f"rollout.n={cfg.rollout.n}) must split into whole mini-batches",
            f"use a divisor of {batch}, e.g. trainer.mini_batch_size={_divisor_at_most(batch, mini)}",
        ))
    if mini % cfg.rollout.n and groups:
        out.append(ConfigProblem(
            "trainer.mini_batch_size", mini,
            f"it is not a multiple of the group size rollout.n={cfg.rollout.n}, so groups would be split "
            "across optimizer steps",
            f"use a multiple of {cfg.rollout.n}, e.g. trainer.mini_batch_size={cfg.rollout.n * max(1, mini // cfg.rollout.n)}",
        ))
    if cfg.trainer.micro_batch_size > mini or mini % cfg.trainer.micro_batch_size:
        out.append(ConfigProblem(
            "trainer.micro_batch_size", cfg.trainer.micro_batch_size,
            f"it must divide the mini-batch of {mini} trajectories",
            f"use a divisor of {mini}, e.g. trainer.micro_batch_size={_divisor_at_most(mini, cfg.trainer.micro_batch_size)}",
        ))
    if groups and cfg.rollout.n < 2:
        out.append(ConfigProblem(
            "rollout.n", cfg.rollout.n,
            f"{cfg.algorithm.advantage} compares samples within a group, which needs at least 2 per prompt",
            "set rollout.n=4 (or more), or use an estimator without groups (algorithm.advantage=reinforce_pp or ppo)",
        ))
    if cfg.algorithm.dynamic_sampling and not groups:
        out.append(ConfigProblem(
            "algorithm.dynamic_sampling", True,
            f"dynamic sampling drops groups whose rewards are all equal, but {cfg.algorithm.advantage} does not "
            "compare samples within groups",
            "use a group estimator (grpo, dr_grpo, rloo, reinforce_pp_baseline) or set algorithm.dynamic_sampling=false",
        ))
    if cfg.algorithm.overlong_buffer > cfg.rollout.max_total_tokens:
        out.append(ConfigProblem(
            "algorithm.overlong_buffer", cfg.algorithm.overlong_buffer,
            f"it exceeds the length cap rollout.max_total_tokens={cfg.rollout.max_total_tokens}",
            f"use a buffer of at most {cfg.rollout.max_total_tokens}, e.g. {cfg.rollout.max_total_tokens // 4}",
        ))
    if cfg.rollout.max_new_tokens > cfg.rollout.max_total_tokens:
        out.append(ConfigProblem(
            "rollout.max_new_tokens", cfg.rollout.max_new_tokens,
            f"it exceeds rollout.max_total_tokens={cfg.rollout.max_total_tokens}",
            "raise rollout.max_total_tokens or lower rollout.max_new_tokens",
        ))
    if cfg.algorithm.kl_controller == "adaptive" and cfg.algorithm.kl_coef == 0:
        out.append(ConfigProblem(
            "algorithm.kl_coef", 0.0,
            "the adaptive KL controller multiplies the coefficient, so it can never move from 0",
            "set algorithm.kl_coef to a positive start value, e.g. 0.05",
        ))
    if cfg.trainer.eval_freq and not cfg.data.eval_file:
        out.append(ConfigProblem(
            "trainer.eval_freq", cfg.trainer.eval_freq,
            "evaluation during training needs a held-out task file",
            "set data.eval_file=PATH or trainer.eval_freq=0",
        ))
    names = [r.name for r in cfg.rewards]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        out.append(ConfigProblem("rewards", dupes, "a reward is listed twice", "list each reward once and set its weight"))
    if cfg.trainer.accuracy_reward is not None and names and cfg.trainer.accuracy_reward not in names:
        out.append(ConfigProblem(
            "trainer.accuracy_reward", cfg.trainer.accuracy_reward, "it is not one of the configured rewards",
            f"use one of {names}, or leave it unset to judge correctness by the total reward"))
    if cfg.model.lora.rank and cfg.model.lora.rank > 0 and not cfg.model.lora.target_modules:
        out.append(ConfigProblem("model.lora.target_modules", [], "LoRA needs at least one target module",
                                 "e.g. model.lora.target_modules=[q_proj,v_proj]"))
    if cfg.trainer.compile_layers and cfg.trainer.fsdp.enabled:
        out.append(ConfigProblem(
            "trainer.compile_layers", True, "compiled decoder layers are not combined with FSDP2 sharding here "
            "(its per-layer hooks would be traced into the compiled graphs)",
            "set trainer.fsdp.enabled=false (one GPU holds the model), or trainer.compile_layers=false"))
    if cfg.trainer.compile_mode == "reduce-overhead":
        if not cfg.trainer.compile_layers:
            out.append(ConfigProblem(
                "trainer.compile_mode", "reduce-overhead", "it is the mode of the compiled decoder layers, and "
                "trainer.compile_layers is false", "set trainer.compile_layers=true, or leave compile_mode at default"))
        if cfg.model.gradient_checkpointing is not False:
            out.append(ConfigProblem(
                "trainer.compile_mode", "reduce-overhead", "CUDA graph trees cannot record layers whose activations "
                "are recomputed in backward (gradient checkpointing, on by default on a GPU: "
                f"model.gradient_checkpointing={cfg.model.gradient_checkpointing})",
                "set model.gradient_checkpointing=false (the update then keeps every layer's activations), or "
                "leave compile_mode at default"))
        if cfg.model.device == "cpu":
            out.append(ConfigProblem(
                "trainer.compile_mode", "reduce-overhead", "it records CUDA graphs, and model.device is cpu (there "
                "it would only pad every micro-batch to a multiple of 64 tokens)",
                "leave compile_mode at default on the CPU (trainer.compile_layers still compiles the layers)"))
    out.extend(_placement_problems(cfg))
    out.extend(_async_problems(cfg))
    return out


def _async_problems(cfg: Any) -> list[ConfigProblem]:
    """trainer.async_rollouts fits the placement and the memory switches."""
    out: list[ConfigProblem] = []
    staleness = cfg.trainer.async_rollouts.max_staleness
    fraction = cfg.trainer.async_rollouts.update_sm_fraction
    if fraction is not None and (not staleness or cfg.rollout.placement != "colocated"):
        out.append(ConfigProblem(
            "trainer.async_rollouts.update_sm_fraction", fraction, "it splits one GPU between the update and a "
            "colocated engine's overlapped rollout; here "
            + ("no rollout overlaps the update (max_staleness=0), so the update would only lose SMs"
               if not staleness else f"the engines run apart (rollout.placement={cfg.rollout.placement})"),
            "leave it unset, or set trainer.async_rollouts.max_staleness=1 with rollout.placement=colocated"))
    per_job = cfg.trainer.async_rollouts.steps_per_rollout
    if per_job > staleness + 1:  # the job's last batch could never be within the bound: the run would hang
        out.append(ConfigProblem(
            "trainer.async_rollouts.steps_per_rollout", per_job, f"a job of {per_job} batches waits until its last "
            f"batch is within max_staleness={staleness} of the trainer, which needs the job's first batch trained",
            f"set trainer.async_rollouts.max_staleness to at least {per_job - 1} ({per_job} or more lets the job "
            f"overlap an update), or steps_per_rollout={staleness + 1}"))
    if per_job > 1 and cfg.algorithm.dynamic_sampling:
        out.append(ConfigProblem(
            "trainer.async_rollouts.steps_per_rollout", per_job, "algorithm.dynamic_sampling draws more prompts "
            "until a step's batch is full, which one job for several steps cannot do",
            "set steps_per_rollout=1, or algorithm.dynamic_sampling=false"))
    if not staleness:
        return out
    if cfg.rollout.sleep_during_update is True:
        out.append(ConfigProblem(
            "rollout.sleep_during_update", True, f"with trainer.async_rollouts.max_staleness={staleness} the engine "
            "samples the next batches while the update runs, so it cannot release its memory then",
            "set rollout.sleep_during_update=auto (off in async mode), or trainer.async_rollouts.max_staleness=0"))
    if cfg.rollout.placement == "colocated" and cfg.trainer.data_parallel > 1:
        out.append(ConfigProblem(
            "trainer.data_parallel", cfg.trainer.data_parallel, "asynchronous rollouts with a colocated engine run "
            "one trainer rank only (the engine's weight copy would be a collective of every rank during the update)",
            "set rollout.placement=separate (engine actors of their own), or trainer.data_parallel=1"))
    return out


def _placement_problems(cfg: Any) -> list[ConfigProblem]:
    """rollout.placement / rollout.replicas / ray.engine fit together."""
    out: list[ConfigProblem] = []
    ro, engine = cfg.rollout, cfg.ray.engine
    if ro.placement == "colocated" and ro.replicas > 1:
        out.append(ConfigProblem(
            "rollout.replicas", ro.replicas, "a colocated engine lives inside trainer rank 0, so there is only one",
            "set rollout.placement=separate to run rollout.replicas engine actors, or rollout.replicas=1"))
    if ro.placement == "separate" and engine.num_cpus == 0 and engine.num_gpus == 0 and not engine.resources:
        out.append(ConfigProblem(
            "ray.engine.num_cpus", 0, "a separate engine actor must reserve something, or Ray may put every replica "
            "on one core", "set ray.engine.num_cpus=1 (or ray.engine.num_gpus=1 on GPU)"))
    if ro.placement == "separate" and ro.replicas > cfg.data.prompts_per_step:
        out.append(ConfigProblem(
            "rollout.replicas", ro.replicas, f"a step has data.prompts_per_step={cfg.data.prompts_per_step} tasks "
            "and all samples of a task go to one replica, so some replicas would never get work",
            f"use rollout.replicas <= {cfg.data.prompts_per_step}, or raise data.prompts_per_step"))
    return out


def _offline_problems(cfg: Any) -> list[ConfigProblem]:
    """SFT and DPO: a step is data.prompts_per_step examples (pairs), split into micro-batches."""
    out: list[ConfigProblem] = []
    batch = cfg.data.prompts_per_step
    if cfg.trainer.micro_batch_size > batch or batch % cfg.trainer.micro_batch_size:
        out.append(ConfigProblem(
            "trainer.micro_batch_size", cfg.trainer.micro_batch_size,
            f"with algorithm.objective={cfg.algorithm.objective} a step takes data.prompts_per_step={batch} "
            "examples, which must split into whole micro-batches",
            f"use a divisor of {batch}, e.g. trainer.micro_batch_size={_divisor_at_most(batch, cfg.trainer.micro_batch_size)}",
        ))
    if cfg.trainer.eval_freq:
        out.append(ConfigProblem(
            "trainer.eval_freq", cfg.trainer.eval_freq,
            f"algorithm.objective={cfg.algorithm.objective} does not evaluate during training",
            "set trainer.eval_freq=0 and evaluate the checkpoint: toolrl eval --config CONFIG --model "
            "RUN/checkpoints/latest --tasks EVAL.jsonl"))
    return out


def _divisor_at_most(n: int, k: int) -> int:
    for d in range(min(n, max(k, 1)), 0, -1):
        if n % d == 0:
            return d
    return 1
