"""Where a `vllm.LLM`'s engine core runs, and giving an in-process engine's GPU memory back when it closes."""

from __future__ import annotations

import gc
from typing import Any


def engine_in_own_process(llm: Any) -> bool:
    """Whether a `vllm.LLM`'s engine core runs in another process (V1 multiprocessing)."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    return core is not None and type(core).__name__ != "InprocClient"


def free_inprocess_engine(llm: Any) -> bool:
    """Free an in-process engine's GPU memory (weights, KV cache, CUDA graphs, sleep-mode pools) on close.

    Without this the memory stays taken until the `vllm.LLM` is garbage-collected, so a second engine made in the
    same process (an evaluation after training, a notebook, a test module) may not fit. vLLM's own
    `EngineCore.shutdown` frees it and then destroys torch.distributed's default process group, which in a
    colocated run is the trainer's; so only the model executor is shut down here (its workers release the model
    runner's tensors). Returns whether there was an executor to shut down.
    """
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    executor = getattr(getattr(core, "engine_core", None), "model_executor", None)
    if executor is None:
        return False
    model = _engine_model(executor)
    executor.shutdown()
    if model is not None:
        # The runner's shutdown drops its own references, but the model stays reachable from elsewhere in the
        # engine (the 2026-12-05 GPU run: every byte of a 28 GiB engine still taken after the shutdown, the
        # KV cache bound to the attention layers). Emptying the modules' tensors frees them whoever holds them.
        drop_module_tensors(model)
    gc.collect()  # vLLM's V2 runner collects in its shutdown; the V1 runner does not
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return True


def _engine_model(executor: Any) -> Any:
    """The in-process worker's model as an `nn.Module` (unwrapped from the V1 runner's CUDA-graph wrapper), or
    None where this vLLM has no such path."""
    runner = getattr(getattr(getattr(executor, "driver_worker", None), "worker", None), "model_runner", None)
    try:
        model = runner.get_model() if hasattr(runner, "get_model") else getattr(runner, "model", None)
    except Exception:  # a runner without a model yet
        return None
    return model if hasattr(model, "modules") else None


def drop_module_tensors(model: Any) -> int:
    """Replace every parameter, buffer and tensor attribute (an attention layer's bound KV cache, a tensor or a
    list of them) of `model`'s modules by an empty tensor; for a closed engine only. Returns how many went."""
    import torch

    def empty(t: torch.Tensor) -> torch.Tensor:
        return torch.empty(0, dtype=t.dtype, device=t.device)

    dropped = 0
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for name, t in list(store.items()):
                if t is not None:
                    store[name] = None
                    dropped += 1
        for name, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor):
                setattr(module, name, empty(value))
                dropped += 1
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
                setattr(module, name, type(value)(empty(v) for v in value))
                dropped += len(value)
    return dropped
