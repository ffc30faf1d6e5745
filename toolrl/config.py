"""The typed configuration of a run.

Loaded from YAML with dotted overrides (`trainer.lr=1e-6 rollout.n=8`).
Unknown keys, wrong types and impossible combinations fail here, before any
model or engine loads, with one message per problem naming the key, the value,
the reason and the fix. docs/config.md is generated from these classes
(`toolrl config reference`), and a test keeps it in sync. This module must
stay light: it imports neither torch nor transformers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from toolrl.config_checks import _CombinationError, _estimator_needs, combination_problems
from toolrl.errors import ConfigProblem


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(Section):
    """Low-rank adapters (PEFT). rank 0 means full fine-tuning."""

    rank: int = Field(0, ge=0, description="LoRA rank; 0 turns LoRA off (all weights train).")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (scale = alpha / rank).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Names of the linear layers that get adapters.",
    )
    save_merged: bool = Field(False, description="Also save the merged model (base + adapters) as a normal HF folder.")


class ModelConfig(Section):
    """The policy model."""

    name_or_path: str = Field(
        "smollm2-135m-instruct",
        description="A model name from `toolrl.models` (smollm2-135m-instruct, qwen2.5-coder-0.5b-instruct, "
        "qwen2.5-coder-1.5b-instruct), a local HF folder, or a checkpoint directory.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Parameter dtype for training and the hf backend."
    )
    device: str = Field("auto", description="'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:N'.")
    gradient_checkpointing: bool | None = Field(
        None, description="Trade compute for activation memory; None = on when the policy trains on a CUDA device, "
        "off on the CPU.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA adapters.")


class RolloutConfig(Section):
    """How trajectories are generated."""

    backend: str = Field("hf", description="Registered rollout backend: hf (CPU/GPU), vllm, sglang.")
    n: int = Field(4, ge=1, description="Samples per prompt (the GRPO group size).")
    max_turns: int = Field(4, ge=1, description="Most assistant turns per episode.")
    max_new_tokens: int = Field(256, ge=1, description="Most tokens sampled in one assistant turn.")
    max_total_tokens: int = Field(
        1024, ge=1, description="Token budget for the whole response (sampled + tool tokens)."
    )
    temperature: float = Field(1.0, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, description="Top-k sampling; 0 = off.")
    stop: list[str] = Field(default_factory=list, description="Extra stop strings.")
    ignore_eos: bool = Field(
        False, description="Sample every turn to max_new_tokens: end-of-sequence and end-of-turn tokens do not stop "
        "it (throughput benchmarks with fixed lengths; never for real training).")
    min_tokens: int = Field(
        0, ge=0, description="No stop before this many tokens in a turn (vllm and sglang only; the hf backend refuses "
        "values above 0).")
    tool_parser: str = Field("auto", description="Registered tool-call parser, or 'auto' (hermes tags and JSON blocks).")
    max_batch_size: int = Field(32, ge=1, description="Most sequences the backend decodes together.")
    env_timeout: float = Field(30.0, gt=0, description="Seconds an environment step may take before it is abandoned.")
    max_tool_result_chars: int = Field(2000, ge=100, description="Tool output beyond this is truncated with a marker.")
    debug: bool = Field(False, description="Log prompt, response, tool calls, results and logprobs per sample.")
    backend_args: dict[str, Any] = Field(
        default_factory=dict, description="Backend-specific options, e.g. for vllm gpu_memory_utilization, "
        "max_model_len, kv_cache=fit (a batch-sized KV cache), engine_stream_priority; docs/rollout.md lists them.")
    placement: Literal["colocated", "separate"] = Field(
        "colocated", description="Where the rollout engine runs: 'colocated' inside trainer rank 0 (the hf backend "
        "samples with the live training weights), or 'separate': rollout.replicas engine actors of their own, each "
        "on ray.engine resources, that get the weights through Ray's object store after every update "
        "(docs/scaling.md).")
    replicas: int = Field(
        1, ge=1, description="Engine actors with rollout.placement=separate; a step's tasks are spread over them "
        "(all n samples of a task on one replica).")
    sleep_during_update: bool | Literal["auto"] = Field(
        "auto", description="Release the rollout engine's GPU memory (KV cache, weights) after the rollout and take "
        "it back before the weight sync, so the reference/old-logprob passes and the update have it: vllm sleep mode "
        "(backend_args.enable_sleep_mode, sleep_level 1 unless set) or sglang's memory saver "
        "(backend_args.enable_memory_saver) is switched on for it. 'auto' = on for a colocated vllm/sglang engine on "
        "CUDA with synchronous rollouts, off otherwise; the hf backend frees its KV-cache buffers. Not with "
        "trainer.async_rollouts (the engine works during the update). docs/scaling.md.")


class AlgorithmConfig(Section):
    """What is optimised: the RL objective (advantage estimator + policy loss), SFT or DPO (docs/algorithms.md)."""

    objective: Literal["rl", "sft", "dpo"] = Field(
        "rl", description="rl: sample, reward and update with the estimator and policy loss below; sft: supervised "
        "fine-tuning on data.train_file conversations (loss on assistant tokens); dpo: preference pairs "
        "(chosen/rejected) in data.train_file against the frozen start.")
    advantage: str = Field("grpo", description="Registered advantage estimator: grpo, dr_grpo, rloo, reinforce_pp, "
                           "reinforce_pp_baseline, ppo (critic + GAE).")
    policy_loss: str = Field("ppo", description="Registered policy loss: ppo (token-level clipped ratio) or gspo "
                             "(sequence-level ratio; use clip_ratio ~3e-4).")
    norm_adv_by_std: bool = Field(True, description="GRPO: divide group-centred rewards by the group std.")
    gamma: float = Field(1.0, ge=0, le=1, description="PPO: discount.")
    lam: float = Field(1.0, ge=0, le=1, description="PPO: GAE lambda.")
    clip_ratio: float = Field(0.2, gt=0, description="PPO clip range (lower side, and upper when clip_ratio_high is unset).")
    clip_ratio_high: float | None = Field(None, gt=0, description="Upper clip range (DAPO clip-higher); None = clip_ratio.")
    loss_agg: Literal["token-mean", "seq-mean", "token-sum-norm"] = Field(
        "token-mean", description="Average the loss over all tokens of the batch (DAPO), per sequence then over "
        "sequences, or sum each sequence's tokens over a constant length (Dr. GRPO: loss_norm_tokens)."
    )
    loss_norm_tokens: int | None = Field(
        None, ge=1, description="token-sum-norm's constant length; None = rollout.max_total_tokens.")
    dual_clip: float | None = Field(
        None, gt=1, description="Dual-clip constant c (e.g. 3): caps the loss of negative-advantage tokens at -A*c; "
        "None = off.")
    tis_cap: float | None = Field(
        None, gt=0, description="Truncated importance sampling: weight each token by min(exp(trainer - rollout "
        "logprob), tis_cap) to correct the rollout engine's mismatch (e.g. 2); None = off.")
    overlong_buffer: int = Field(
        0, ge=0, description="DAPO overlong shaping: responses within this many tokens of rollout.max_total_tokens "
        "get a penalty growing linearly to overlong_penalty; 0 = off.")
    overlong_penalty: float = Field(1.0, ge=0, description="Overlong shaping: the penalty at the length cap.")
    dynamic_sampling: bool = Field(
        False, description="DAPO dynamic sampling: drop groups whose rewards are all equal and roll out more prompts "
        "until the batch is full (at most max_sampling_draws rounds).")
    max_sampling_draws: int = Field(3, ge=1, description="Dynamic sampling: most rollout rounds per step.")
    dpo_beta: float = Field(0.1, gt=0, description="DPO: the strength of the implicit KL to the reference.")
    dpo_loss: Literal["sigmoid", "ipo", "hinge"] = Field(
        "sigmoid", description="DPO variant: sigmoid (DPO), ipo (squared), hinge (SLiC).")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k3", description="KL estimator (Schulman's k1/k2/k3).")
    kl_coef: float = Field(0.0, ge=0, description="Initial KL coefficient; 0 disables the reference policy.")
    kl_in: Literal["auto", "loss", "reward"] = Field(
        "auto", description="Where the KL penalty goes: the loss, or the reward; auto = what the estimator declares "
        "(reward for ppo and reinforce_pp, loss otherwise)."
    )
    kl_controller: Literal["fixed", "adaptive"] = Field("fixed", description="Keep kl_coef, or adapt it toward target_kl.")
    target_kl: float = Field(0.1, gt=0, description="Adaptive controller target.")
    kl_horizon: int = Field(10000, ge=1, description="Adaptive controller horizon (in samples).")
    entropy_coef: float = Field(0.0, ge=0, description="Entropy bonus coefficient (entropy is always logged).")
    vf_coef: float = Field(0.5, ge=0, description="PPO: value-loss weight.")
    value_clip: float = Field(0.2, gt=0, description="PPO: value clipping range.")


class RewardSpec(Section):
    """One reward component."""

    name: str = Field(description="Registered reward name (see `toolrl plugins --all`).")
    weight: float = Field(1.0, description="Weight in the sum of components.")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments passed to the reward.")
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="On a bad value or exception: stop the run, or exclude the sample and count it."
    )


class DataConfig(Section):
    """Where tasks come from."""

    train_file: str | None = Field(None, description="JSONL task file for training (`toolrl data make`).")
    eval_file: str | None = Field(None, description="JSONL task file for evaluation during training.")
    prompts_per_step: int = Field(4, ge=1, description="Tasks sampled per step; the batch is prompts_per_step * rollout.n.")
    shuffle: bool = Field(True, description="Shuffle task order each epoch (seeded by trainer.seed).")


class FSDPConfig(Section):
    """FSDP2 sharding of the policy on CUDA (toolrl/trainer/fsdp.py; docs/training.md)."""

    enabled: bool = Field(
        False, description="Shard the policy with FSDP2 (torch.distributed.fsdp.fully_shard per decoder layer + root) "
        "when it trains on CUDA; needed to fully fine-tune models whose weights, gradients and optimizer state do "
        "not fit one GPU. Ignored on the CPU.")
    mixed_precision: bool = Field(
        True, description="bfloat16 parameters in forward/backward with float32 master weights, gradients reduced "
        "in float32 (the model is kept in float32 whatever model.dtype says).")
    cpu_offload: bool = Field(
        False, description="Keep the sharded parameters, gradients and optimizer state in CPU memory (the optimizer "
        "step runs on the CPU): less GPU memory, slower steps.")


class AsyncRolloutsConfig(Section):
    """Asynchronous rollouts: the next steps' batches are sampled while a step trains (docs/training.md)."""

    max_staleness: int = Field(
        0, ge=0, description="How many weight versions a batch may lag behind the trainer: batch k may be sampled "
        "with weights of version >= k-1-max_staleness, so up to max_staleness batches are generated while a step "
        "trains. 0 = synchronous (each batch sampled with the newest weights, the default); 1 = one step "
        "off-policy, the usual choice.")
    is_cap: float | None = Field(
        2.0, gt=0, description="A stale batch's policy loss is weighted per token by min(exp(proximal - behaviour), "
        "is_cap): proximal = the trainer's logprobs before the update, behaviour = the engine's (decoupled PPO, "
        "AReaL); algorithm.tis_cap, when set, takes precedence. None = no weighting (the clip around the proximal "
        "policy only).")
    steps_per_rollout: int = Field(1, ge=1, description="Sample this many steps' batches in one rollout job (each "
        "keeps its prompts and seeds): a bigger engine batch, but each later batch of a job lags one more update. "
        "1..max_staleness+1; size rollout.max_batch_size for it; not with algorithm.dynamic_sampling (docs/training.md).")
    update_sm_fraction: float | None = Field(
        None, gt=0, lt=1, description="One GPU shared in space: the update runs on this fraction of the GPU's SMs "
        "(a CUDA green context; rounded down to a multiple of 8) and the rest stay free for the colocated engine's "
        "overlapped rollout, whose small decode kernels would otherwise wait behind the update's. None = the "
        "update may use every SM. Asynchronous mode with a colocated engine on CUDA only (docs/training.md).")


