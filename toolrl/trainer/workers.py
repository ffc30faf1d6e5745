"""The Ray workers: policy (model + optimizer + rollout backend), reference, critic.

These are plain classes; `toolrl.trainer.cluster` turns them into Ray actors
with the resources of `ray.policy / ray.reference / ray.critic`. Each method
is one remote call of `step.train_step`; the optimisation itself is in
`step.update_policy` / `step.update_critic`.

Placement:
- the **policy worker** holds the trainable model, its optimizer and LR
  schedule, and the rollout backend. The hf backend generates with the live
  module (no copy); other backends get the new weights pushed after each update.
- the **reference policy** is a separate frozen copy in its own actor by
  default. With LoRA there is no copy: the policy worker computes reference
  logprobs with the adapters disabled. With `ray.colocate=true` the reference
  (and critic) run inside the policy actor (one process: no batch transfer;
  on a single CPU machine this is usually faster).
- the **critic** (PPO) is the policy's backbone with a value head, in its own actor.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from toolrl.errors import ToolrlError
from toolrl.trainer.batch import TrainBatch
from toolrl.trainer.forward import batched_logprobs, batched_values
from toolrl.trainer.oom import oom_hint

logger = logging.getLogger(__name__)


def _setup_process(cfg: Any, threads: int | None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(max(1, int(n)))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _config(config: dict[str, Any]) -> Any:
    from toolrl.config import Config

    return Config.model_validate(config)


def _temperature(cfg: Any) -> float:
    return cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0


class ReferenceWorker:
    """A frozen copy of the initial policy: `ref_logprobs(batch)`."""

    def __init__(self, config: dict[str, Any], model_path: str, threads: int | None = None):
        from toolrl.trainer.modeling import load_causal_lm, pick_device

        self.cfg = _config(config)
        _setup_process(self.cfg, threads)
        self.model = load_causal_lm(model_path, self.cfg.model.dtype, pick_device(self.cfg.model.device),
                                    trainable=False)

    def ref_logprobs(self, batch: TrainBatch) -> torch.Tensor:
        with oom_hint("reference"):
            return batched_logprobs(self.model, batch, self.cfg.trainer.micro_batch_size, _temperature(self.cfg),
                                    self.cfg.trainer.share_prompt)

    def ready(self) -> int:
        return os.getpid()


class CriticWorker:
    """The value model (PPO): `critic_values`, `critic_update`, `critic_save`, `critic_load`."""

    def __init__(self, config: dict[str, Any], model_path: str, threads: int | None = None):
        from toolrl.trainer.modeling import load_critic, pick_device
        from toolrl.trainer.optim import make_optimizer, make_scheduler

        self.cfg = _config(config)
        _setup_process(self.cfg, threads)
        torch.manual_seed(self.cfg.trainer.seed + 17)  # value-head init
        self.model = load_critic(self.cfg, model_path, pick_device(self.cfg.model.device))
        tr = self.cfg.trainer
        self.optimizer = make_optimizer(self.model.parameters(), tr.critic_lr, tr.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, warmup=tr.warmup_steps, total=tr.total_steps,
                                        schedule=tr.lr_schedule)

    def critic_values(self, batch: TrainBatch) -> torch.Tensor:
        with oom_hint("values"):
            return batched_values(self.model, batch, self.cfg.trainer.micro_batch_size, self.cfg.trainer.share_prompt)

    def critic_update(self, batch: TrainBatch, seed: int) -> dict[str, float]:
        from toolrl.trainer.step import update_critic

        torch.manual_seed(seed)
        with oom_hint("critic update"):
            stats = update_critic(self.model, self.optimizer, batch, self.cfg, seed)
        self.scheduler.step()
        return stats

    def critic_save(self, ckpt_dir: str) -> None:
        from toolrl.trainer.modeling import save_critic

        out = Path(ckpt_dir) / "critic"
        save_critic(self.model, out)
        torch.save(self.optimizer.state_dict(), out / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), out / "scheduler.pt")

    def critic_load(self, ckpt_dir: str) -> None:
        from toolrl.trainer.modeling import load_critic_weights

        src = Path(ckpt_dir) / "critic"
        if not src.is_dir():
            raise ToolrlError("the checkpoint has no critic/ folder, but this run trains a critic (PPO)",
                              where=str(ckpt_dir), fix="resume with the algorithm.advantage the run was started with")
        load_critic_weights(self.model, src)
        self.optimizer.load_state_dict(torch.load(src / "optimizer.pt", weights_only=False))
        self.scheduler.load_state_dict(torch.load(src / "scheduler.pt", weights_only=False))

    def ready(self) -> int:
        return os.getpid()


class PolicyWorker:
    """The trainable policy, its optimizer, and the rollout backend that samples from it."""

    def __init__(self, config: dict[str, Any], model_path: str, threads: int | None = None, *,
                 colocate_reference: bool = False, colocate_critic: bool = False):
        from toolrl import plugins
        from toolrl.env import EnvContext
        from toolrl.rollout.base import BackendSettings
        from toolrl.trainer.modeling import count_parameters, load_policy, load_tokenizer, pick_device
        from toolrl.trainer.optim import make_optimizer, make_scheduler

        self.cfg = cfg = _config(config)
        _setup_process(cfg, threads)
        self.model_path = model_path
        self.device = pick_device(cfg.model.device)
        torch.manual_seed(cfg.trainer.seed)  # adapter init
        self.tokenizer = load_tokenizer(model_path)
        self.model = load_policy(cfg, model_path, self.device)
        tr = cfg.trainer
        self.optimizer = make_optimizer(self.model.parameters(), tr.lr, tr.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, warmup=tr.warmup_steps, total=tr.total_steps,
                                        schedule=tr.lr_schedule)
        self.total_params, self.trainable_params = count_parameters(self.model)
        self.reference = ReferenceWorker(config, model_path, threads) if colocate_reference else None
        self.critic = CriticWorker(config, model_path, threads) if colocate_critic else None
        factory = plugins.registry("rollout_backends").get(cfg.rollout.backend)
        self.backend = factory(BackendSettings(
            model_path=str(model_path), dtype=cfg.model.dtype, device=str(self.device),
            max_batch_size=cfg.rollout.max_batch_size, module=self.model, tokenizer=self.tokenizer,
            seed=cfg.trainer.seed, extra=dict(cfg.rollout.backend_args),
        ))
        # the hf backend generates with self.model itself; any other engine gets weights pushed
        self.shares_module = getattr(self.backend, "model", None) is self.model
        self.env_ctx = EnvContext(cfg.envs)

    # -- facts for the driver ----------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {
            "pad_token_id": int(self.tokenizer.pad_token_id),
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "device": str(self.device),
            "backend": self.cfg.rollout.backend,
            "shares_module": self.shares_module,
            "torch_threads": torch.get_num_threads(),
        }

    # -- step phases -------------------------------------------------------------------------------
    def rollout(self, tasks: list[Any], n: int, seed: int) -> list[Any]:
        from toolrl.trainer.rollout import run_rollouts

        torch.manual_seed(seed)
        with oom_hint("rollout"):
            return run_rollouts(self.backend, self.tokenizer, tasks, n, self.cfg, self.env_ctx, seed=seed)

    def evaluate_rollout(self, tasks: list[Any], n: int, seed: int, temperature: float) -> list[Any]:
        from toolrl.trainer.rollout import run_rollouts

        with oom_hint("evaluation rollout"):
            return run_rollouts(self.backend, self.tokenizer, tasks, n, self.cfg, self.env_ctx, seed=seed,
                                temperature=temperature)

    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        with oom_hint("old logprobs"), self._model_lock():
            return batched_logprobs(self.model, batch, self.cfg.trainer.micro_batch_size, _temperature(self.cfg),
                                    self.cfg.trainer.share_prompt)

    def ref_logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """Reference logprobs: the base with LoRA adapters disabled, or the colocated frozen copy."""
        from toolrl.trainer.modeling import is_peft

        if self.reference is not None:
            return self.reference.ref_logprobs(batch)
        if not is_peft(self.model):
            raise ToolrlError("this policy worker holds no reference policy", where="trainer workers",
                              fix="this is a bug in toolrl's worker placement; please report it")
        with oom_hint("reference"), self._model_lock(), self.model.disable_adapter():
            return batched_logprobs(self.model, batch, self.cfg.trainer.micro_batch_size, _temperature(self.cfg),
                                    self.cfg.trainer.share_prompt)

    def update(self, batch: TrainBatch, kl_coef: float, seed: int) -> dict[str, float]:
        from toolrl.trainer.step import update_policy

        torch.manual_seed(seed)
        with oom_hint("update"), self._model_lock():
            stats = update_policy(self.model, self.optimizer, batch, self.cfg, kl_coef, seed)
        self.scheduler.step()
        self.sync_weights()
        return stats

    def sync_weights(self) -> None:
        """Weights to the rollout backend (nothing to copy when it generates with this very module)."""
        if self.shares_module:
            return
        from toolrl.trainer.modeling import rollout_state_dict

        self.backend.update_weights(rollout_state_dict(self.model))

    # -- colocated critic --------------------------------------------------------------------------
    def critic_values(self, batch: TrainBatch) -> torch.Tensor:
        return self._critic().critic_values(batch)

    def critic_update(self, batch: TrainBatch, seed: int) -> dict[str, float]:
        return self._critic().critic_update(batch, seed)

    def critic_save(self, ckpt_dir: str) -> None:
        self._critic().critic_save(ckpt_dir)

    def critic_load(self, ckpt_dir: str) -> None:
        self._critic().critic_load(ckpt_dir)

    def _critic(self) -> CriticWorker:
        if self.critic is None:
            raise ToolrlError("this policy worker holds no critic", where="trainer workers",
                              fix="this is a bug in toolrl's worker placement; please report it")
        return self.critic

    # -- checkpoints -------------------------------------------------------------------------------
    def save(self, ckpt_dir: str, save_merged: bool = False) -> None:
        from toolrl.trainer.modeling import save_policy

        out = Path(ckpt_dir)
        with self._model_lock():
            save_policy(self.model, self.tokenizer, out, base_path=self.model_path, save_merged=save_merged)
        torch.save(self.optimizer.state_dict(), out / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), out / "scheduler.pt")

    def load(self, ckpt_dir: str) -> None:
        from toolrl.trainer.modeling import load_policy_weights

        src = Path(ckpt_dir)
        with self._model_lock():
            load_policy_weights(self.model, src / "policy")
        self.optimizer.load_state_dict(torch.load(src / "optimizer.pt", weights_only=False))
        self.scheduler.load_state_dict(torch.load(src / "scheduler.pt", weights_only=False))
        self.sync_weights()

    def ready(self) -> int:
        return os.getpid()

    def close(self) -> None:
        from toolrl.rewards import reward_loop

        try:
            reward_loop().run_until_complete(self.env_ctx.aclose())
        except Exception:
            logger.exception("closing the environments' shared resources failed")
        self.backend.close()

    def _model_lock(self) -> Any:
        """Hold the backend's model lock (no generation interleaves with a forward/backward)."""
        engine = getattr(self.backend, "engine", None)
        lock = getattr(engine, "model_lock", None)
        if lock is None:
            import contextlib

            return contextlib.nullcontext()
        return lock
