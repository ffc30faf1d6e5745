"""The processes of the trainer group: policy ranks, reference ranks, critic ranks.

These are plain classes; `toolrl.trainer.group` makes them Ray actors and
implements the driver's roles (`toolrl.trainer.roles`) on top of them. Each
method is one remote call; the optimisation itself is `toolrl.trainer.optimize`.

- `PolicyRank` r of N holds the trainable policy, its optimizer and LR
  schedule. With N > 1 the ranks form one torch.distributed group (gloo on
  CPU, NCCL on GPU; FSDP2 shards the model on GPU when trainer.fsdp.enabled).
  Rank 0 also holds the rollout backend when the engines are colocated
  (`rollout.placement=colocated`, the default): the hf backend generates with
  the live module, other backends get the weights pushed in `sync_engine`.
  A rank may also hold a colocated reference (`ray.colocate`) or critic; with
  LoRA the reference is the policy with its adapters disabled (no copy).
- `ReferenceRank` holds a frozen copy of the initial policy (forward only).
- `CriticRank` r of N holds the value model; N > 1 critic ranks form their own group.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from toolrl.errors import ToolrlError
from toolrl.trainer import sm_share
from toolrl.trainer.batch import TrainBatch
from toolrl.trainer.forward import batched_logprobs, batched_values
from toolrl.trainer.oom import oom_hint
from toolrl.trainer.optimize import DataParallel, update_critic, update_policy
from toolrl.trainer.weight_fence import WeightFence
from toolrl.types import Trajectory

logger = logging.getLogger(__name__)


def setup_process(threads: int | None, plugins: Sequence[Any] = ()) -> None:
    """Threads, logging, and the plugins the driver registered in Python (`toolrl.train(..., plugins=[...])`)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(max(1, int(n)))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from toolrl import runtime

    runtime.register_plugins(plugins)


def _config(config: dict[str, Any]) -> Any:
    from toolrl.config import Config

    return Config.model_validate(config)


def _temperature(cfg: Any) -> float:
    return cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0


def _resources(role: str) -> dict[str, float]:
    """`toolrl.metrics.resources.snapshot(role)` where it exists."""
    try:
        from toolrl.metrics.resources import snapshot
    except ImportError:
        return {}
    try:
        return snapshot(role)
    except Exception:  # metrics must never fail a step
        logger.debug("resource snapshot failed", exc_info=True)
        return {}


class _Distributed:
    """Joining this process to its group's torch.distributed process group."""

    rank: int
    world_size: int
    dp: DataParallel

    def master_address(self) -> tuple[str, int]:
        """(this node's address, a free port): rank 0's answer is where the group meets."""
        import socket

        try:
            import ray

            host = ray.util.get_node_ip_address()
        except Exception:
            host = "127.0.0.1"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            return host, int(s.getsockname()[1])

    def init_group(self, host: str, port: int, backend: str, force: bool = False) -> int:
        """Join the group's process group (with one rank only when `force`: FSDP on one GPU)."""
        import datetime

        import torch.distributed as dist

        if (self.world_size > 1 or force) and not dist.is_initialized():
            dist.init_process_group(backend, init_method=f"tcp://{host}:{port}", rank=self.rank,
                                    world_size=self.world_size, timeout=datetime.timedelta(minutes=30))
        return self.rank


class ReferenceRank:
    """A frozen copy of the initial policy: `ref_logprobs(batch)`."""

    def __init__(self, config: dict[str, Any], model_path: str, threads: int | None = None,
                 plugins: Sequence[Any] = ()):
        from toolrl.trainer.modeling import load_causal_lm, pick_device

        self.cfg = _config(config)
        setup_process(threads, plugins)
        self.model = load_causal_lm(model_path, self.cfg.model.dtype, pick_device(self.cfg.model.device),
                                    trainable=False)

    def ref_logprobs(self, batch: TrainBatch) -> torch.Tensor:
        with oom_hint("reference"):
            return batched_logprobs(self.model, batch, self.cfg.trainer.micro_batch_size, _temperature(self.cfg),
                                    self.cfg.trainer.share_prompt, self.cfg.trainer.logits_chunk)

    def ready(self) -> int:
        return os.getpid()


