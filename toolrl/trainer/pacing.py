"""Keep the update's CPU close behind its GPU work (`trainer.async_rollouts.update_layers_ahead`).

    with paced_layers(model, 2):          # around the update (and the trainer's logprob passes)
        update_policy(...)                # each decoder layer, forward and backward, is a pace point

Why: in asynchronous mode with a colocated engine, the rollout's engine thread and the trainer's update
run in one Python process. PyTorch launches CUDA kernels with the interpreter lock held, and the update
launches far faster than the GPU runs them, so it soon fills CUDA's launch queue; from then on each
launch waits in the driver for a free slot, the lock still held. The engine thread, which needs the lock
for every decode step's scheduling and sampling, gets it only when the interpreter forces a switch
(every `sys.getswitchinterval()`, 5 ms by default) — about as long as a whole decode step on the GPU.

With `update_layers_ahead` = k, every decoder layer call (and each layer's backward) records a CUDA event
on the update's stream, and once more than k are pending the trainer waits for the oldest one with
`Event.synchronize`, which releases the lock. The CPU then stays at most k layers ahead of the GPU: the
GPU is never starved of the update's work (a layer takes milliseconds on the GPU, its launch a fraction of
that), and the launch queue never fills, so the lock is free while the update's kernels run.

The pace points are plain Python around the layer calls (compiled or not, checkpointed or not), so the
kernels, and the gradients, are the same as without them. Off the GPU there is no launch queue: the
context does nothing there.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import torch

KEY = "trainer.async_rollouts.update_layers_ahead"


class LaunchPacer:
    """Lets the launching thread run at most `ahead` pace points ahead of the GPU stream it launches on.

    `event` makes an object with `record()`, `query()` and `synchronize()` (default: a CUDA event on the
    current stream); `waits` counts the pace points at which the GPU was behind and the thread waited.
    """

    def __init__(self, ahead: int, event: Callable[[], Any] | None = None):
        if ahead < 1:
            raise ValueError(f"{KEY} must be >= 1, got {ahead}")
        self.ahead = ahead
        self._event = event or torch.cuda.Event
        self._pending: deque[Any] = deque()
        self.ticks = 0
        self.waits = 0

    def tick(self) -> None:
        ev = self._event()
        ev.record()
        self._pending.append(ev)
        self.ticks += 1
        while len(self._pending) > self.ahead:
            oldest = self._pending.popleft()
            if not oldest.query():  # the GPU is behind: wait (torch releases the interpreter lock meanwhile)
                self.waits += 1
                oldest.synchronize()

    def reset(self) -> None:
        """Forget the pending events (the work they mark still runs; nothing waits for it here)."""
        self._pending.clear()


class _PaceBackward(torch.autograd.Function):
    """Identity in forward; a pace point when the gradient of its input is computed (a layer's backward)."""

    @staticmethod
    def forward(ctx: Any, pacer: LaunchPacer, x: torch.Tensor) -> torch.Tensor:
        ctx.pacer = pacer
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        ctx.pacer.tick()
        return None, grad


def paced_call(call: Callable[..., Any], pacer: LaunchPacer) -> Callable[..., Any]:
    """`call` (a decoder layer's) with a pace point before it and one after its backward."""

    def paced(*args: Any, **kwargs: Any) -> Any:
        pacer.tick()
        if args and isinstance(args[0], torch.Tensor) and torch.is_grad_enabled() and args[0].requires_grad:
            args = (_PaceBackward.apply(pacer, args[0]), *args[1:])
        elif isinstance(kwargs.get("hidden_states"), torch.Tensor) and torch.is_grad_enabled() \
                and kwargs["hidden_states"].requires_grad:
            kwargs["hidden_states"] = _PaceBackward.apply(pacer, kwargs["hidden_states"])
        return call(*args, **kwargs)

    return paced


# model -> the pacer in force while `paced_layers` is entered (compiled.compiled_layers wraps its calls with it)
_ACTIVE: weakref.WeakKeyDictionary[Any, LaunchPacer] = weakref.WeakKeyDictionary()


def active_pacer(model: Any) -> LaunchPacer | None:
    return _ACTIVE.get(model)


@contextlib.contextmanager
def paced_layers(model: Any, ahead: int | None, *, event: Callable[[], Any] | None = None,
                 device: torch.device | str | None = None) -> Iterator[LaunchPacer | None]:
    """Inside the block, `model`'s decoder layers are pace points (see the module's docstring); yields the
    pacer, or None (and changes nothing) when `ahead` is None or, without an `event` factory, off CUDA."""
    if ahead is None or (event is None and torch.device(device or "cpu").type != "cuda"):
        yield None
        return
    from toolrl.trainer.fsdp import decoder_layers

    from toolrl.errors import ToolrlError

    pacer = LaunchPacer(ahead, event)
    try:
        layers = decoder_layers(model)
    except ToolrlError as e:
        raise ToolrlError(f"{KEY} paces the update by its decoder layers, and {type(model).__name__} names none",
                          where=KEY, fix="leave it unset for this model") from e
    saved = [layer._compiled_call_impl for layer in layers]
    for layer, call in zip(layers, saved):
        layer._compiled_call_impl = paced_call(call or layer._call_impl, pacer)
    _ACTIVE[model] = pacer
    try:
        yield pacer
    finally:
        _ACTIVE.pop(model, None)
        pacer.reset()
        for layer, call in zip(layers, saved):
            layer._compiled_call_impl = call