class TrainerConfig(Section):
    """The optimisation loop, checkpoints and logging."""

    total_steps: int = Field(20, ge=1, description="Training steps (one rollout batch each).")
    lr: float = Field(1e-6, gt=0, description="Peak learning rate.")
    critic_lr: float = Field(1e-5, gt=0, description="PPO critic learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field("constant", description="LR decay after warm-up.")
    ppo_epochs: int = Field(1, ge=1, description="Passes over each rollout batch.")
    mini_batch_size: int | None = Field(
        None, ge=1, description="Trajectories per optimizer step; None = the whole batch (one step per epoch)."
    )
    micro_batch_size: int = Field(4, ge=1, description="Trajectories per forward/backward (gradient accumulation).")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    output_dir: str = Field("runs/default", description="Run directory: checkpoints, metrics, logs.")
    save_freq: int = Field(0, ge=0, description="Save a checkpoint every N steps (0 = only at the end).")
    save_last: bool = Field(
        True, description="Save a checkpoint after the last step, whatever save_freq says; false with save_freq 0 "
        "writes no checkpoint at all (smoke tests, benchmarks).")
    eval_freq: int = Field(0, ge=0, description="Evaluate on data.eval_file every N steps (0 = never during training).")
    eval_n: int = Field(1, ge=1, description="Samples per eval task (pass@k uses these).")
    resume: str = Field("none", description="'none', 'auto' (latest checkpoint in output_dir), or a checkpoint path.")
    seed: int = Field(0, description="Seed for sampling, data order and initialisation.")
    metric_sinks: list[str] = Field(
        default_factory=lambda: ["console", "jsonl", "csv", "tensorboard"], description="Registered metric sinks."
    )
    evaluators: list[str] = Field(default_factory=list, description="Registered evaluators run at eval time.")
    log_samples: bool = Field(
        True, description="Write each step's trajectories (messages, tool calls and results, reward components, "
        "advantage, weight version) to <output_dir>/samples/step_NNNNNN.jsonl; read them with `toolrl inspect`.")
    log_samples_max: int = Field(
        64, ge=1, description="Most trajectories written per step (whole prompt groups, in batch order).")
    eval_temperature: float | None = Field(
        None, ge=0, description="Sampling temperature for evaluation; None = greedy when eval_n is 1, "
        "rollout.temperature otherwise (pass@k needs varied samples).")
    accuracy_reward: str | None = Field(
        None, description="Reward component that measures correctness (for reward/accuracy, eval/accuracy and "
        "pass@k); None = the total reward.")
    success_threshold: float = Field(
        1.0, description="A sample counts as correct when that reward (or the total) is >= this value.")
    keep_checkpoints: int = Field(2, ge=0, description="Keep the newest N checkpoints (0 = keep all).")
    share_prompt: bool = Field(
        True, description="Forward passes run a prompt shared by several samples (a GRPO group) once and reuse its "
        "keys/values: same logprobs and gradients, less compute (off under model.gradient_checkpointing).")
    token_budget: int | None = Field(
        None, ge=16, description="Most tokens (samples x padded length) in one forward/backward: micro-batches are "
        "formed by length up to this budget (whole prompt groups kept together) instead of micro_batch_size samples, "
        "so short samples share a pass and long ones do not pad each other; None = micro_batch_size samples.")
    logits_chunk: int = Field(
        4096, ge=16, description="Response tokens whose full-vocabulary logits exist at once when computing logprobs "
        "and entropy; the chunk's logits are recomputed in backward instead of kept.")
    compile_layers: bool = Field(
        False, description="Run the policy's decoder layers through torch.compile (one graph shared by every layer, "
        "dynamic shapes) in the update and the logprob passes: fuses norms, rotary embeddings, activations and "
        "casts. The first update pays the compilation; generation stays eager. Not with trainer.fsdp.enabled.")
    compile_mode: Literal["default", "reduce-overhead"] = Field(
        "default", description="torch.compile's mode for trainer.compile_layers: 'reduce-overhead' replays each layer "
        "call as a CUDA graph (PyTorch's CUDA graph trees) instead of launching its kernels one by one from Python, "
        "so an asynchronous update needs the interpreter lock less; needs model.gradient_checkpointing=false (more "
        "memory) and the first update compiles and records for tens of seconds. CUDA only (docs/training.md).")
    fsdp: FSDPConfig = Field(default_factory=FSDPConfig, description="FSDP2 sharding of the policy on CUDA.")
    async_rollouts: AsyncRolloutsConfig = Field(
        default_factory=AsyncRolloutsConfig, description="Asynchronous rollouts (max_staleness > 0).")
    data_parallel: int = Field(
        1, ge=1, description="Ranks of the trainer group: N policy actors (each with ray.policy resources) form one "
        "torch.distributed group (gloo on CPU, NCCL on GPU); each step's batch is split across them by tokens and "
        "the gradients summed, so N ranks compute what one computes. The reference and critic actors scale the same.")


class WorkerResources(Section):
    num_cpus: float = Field(1, ge=0, description="CPUs reserved for this Ray actor.")
    num_gpus: float = Field(0, ge=0, description="GPUs reserved for this Ray actor.")
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources reserved for this actor, e.g. {trainer_node: 1} "
        "to pin it to the nodes started with `ray start --resources='{\"trainer_node\": 4}'` (docs/scaling.md).")

    @field_validator("resources")
    @classmethod
    def _check_resources(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError(f"'{name}' is not a custom resource (set num_cpus / num_gpus for CPUs and GPUs)")
            if not amount > 0:
                raise ValueError(f"the amount of '{name}' is {amount}; a custom resource amount must be > 0")
        return value


class RayConfig(Section):
    """Where the workers run."""

    address: str | None = Field(None, description="Ray cluster address; None starts a local Ray instance.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray instance (None = all).")
    policy: WorkerResources = Field(default_factory=WorkerResources, description="Policy + rollout actor.")
    reference: WorkerResources = Field(
        default_factory=lambda: WorkerResources(num_cpus=0), description="Reference-policy actor."
    )
    critic: WorkerResources = Field(default_factory=lambda: WorkerResources(num_cpus=0), description="PPO critic actor.")
    colocate: bool = Field(
        False, description="Run the reference policy and the critic inside the policy actor instead of their own "
        "actors (one process, no batch transfer; often faster on a single CPU machine). With LoRA the reference "
        "is always the policy with adapters disabled.")
    torch_threads: int | None = Field(
        None, ge=1, description="Torch CPU threads per worker; None = all cores for CPU workers (the phases of a "
        "step run one after another), num_cpus for GPU workers. Also the in-process trainer's "
        "(`toolrl.trainer.local`, all cores when None).")
    engine: WorkerResources = Field(
        default_factory=WorkerResources, description="Each rollout engine actor (rollout.placement=separate): one "
        "per rollout.replicas.")
    dashboard: bool = Field(
        False, description="Start Ray's dashboard with a local Ray instance (on 127.0.0.1 only; reach it from "
        "elsewhere through an SSH tunnel). Needs `pip install 'ray[default]'`.")
    auth: Literal["auto", "token", "disabled"] = Field(
        "auto", description="Ray token authentication: 'auto' keeps the installed Ray's default (Ray >= 2.59 turns "
        "it on for a local instance, and when joining a cluster uses it when a token is found); 'token' requires "
        "it (the token from RAY_AUTH_TOKEN, ray.auth_token_file or ~/.ray/auth_token); 'disabled' turns it off "
        "(only on a network you trust).")
    auth_token_file: str | None = Field(
        None, description="File holding the cluster's Ray auth token (`ray get-auth-token` on the head prints it); "
        "None = RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.")
    placement_timeout: float = Field(
        120.0, gt=0, description="Seconds to wait for the cluster to reserve the placement groups of the trainer "
        "and the engines before failing with the resources that are missing.")


class Config(Section):
    """A whole run."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    rewards: list[RewardSpec] = Field(default_factory=list, description="Reward components, summed by weight.")
    envs: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Default arguments per environment name (e.g. envs.python.pool_size)."
    )
    data: DataConfig = Field(default_factory=DataConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @property
    def batch_size(self) -> int:
        """Trajectories per step."""
        return self.data.prompts_per_step * self.rollout.n

    @property
    def kl_in(self) -> str:
        if self.algorithm.kl_in != "auto":
            return self.algorithm.kl_in
        needs = _estimator_needs(self.algorithm.advantage)
        return needs.kl_in if needs is not None else "loss"

    @model_validator(mode="after")
    def _check_combinations(self) -> Config:
        problems = combination_problems(self)
        if problems:
            raise _CombinationError(problems)
        return self


# --------------------------------------------------------------------------
# Loading: YAML file + dotted overrides -> Config, or ConfigError
# --------------------------------------------------------------------------


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = (), *,
                data: dict[str, Any] | None = None) -> Config:
    """Build a Config from a YAML file and `key.sub=value` overrides.

    Raises ConfigError listing every problem (key, value, reason, fix, and
    whether it came from the file or the command line).
    """
    import copy

    from toolrl.errors import ConfigError

    raw: dict[str, Any] = copy.deepcopy(data) if data else {}
    sources: dict[str, str] = {}
    if path is not None:
        raw = _read_yaml(path)
        _record_sources(raw, "", str(path), sources)
    problems: list[ConfigProblem] = []
    for ov in overrides:
        try:
            key, value = parse_override(ov)
            set_dotted(raw, key, value)
            sources[key] = f"command line: {ov}"
        except _OverrideError as exc:
            problems.append(exc.problem)
    if problems:
        raise ConfigError(problems)
    return validate(raw, sources)


def validate(raw: dict[str, Any], sources: dict[str, str] | None = None) -> Config:
    from pydantic import ValidationError

    from toolrl.errors import ConfigError

    sources = sources or {}
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems: list[ConfigProblem] = []
        for err in exc.errors(include_url=False):
            problems.extend(_problems_from_error(err, raw, sources))
        raise ConfigError(problems) from None


class _OverrideError(Exception):
    def __init__(self, problem: ConfigProblem):
        self.problem = problem
        super().__init__(str(problem))


def parse_override(text: str) -> tuple[str, Any]:
    """`trainer.lr=1e-6` -> ("trainer.lr", 1e-06). Values are parsed as YAML."""
    import yaml

    if "=" not in text:
        from pathlib import Path

        if text.endswith((".yaml", ".yml", ".json")) or Path(text).is_file():  # a config file given bare
            raise _OverrideError(ConfigProblem(
                text, None, "a config file given where an override (key.subkey=value) belongs",
                f"pass it with --config: --config {text}", source="command line"))
        raise _OverrideError(ConfigProblem(
            text, None, "an override must have the form key.subkey=value",
            f"write e.g. {text}=VALUE (no spaces around '=')", source="command line"))
    key, _, value_text = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise _OverrideError(ConfigProblem(text, None, "the key is empty or has an empty part",
                                           "write e.g. trainer.lr=1e-6", source="command line"))
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError as exc:
        raise _OverrideError(ConfigProblem(key, value_text, f"not valid YAML ({exc.__class__.__name__})",
                                           "quote the value", source=f"command line: {text}")) from None
    if isinstance(value, str):
        value = _maybe_number(value)
    return key, value


def _maybe_number(s: str) -> Any:
    # YAML 1.1 reads "1e-6" as a string; people mean a float
    try:
        return float(s) if any(c in s for c in "eE.") and s.strip().lstrip("+-")[:1].isdigit() else s
    except ValueError:
        return s


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = tree
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise _OverrideError(ConfigProblem(
                    key, value, f"'{'.'.join(parts[:i])}' is a list of {len(node)} item(s); '{part}' is not a valid index",
                    f"use an index from 0 to {len(node) - 1}", source="command line"))
            idx = int(part)
            if last:
                node[idx] = value
            else:
                node = node[idx]
            continue
        if not isinstance(node, dict):
            raise _OverrideError(ConfigProblem(
                key, value, f"'{'.'.join(parts[:i])}' is not a section", "override the whole value instead",
                source="command line"))
        if last:
            node[part] = value
        elif part not in node and parts[i + 1].isdigit():
            raise _OverrideError(ConfigProblem(
                key, value, f"'{'.'.join(parts[:i + 1])}' is not set, so it has no item {parts[i + 1]}, not a valid index",
                f"give the whole list, e.g. {'.'.join(parts[:i + 1])}='[{{name: math_equiv}}]'", source="command line"))
        else:
            node = node.setdefault(part, {})


def _read_yaml(path: str) -> dict[str, Any]:
    from pathlib import Path

    import yaml

    from toolrl.errors import ConfigError

    p = Path(path)
    if not p.is_file():
        raise ConfigError([ConfigProblem("--config", str(p), "the file does not exist",
                                         "pass the path of a YAML config, e.g. examples/demo/config.yaml")])
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([ConfigProblem("--config", str(p), f"not valid YAML{where}: {getattr(exc, 'problem', exc)}",
                                         "fix the YAML syntax (indentation, colons, quotes)")]) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError([ConfigProblem("--config", str(p), f"the top level must be a mapping, got {type(raw).__name__}",
                                         "start the file with sections such as 'model:' and 'trainer:'")])
    return raw


def _record_sources(node: Any, prefix: str, source: str, out: dict[str, str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            out[key] = source
            _record_sources(v, key, source, out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _record_sources(v, f"{prefix}.{i}", source, out)


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the field at `loc` (to list valid keys)."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        candidates = [ann, *args]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model


def _lookup(raw: Any, loc: tuple[Any, ...]) -> Any:
    node = raw
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _problems_from_error(err: dict[str, Any], raw: dict[str, Any], sources: dict[str, str]) -> list[ConfigProblem]:
    import difflib

    ctx = err.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, _CombinationError):
        for p in inner.problems:
            p.source = p.source or sources.get(p.key)
        return inner.problems
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    key = ".".join(str(p) for p in loc) or "(top level)"
    value = err.get("input")
    source = sources.get(key)
    kind = err["type"]
    if kind == "extra_forbidden":
        section = _section_model(loc)
        valid = sorted(section.model_fields) if section else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        parent = ".".join(str(p) for p in loc[:-1]) or "the top level"
        fix = (f"did you mean '{'.'.join(str(p) for p in loc[:-1] + (close[0],))}'? " if close else "") + (
            f"valid keys in {parent}: {', '.join(valid)}" if valid else "remove it")
        return [ConfigProblem(key, value, "unknown key", fix, source)]
    if kind == "missing":
        return [ConfigProblem(key, None, "this key is required", f"set {key}=...", source)]
    section = _section_model(loc)
    field = section.model_fields.get(str(loc[-1])) if section else None
    hint = ""
    if field is not None:
        ann = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
        default = field.get_default(call_default_factory=True)
        hint = f"set {key} to a value of type {ann}"
        if default not in (None, [], {}, ""):
            hint += f" (default: {default!r})"
        if field.description:
            hint += f" — {field.description}"
    else:
        hint = f"check the type of {key}"
    value = _lookup(raw, loc) if value is None else value
    return [ConfigProblem(key, value, err["msg"].rstrip("."), hint, source)]


def dump_yaml(cfg: Config) -> str:
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
