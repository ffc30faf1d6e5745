"""Orders a read of the weights on one thread's CUDA stream after the GPU work that wrote them on another's.

    fence = WeightFence(torch.device("cuda:0"))
    # trainer thread, after queuing the optimizer step (its kernels may still be running):
    fence.written()
    # rollout thread, before reading the weights (the copy to a colocated engine, to the CPU):
    fence.before_read()

In asynchronous mode the trainer thread updates the weights on its current stream, and the rollout thread
copies them into the colocated engine from its own (a thread's current stream is its own; vLLM's engine even
sets the trainer thread's to a stream of its making). A CPU lock orders the two threads' Python, not their
GPU work: when `update()` returns, the optimizer step's kernels may still be queued, and a copy queued on
another stream could read half-updated weights. `written()` records an event on the writer's stream;
`before_read()` makes the reader's stream wait for it (on the GPU: neither thread blocks). Off CUDA both are
no-ops. tests/gpu/test_update_gpu.py checks the order with a writer kept busy by a spinning kernel.
"""

from __future__ import annotations

from typing import Any

import torch


class WeightFence:
    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._event: Any = None

    def written(self) -> None:
        """Call on the writing thread after queuing the writes."""
        if self.device.type != "cuda":
            return
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        self._event = event

    def before_read(self) -> None:
        """Call on the reading thread before queuing the reads: its current stream waits for the last writes."""
        event = self._event
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