class CriticRank(_Distributed):
    """The value model (PPO), rank r of the critic group: `values`, `update`, `save`, `load`."""

    def __init__(self, config: dict[str, Any], model_path: str, threads: int | None = None,
                 plugins: Sequence[Any] = (), *, rank: int = 0, world_size: int = 1, dp: DataParallel | None = None):
        from toolrl.trainer.modeling import load_critic, pick_device
        from toolrl.trainer.optim import make_optimizer, make_scheduler

        self.cfg = _config(config)
        setup_process(threads, plugins)
        self.rank, self.world_size = rank, world_size
        self.dp = dp or DataParallel(rank, world_size)
        torch.manual_seed(self.cfg.trainer.seed + 17)  # value-head init (the same on every rank)
        self.model = load_critic(self.cfg, model_path, pick_device(self.cfg.model.device))
        tr = self.cfg.trainer
        self.optimizer = make_optimizer(self.model.parameters(), tr.critic_lr, tr.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, warmup=tr.warmup_steps, total=tr.total_steps,
                                        schedule=tr.lr_schedule)

    def values(self, batch: TrainBatch) -> torch.Tensor:
        with oom_hint("values"):
            return batched_values(self.model, batch, self.cfg.trainer.micro_batch_size, self.cfg.trainer.share_prompt)

    def update(self, batch: TrainBatch, seed: int) -> dict[str, float]:
        torch.manual_seed(seed)
        with oom_hint("critic update"):
            stats = update_critic(self.model, self.optimizer, batch, self.cfg, seed, self.dp)
        self.scheduler.step()
        stats.update(_resources(f"critic{self.rank}" if self.world_size > 1 else "critic"))
        return stats

    def save(self, ckpt_dir: str) -> None:
        from toolrl.trainer.checkpoint import save_critic_files

        if self.rank == 0:
            save_critic_files(Path(ckpt_dir), self.model, self.optimizer, self.scheduler)

    def load(self, ckpt_dir: str) -> None:
        from toolrl.trainer.checkpoint import load_critic_files

        load_critic_files(Path(ckpt_dir), self.model, self.optimizer, self.scheduler)

    def ready(self) -> int:
        return os.getpid()


