"""Out-of-memory errors turned into advice: which knob to lower for the phase that ran out."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from toolrl.errors import ToolrlError

ADVICE = {
    "rollout": "lower rollout.max_batch_size (sequences decoded together), rollout.max_total_tokens or "
               "rollout.max_new_tokens; with vllm/sglang lower rollout.backend_args.gpu_memory_utilization",
    "evaluation rollout": "lower rollout.max_batch_size or rollout.max_new_tokens",
    "update": "lower trainer.micro_batch_size (gradient accumulation keeps the effective batch), or set "
              "model.gradient_checkpointing=true, or train LoRA adapters (model.lora.rank=16)",
    "critic update": "lower trainer.micro_batch_size, or set model.gradient_checkpointing=true",
    "old logprobs": "lower trainer.micro_batch_size (it also sets the forward-pass batch)",
    "reference": "lower trainer.micro_batch_size (it also sets the forward-pass batch), or use LoRA so the "
                 "reference is the base model with adapters disabled (no second copy)",
    "values": "lower trainer.micro_batch_size",
}


class OutOfMemoryError(ToolrlError):
    """A worker ran out of accelerator or host memory; says which setting to lower."""


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "failed to allocate" in text)


@contextmanager
def oom_hint(phase: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if not is_oom(exc):
            raise
        raise OutOfMemoryError(
            f"out of memory during the {phase} phase ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
            where=f"trainer {phase}", fix=ADVICE.get(phase, "lower trainer.micro_batch_size or rollout.max_batch_size"),
        ) from exc
