"""FSDP2 sharding of the policy on CUDA (`trainer.fsdp.*`, docs/training.md).

    model = shard_model(model, cfg)          # after loading (and LoRA), before building the optimizer
    optimizer = make_optimizer(model.parameters(), ...)
    ...
    state = full_state_dict(model)           # HF-named full tensors on rank 0 (CPU), {} elsewhere

`shard_model` applies `torch.distributed.fsdp.fully_shard` to every decoder layer
and then to the root module, so one layer's parameters are gathered at a time
(the root group holds the embeddings, the final norm and the LM head, tied or
not). With `trainer.fsdp.mixed_precision` the parameters are kept in float32
(the master weights the optimizer updates) and cast to bfloat16 for forward and
backward; gradients are reduced in float32. `trainer.fsdp.cpu_offload` keeps the
sharded parameters, their gradients and the optimizer state in CPU memory.

It needs an initialised `torch.distributed` process group (NCCL); the trainer
group (toolrl/trainer/ranks.py) creates it. `single_process_group()` makes a
one-rank group for scripts and tests. On the CPU the trainer uses no FSDP
(gloo, gradients all-reduced by hand): `wanted(cfg, device)` says which.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import torch

from toolrl.errors import ToolrlError

logger = logging.getLogger(__name__)


def wanted(cfg: Any, device: torch.device | str) -> bool:
    """FSDP2 is used when `trainer.fsdp.enabled` and the policy trains on CUDA."""
    return bool(cfg.trainer.fsdp.enabled) and torch.device(device).type == "cuda"


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The transformer blocks of an HF model (PEFT-wrapped or not): modules of its `_no_split_modules` classes."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or ())
    # (after sharding the classes are FSDP subclasses of the original ones: look along the MRO)
    layers = [m for m in model.modules() if any(c.__name__ in names for c in type(m).__mro__)]
    if not layers:
        raise ToolrlError(f"found no decoder layers to shard in {type(model).__name__}",
                          where="trainer.fsdp.enabled",
                          fix="use a transformers causal LM (its class names its blocks in _no_split_modules), "
                              "or set trainer.fsdp.enabled=false")
    return layers


def shard_model(model: Any, cfg: Any) -> Any:
    """Shard `model` in place with FSDP2 (each decoder layer, then the root) and return it.

    The model must already be on its CUDA device. With mixed precision it is converted to float32 first
    (the master weights), whatever `model.dtype` is.
    """
    import torch.distributed as dist
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    if not dist.is_available() or not dist.is_initialized():
        raise ToolrlError("FSDP2 needs a torch.distributed process group, and none is initialised",
                          where="trainer.fsdp.enabled",
                          fix="start the trainer through toolrl (it creates the group), call "
                              "toolrl.trainer.fsdp.single_process_group() first in a script, or set "
                              "trainer.fsdp.enabled=false")
    fs = cfg.trainer.fsdp
    kwargs: dict[str, Any] = {}
    if fs.mixed_precision:
        model.to(torch.float32)
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if fs.cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=True)
    layers = decoder_layers(model)
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    logger.info("FSDP2: %d decoder layers + root sharded over %d rank(s); mixed precision %s, CPU offload %s",
                len(layers), dist.get_world_size(), fs.mixed_precision, fs.cpu_offload)
    return model


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state_dict(model: Any, *, cpu: bool = True) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict with HF names.

    `cpu=True`: gathered to rank 0 in CPU memory, {} on the other ranks (checkpoints, weights for engines in
    other processes). `cpu=False`: full tensors on the GPU on every rank (a colocated engine on the same device).
    Works for unsharded models too (then it is the plain state dict, detached).
    """
    if not is_sharded(model):
        return {k: (v.detach().cpu() if cpu else v.detach()) for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=cpu))


def clip_grad_norm(parameters: list[torch.nn.Parameter], max_norm: float) -> float:
    """`clip_grad_norm_` that also works on FSDP2's sharded (DTensor) gradients; returns the global norm."""
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    full = getattr(norm, "full_tensor", None)
    return float(full() if callable(full) else norm)


def single_process_group(backend: str | None = None) -> bool:
    """Initialise a one-rank process group on 127.0.0.1 if none exists (scripts, tests); True if it made one."""
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(port))
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    return True
