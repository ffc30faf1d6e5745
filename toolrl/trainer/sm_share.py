"""One GPU shared in space by the update and an overlapped rollout (`trainer.async_rollouts.update_sm_fraction`).

    stream = update_stream(0.75, torch.device("cuda:0"))   # once: a CUDA green context with 3/4 of the SMs
    with on_stream(stream):                                # around the update (and the trainer's logprob passes)
        update_policy(...)

In asynchronous mode with a colocated engine the rollout of step k+1 runs on the GPU while step k's update
does; overlapped, the two phases took about as long as one after the other (docs/BENCHMARKS.md, third
sitting). One suspected cause: the GPU hands the update's large kernels every SM they ask for, and each of
the decode step's small kernels (hundreds per token, one after another) waits for SMs to come free. With
`update_sm_fraction` set, the update's kernels go to a stream of a CUDA green context that holds that share
of the device's SMs: the rest are always free for the engine, whose own kernels may still use any SM.
Measured (fifth sitting): it sped the rollout up on one machine and gained nothing on another, so SMs are
not all the two phases share (the sixth sitting found the rest: Python's interpreter lock, see
`compiled.py`'s CUDA-graph mode); hence off by default.

The update runs on that stream exactly as on the default one (same kernels, same memory: the caching
allocator serves both streams); `on_stream` orders it after the caller's pending work and the caller's
later work after it, so weights and statistics read afterwards are complete. The SM count is rounded down
to a multiple of 8 (the partition granularity of current NVIDIA GPUs), at least 8. Green contexts need
PyTorch built with CUDA >= 12.8 (`torch.cuda.green_contexts`) and a driver that supports them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

from toolrl.errors import ToolrlError

logger = logging.getLogger(__name__)

KEY = "trainer.async_rollouts.update_sm_fraction"
SM_GRANULE = 8
# (device index, SMs) -> (green context, its stream): a context lives as long as the process, like the CUDA one
_STREAMS: dict[tuple[int, int], tuple[Any, Any]] = {}


def partition_sms(fraction: float, total: int) -> int:
    """SMs for the update: `fraction` of `total`, rounded down to a multiple of 8, at least 8 and below `total`."""
    if not 0 < fraction < 1:
        raise ToolrlError(f"update_sm_fraction={fraction} is not between 0 and 1", where=KEY,
                          fix="use a fraction such as 0.75, or leave it unset (the update uses every SM)")
    if total <= SM_GRANULE:
        raise ToolrlError(f"this GPU has {total} SMs: too few to split", where=KEY, fix="leave it unset")
    n = int(fraction * total) // SM_GRANULE * SM_GRANULE
    return max(SM_GRANULE, min(n, (total - 1) // SM_GRANULE * SM_GRANULE))


def update_stream(fraction: float | None, device: torch.device | str) -> Any:
    """The stream of a green context holding `fraction` of `device`'s SMs (made once per process and SM count);
    None when `fraction` is None."""
    if fraction is None:
        return None
    device = torch.device(device)
    if device.type != "cuda":
        raise ToolrlError(f"the trainer runs on {device}: SM partitions exist on CUDA GPUs only", where=KEY,
                          fix="leave update_sm_fraction unset off the GPU")
    index = device.index if device.index is not None else torch.cuda.current_device()
    total = torch.cuda.get_device_properties(index).multi_processor_count
    sms = partition_sms(fraction, total)
    if (index, sms) not in _STREAMS:
        green = _green_context(sms, index)
        s = green.Stream()
        if not isinstance(s, torch.cuda.Stream):  # PyTorch 2.11 hands back a generic torch.Stream
            s = torch.cuda.Stream(stream_id=s.stream_id, device_index=s.device_index, device_type=s.device_type)
        _STREAMS[(index, sms)] = (green, s)
        logger.info("update_sm_fraction=%s: the update runs on %d of the %d SMs of cuda:%d (a green context); "
                    "the other %d are left to the rollout engine", fraction, sms, total, index, total - sms)
    return _STREAMS[(index, sms)][1]


def _green_context(sms: int, index: int) -> Any:
    module = getattr(torch.cuda, "green_contexts", None)
    if module is None or not getattr(module, "SUPPORTED", False):
        raise ToolrlError(f"this PyTorch ({torch.__version__}) has no CUDA green contexts", where=KEY,
                          fix="use a PyTorch built with CUDA >= 12.8 (2.10 or later), or leave update_sm_fraction "
                              "unset")
    try:
        return module.GreenContext.create(num_sms=sms, device_id=index)
    except (RuntimeError, TypeError) as exc:
        raise ToolrlError(f"creating a green context of {sms} SMs on cuda:{index} failed: {exc}", where=KEY,
                          fix="update the NVIDIA driver (green contexts need CUDA 12.4+ drivers), try another "
                              "fraction, or leave update_sm_fraction unset") from exc


def sms_of(stream: Any) -> int:
    """The SM count of a stream made by `update_stream`; 0 for None or any other stream."""
    return next((sms for (_, sms), (_, s) in _STREAMS.items() if s is stream), 0) if stream is not None else 0


@contextlib.contextmanager
def on_stream(stream: Any) -> Iterator[None]:
    """Run the block's CUDA work on `stream` (None: no-op), after the caller's pending work and before its
    later work, also when the block raises."""
    if stream is None:
        yield
        return
    caller = torch.cuda.current_stream(stream.device)
    stream.wait_stream(caller)
    try:
        with torch.cuda.stream(stream):
            yield
    finally:
        caller.wait_stream(stream)
