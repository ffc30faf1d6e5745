"""Weights into a vLLM engine that runs in its own process (`rollout.backend_args.engine_process=true`).

    trainer process                                   vLLM engine-core process (same GPU)
    ---------------                                   -----------------------------------
    buckets = pack_buckets(state_dict)                WeightReceiver (vLLM's worker_extension_cls):
    for flat, entries in buckets:                       toolrl_load_shared_weights(payload):
        payload = share_payload(flat, entries)            flat = rebuild(handle)   # the trainer's memory
        llm.collective_rpc("toolrl_load_shared_weights",  model.load_weights(views of flat)
                           args=(payload,))               synchronize; drop the views

A bucket is one flat buffer per dtype, at most `bucket_bytes` (default 1 GiB) of it, so the copy
adds a bounded amount of memory. On CUDA the buffer crosses the process boundary as a CUDA IPC
handle (`torch.multiprocessing.reductions.reduce_tensor`): no bytes are copied through the socket,
the engine reads the trainer's buffer in place. The receiver synchronizes its device before it
returns, so the trainer may free or reuse the buffer once the call is back. A CPU buffer (tests, a
CPU trainer) is pickled by value instead.

The payload is pickled by toolrl in the trainer and unpickled by toolrl in the engine process the
trainer started; it never comes from anywhere else (vLLM carries it as opaque bytes).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

RECEIVER_CLS = "toolrl.rollout.vllm_weights.WeightReceiver"
RECEIVER_METHOD = "toolrl_load_shared_weights"
DEFAULT_BUCKET_BYTES = 1 << 30


@dataclass(frozen=True)
class Entry:
    """One tensor inside a flat bucket: its name, shape, and element offset/count."""

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int


def pack_buckets(state_dict: Mapping[str, Any], *, device: Any = None,
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> Iterable[tuple[Any, list[Entry]]]:
    """Yield (flat buffer, entries): the tensors of `state_dict` copied into flat buffers, one dtype per
    buffer, each at most `bucket_bytes` (a single larger tensor gets a buffer of its own).

    `device`: where the buffers live (None = the first tensor's device). Buffers are yielded one at a
    time and built lazily, so a caller that sends and drops each one holds one bucket at a time.
    """
    import torch

    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    by_dtype: dict[Any, list[tuple[str, Any]]] = {}
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"weight {name!r} is a {type(t).__name__}, not a tensor")
        by_dtype.setdefault(t.dtype, []).append((name, t.detach()))
    for dtype, items in by_dtype.items():
        size = torch.empty((), dtype=dtype).element_size()
        group: list[tuple[str, Any]] = []
        numel = 0
        for name, t in items:
            if group and (numel + t.numel()) * size > bucket_bytes:
                yield _flatten(group, numel, dtype, device)
                group, numel = [], 0
            group.append((name, t))
            numel += t.numel()
        if group:
            yield _flatten(group, numel, dtype, device)


def _flatten(group: list[tuple[str, Any]], numel: int, dtype: Any, device: Any) -> tuple[Any, list[Entry]]:
    import torch

    flat = torch.empty(numel, dtype=dtype, device=device if device is not None else group[0][1].device)
    entries: list[Entry] = []
    off = 0
    for name, t in group:
        n = t.numel()
        flat[off:off + n].copy_(t.reshape(-1), non_blocking=True)
        entries.append(Entry(name, tuple(t.shape), off, n))
        off += n
    return flat, entries


def unpack(flat: Any, entries: Iterable[Entry]) -> list[tuple[str, Any]]:
    """(name, view) pairs over a flat buffer (no copy)."""
    return [(e.name, flat[e.offset:e.offset + e.numel].view(e.shape)) for e in entries]


def share_payload(flat: Any, entries: list[Entry]) -> bytes:
    """The bytes the engine process needs to read `flat` (a CUDA IPC handle, or the CPU tensor itself).

    On CUDA the caller must keep `flat` alive, and its copies finished (synchronize), until the
    receiving call returns.
    """
    if flat.is_cuda:
        from torch.multiprocessing.reductions import reduce_tensor

        rebuild, args = reduce_tensor(flat)
        handle: tuple[str, Any] = ("cuda_ipc", (rebuild, tuple(args)))
    else:
        handle = ("value", flat)
    return pickle.dumps({"handle": handle, "entries": [(e.name, e.shape, e.offset, e.numel) for e in entries]})


def open_payload(payload: bytes, device_index: int | None = None) -> tuple[Any, list[Entry]]:
    """The flat buffer a payload points to (in this process) and its entries."""
    data = pickle.loads(payload)  # noqa: S301 - toolrl's own bytes from the trainer that started this engine
    kind, value = data["handle"]
    if kind == "cuda_ipc":
        rebuild, args = value
        args = list(args)
        if device_index is not None:
            args[6] = device_index  # reduce_tensor's storage device: the receiver's index for the same GPU
        flat = rebuild(*args)
    elif kind == "value":
        flat = value
    else:
        raise ValueError(f"unknown weight payload kind {kind!r}")
    return flat, [Entry(n, tuple(s), o, c) for n, s, o, c in data["entries"]]


class WeightReceiver:
    """Mixed into vLLM's worker class (`worker_extension_cls`): loads weights the trainer shared."""

    def toolrl_load_shared_weights(self, payload: bytes) -> int:
        import torch

        device = getattr(self, "device", None)
        index = device.index if getattr(device, "type", None) == "cuda" else None
        flat, entries = open_payload(payload, index)
        weights = unpack(flat, entries)
        self.model_runner.model.load_weights(weights=weights)  # type: ignore[attr-defined]
        if flat.is_cuda:
            torch.cuda.synchronize(flat.device)  # the copies out of the trainer's buffer are done
        n = len(weights)
        del weights, flat
        return n