class PolicyRank(_Distributed):
    """Rank r of the data-parallel policy; rank 0 may hold the colocated rollout backend."""

    def __init__(self, config: dict[str, Any], model_path: str, threads: int | None = None,
                 plugins: Sequence[Any] = (), *, rank: int = 0, world_size: int = 1, with_engine: bool = False,
                 colocate_reference: bool = False, colocate_critic: bool = False):
        from toolrl.trainer.modeling import count_parameters, load_policy, load_tokenizer, pick_device
        from toolrl.trainer.optim import make_optimizer, make_scheduler

        self.cfg = cfg = _config(config)
        setup_process(threads, plugins)
        self.rank, self.world_size = rank, world_size
        self.model_path = model_path
        self.device = pick_device(cfg.model.device)
        torch.manual_seed(cfg.trainer.seed)  # adapter init (the same on every rank)
        self.tokenizer = load_tokenizer(model_path)
        self.model = load_policy(cfg, model_path, self.device)
        self.total_params, self.trainable_params = count_parameters(self.model)
        self.fsdp = bool(self.device.type == "cuda" and getattr(getattr(cfg.trainer, "fsdp", None), "enabled", False))
        self.dp = DataParallel(rank, world_size, sum_grads=not self.fsdp)
        self.sharded = False
        tr = cfg.trainer
        self.optimizer = make_optimizer(self.model.parameters(), tr.lr, tr.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, warmup=tr.warmup_steps, total=tr.total_steps,
                                        schedule=tr.lr_schedule)
        self.reference = ReferenceRank(config, model_path, threads) if colocate_reference else None
        # the colocated critic shares this process group but is never FSDP-sharded: it sums its gradients itself
        self.critic = (CriticRank(config, model_path, threads, rank=rank, world_size=world_size)
                       if colocate_critic else None)
        self.backend: Any = None
        self.shares_module = False
        self.engine_version = 0
        # weights are read (engine copy, checkpoint) and written (update) under one lock: in asynchronous mode the
        # rollout thread's weight copy and the trainer's update run in this process at the same time
        self._lock = threading.RLock()
        self._fence = WeightFence(self.device)  # ... and the lock does not order their GPU work: this does
        from toolrl.trainer.step import sleeps_during_update

        self.sleeps = with_engine and sleeps_during_update(cfg, str(self.device))  # release memory for the update
        # asynchronous mode on one GPU: the update on a share of the SMs, the rest for the overlapped rollout
        self.update_stream = sm_share.update_stream(cfg.trainer.async_rollouts.update_sm_fraction, self.device)
        self.update_sms = sm_share.sms_of(self.update_stream)
        if with_engine:
            self._start_engine()

    def _start_engine(self) -> None:
        from toolrl import plugins
        from toolrl.rollout.base import BackendSettings

        from toolrl.trainer.step import sleep_backend_args

        cfg = self.cfg
        factory = plugins.registry("rollout_backends").get(cfg.rollout.backend)
        extra = {**(sleep_backend_args(cfg.rollout.backend) if self.sleeps else {}), **cfg.rollout.backend_args}
        if self.device.type == "cuda":  # an asynchronous run's engine stays awake beside the update
            from toolrl.rollout.vllm_kv import awake_engine_args

            added, hint = awake_engine_args(cfg.rollout.backend, cfg.rollout.backend_args,
                                            cfg.trainer.async_rollouts.max_staleness)
            if added:
                logger.info("asynchronous run: the vllm engine's KV cache is sized to its batch "
                            "(rollout.backend_args.kv_cache=fit, the default here; kv_cache=share keeps vLLM's)")
            extra.update(added)
            if hint:
                logger.warning(hint)
        self.backend = factory(BackendSettings(
            model_path=str(self.model_path), dtype=cfg.model.dtype, device=str(self.device),
            max_batch_size=cfg.rollout.max_batch_size, module=self.model, tokenizer=self.tokenizer,
            seed=cfg.trainer.seed, extra=extra,
        ))
        # the hf backend generates with self.model itself; any other engine gets weights pushed
        self.shares_module = getattr(self.backend, "model", None) is self.model

    def init_group(self, host: str, port: int, backend: str, force: bool = False) -> int:
        """Join the group; on GPU with trainer.fsdp.enabled, shard the model with FSDP2 (G's `fsdp.shard_model`)."""
        super().init_group(host, port, backend, force=self.fsdp)
        if self.fsdp and not self.sharded:
            from toolrl.trainer.fsdp import shard_model
            from toolrl.trainer.optim import make_optimizer, make_scheduler

            self.model = shard_model(self.model, self.cfg)
            tr = self.cfg.trainer
            self.optimizer = make_optimizer(self.model.parameters(), tr.lr, tr.weight_decay)
            self.scheduler = make_scheduler(self.optimizer, warmup=tr.warmup_steps, total=tr.total_steps,
                                            schedule=tr.lr_schedule)
            self.sharded = True
        return self.rank

    # -- facts for the driver ----------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {
            "pad_token_id": int(self.tokenizer.pad_token_id),
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
            "engine_shares_module": self.shares_module,
        }

    # -- rollout (rank 0, colocated engines) --------------------------------------------------------
    def rollout(self, tasks: list[Any], n: int, seed: int | list[int], temperature: float | None
                ) -> list[Trajectory]:
        from toolrl.trainer.rollout import run_rollouts

        if self.backend is None:
            raise ToolrlError(f"trainer rank {self.rank} holds no rollout engine", where="rollout.placement",
                              fix="this is a bug in toolrl's placement; please report it")
        if temperature is None:
            torch.manual_seed(seed if isinstance(seed, int) else seed[0])  # one seed per task: the first
        with oom_hint("rollout" if temperature is None else "evaluation rollout"):
            return run_rollouts(self.backend, self.tokenizer, tasks, n, self.cfg, seed=seed, temperature=temperature,
                                weight_version=self.engine_version)

    def sync_engine(self, version: int) -> dict[str, float]:
        """The current weights to the colocated backend (nothing to copy when it generates with this module)."""
        import time

        t0 = time.perf_counter()
        if (self.backend is not None and not self.shares_module) or (self.backend is None and self.sharded):
            from toolrl.trainer.modeling import rollout_state_dict

            with self._model_lock():
                self._fence.before_read()  # the last update's kernels may still run on the trainer's stream
                state = rollout_state_dict(self.model)  # under FSDP2 a collective: every rank takes part
                if self.backend is not None:
                    self.backend.update_weights(state)
        self.engine_version = version
        return {"sync/seconds": time.perf_counter() - t0}

    def engine_state(self) -> dict[str, torch.Tensor]:
        """The full weights (HF names, adapters merged, CPU) for separate engines; {} on ranks > 0 under FSDP."""
        from toolrl.trainer.modeling import rollout_state_dict

        if self.sharded:
            from toolrl.trainer.fsdp import full_state_dict

            return full_state_dict(self.model)
        if self.rank != 0:
            return {}
        with self._model_lock():
            self._fence.before_read()
            return {k: v.to("cpu", copy=True) for k, v in rollout_state_dict(self.model).items()}

    def engine_sleep(self) -> None:
        if self.backend is not None and hasattr(self.backend, "sleep"):
            self.backend.sleep()

    def engine_wake(self) -> None:
        if self.backend is not None and hasattr(self.backend, "wake"):
            self.backend.wake()

    # -- forward passes and the update --------------------------------------------------------------
    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        with oom_hint("old logprobs"), self._model_lock(), sm_share.on_stream(self.update_stream):
            return batched_logprobs(self.model, batch, self.cfg.trainer.micro_batch_size, _temperature(self.cfg),
                                    self.cfg.trainer.share_prompt, self.cfg.trainer.logits_chunk)

    def update(self, batch: TrainBatch, kl_coef: float, seed: int, is_cap: float | None = None) -> dict[str, float]:
        """One policy update; `is_cap`: importance-weight cap of a stale batch (asynchronous mode, `PolicyUpdate`)."""
        torch.manual_seed(seed)
        with oom_hint("update"), self._model_lock(), sm_share.on_stream(self.update_stream):
            stats = update_policy(self.model, self.optimizer, batch, self.cfg, kl_coef, seed, self.dp, is_cap=is_cap)
            self._fence.written()
        if self.update_stream is not None:
            stats["perf/update_sms"] = float(self.update_sms)
        self.scheduler.step()
        if self.sleeps and self.device.type == "cuda":  # the allocator's cached blocks back for the waking engine
            torch.cuda.empty_cache()
        stats.update(_resources(f"policy{self.rank}" if self.world_size > 1 else "policy"))
        return stats

    # -- colocated reference and critic (called by group.ColocatedReference / ColocatedCritic only) ---
    def colocated_ref_logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """Reference logprobs in this process: the colocated frozen copy, or the base with LoRA adapters disabled."""
        from toolrl.trainer.modeling import is_peft

        if self.reference is not None:
            return self.reference.ref_logprobs(batch)
        if not is_peft(self.model):
            raise ToolrlError("this trainer rank holds no reference policy", where="trainer placement",
                              fix="this is a bug in toolrl's placement; please report it")
        with oom_hint("reference"), self._model_lock(), self.model.disable_adapter():
            return batched_logprobs(self.model, batch, self.cfg.trainer.micro_batch_size, _temperature(self.cfg),
                                    self.cfg.trainer.share_prompt, self.cfg.trainer.logits_chunk)

    def colocated_critic(self, method: str, *args: Any) -> Any:
        if self.critic is None:
            raise ToolrlError("this trainer rank holds no critic", where="trainer placement",
                              fix="this is a bug in toolrl's placement; please report it")
        return getattr(self.critic, method)(*args)

    # -- checkpoints -------------------------------------------------------------------------------
    def save(self, ckpt_dir: str, save_merged: bool = False) -> None:
        from toolrl.trainer.checkpoint import save_policy_files

        if self.sharded:  # FSDP2: gather the full weights to rank 0 (a collective); optimizer state per rank
            from toolrl.trainer.fsdp import full_state_dict

            state = full_state_dict(self.model)
            torch.save(self.optimizer.state_dict(), Path(ckpt_dir) / f"optimizer.rank{self.rank}.pt")
            if self.rank == 0:
                save_policy_files(Path(ckpt_dir), self.model, self.tokenizer, self.optimizer, self.scheduler,
                                  base_path=self.model_path, save_merged=save_merged, state_dict=state)
            return
        if self.rank != 0:
            return
        with self._model_lock():
            save_policy_files(Path(ckpt_dir), self.model, self.tokenizer, self.optimizer, self.scheduler,
                              base_path=self.model_path, save_merged=save_merged)

    def load(self, ckpt_dir: str) -> None:
        from toolrl.trainer.checkpoint import load_policy_files

        if self.sharded:
            raise ToolrlError("resuming an FSDP2-sharded policy from a checkpoint is not implemented yet",
                              where="trainer.resume with trainer.fsdp.enabled",
                              fix="resume with trainer.fsdp.enabled=false, or start from the checkpoint's policy/ "
                                  "folder as model.name_or_path (a fresh optimizer)")
        with self._model_lock():
            load_policy_files(Path(ckpt_dir), self.model, self.optimizer, self.scheduler)
            self._fence.written()

    def ready(self) -> int:
        return os.getpid()

    def close(self) -> None:
        from toolrl import runtime

        runtime.close()
        if self.backend is not None:
            self.backend.close()

    def _model_lock(self) -> Any:
        """Hold the backend's model lock (no generation interleaves with a forward/backward), or this rank's own
        (no weight copy to an engine interleaves with an update)."""
        lock = getattr(getattr(self.backend, "engine", None), "model_lock", None)
        return self._lock if lock is None else lock
