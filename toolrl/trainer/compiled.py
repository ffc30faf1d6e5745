"""Regional `torch.compile` of the policy's decoder layers for its teacher-forced passes (`trainer.compile_layers`).

    prepare(model, cfg)                       # once, after loading (toolrl.trainer.modeling.load_policy)
    with compiled_layers(model):              # around a training pass, its backward included
        loss = ...; loss.backward()           # (optimize.update_policy and forward.batched_logprobs do it)

Each decoder layer (the classes of the model's `_no_split_modules`, as FSDP shards them) gets a compiled
version of its call. They are switched on only inside `compiled_layers`, that is for the update and the
old/reference logprob passes; generation with the `hf` backend, which may share the module, runs the
layers eagerly as before (decoding would compile other graphs for no gain). A checkpointed layer is
checkpointed around its compiled call, so its recomputation in backward runs the same compiled graph.
Passes with compiled layers do not share a group's prompt (`trainer.share_prompt`: its KV cache). The
layers of a model share their code, so PyTorch compiles one graph and every layer reuses it (parameters
are graph inputs); shapes are marked dynamic from the start, so micro-batches of other lengths do not
recompile.

`trainer.compile_mode=reduce-overhead` compiles the layers in torch.compile's mode of that name: PyTorch's
CUDA graph trees record each layer call once per shape and replay it, so the update launches a graph per
layer instead of its kernels one by one from Python. In asynchronous mode the colocated engine's thread
needs the same interpreter lock, and an update that launches from Python spends most of its time waiting
for it (docs/decisions.md). Micro-batch widths are then rounded up to multiples of 64 (`width_multiple`),
so few shapes are recorded; every micro-batch starts a new graph step (`micro_batch_begin`), so one
recording per layer and shape serves every micro-batch, and parameter gradients accumulate in tensors of
their own (`own_gradients`); checkpointed layers cannot be recorded (the config refuses the combination).

What it buys: the update's non-matrix work (RMSNorm, rotary embeddings, the SwiGLU activation, residual
adds, dtype casts) is fused into a few kernels instead of dozens per layer (docs/BENCHMARKS.md gives
the measured figures). What it costs: the first update compiles (tens of seconds on a GPU), and it
needs a working Inductor toolchain (Triton on CUDA, a C++ compiler on the CPU).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch

from toolrl.errors import ToolrlError

logger = logging.getLogger(__name__)

# model -> [(layer, compiled call)]: kept beside the model rather than on it, so PEFT and FSDP wrappers,
# state dicts and checkpoints never see it
_COMPILED: weakref.WeakKeyDictionary[Any, list[tuple[torch.nn.Module, Callable[..., Any]]]] = (
    weakref.WeakKeyDictionary())
# models whose layers replay CUDA graphs (compile_mode reduce-overhead)
_GRAPHED: weakref.WeakSet[Any] = weakref.WeakSet()
# models whose compiled layers have run a pass (the first one compiles, and records CUDA graphs)
_STARTED: weakref.WeakSet[Any] = weakref.WeakSet()


def prepare(model: Any, cfg: Any, *, backend: str = "inductor") -> bool:
    """Compile `model`'s decoder layers if `trainer.compile_layers`; True if it did.

    `backend` is torch.compile's (tests use "aot_eager" to check the plumbing without code generation); its
    mode is `trainer.compile_mode` ("reduce-overhead": CUDA graphs).
    Compilation itself happens lazily, at the first call inside `compiled_layers`.
    """
    if not getattr(cfg.trainer, "compile_layers", False):
        return False
    from toolrl.trainer.fsdp import decoder_layers

    mode = None if getattr(cfg.trainer, "compile_mode", "default") == "default" else cfg.trainer.compile_mode
    layers = decoder_layers(model)
    if mode == "reduce-overhead":
        _GRAPHED.add(model)
    _COMPILED[model] = [(layer, torch.compile(layer._call_impl, dynamic=True, backend=backend, mode=mode))
                        for layer in layers]
    logger.info("compile_layers: %d decoder layers (%s) will run compiled in training passes (backend %s, mode %s)",
                len(layers), type(layers[0]).__name__, backend, mode or "default")
    return True


def is_prepared(model: Any) -> bool:
    return model in _COMPILED


# micro-batch widths are rounded up to this multiple when the layers replay CUDA graphs: one graph per shape
GRAPH_WIDTH_MULTIPLE = 64


def micro_batch_begin(model: Any) -> None:
    """Call before each micro-batch of a pass: with CUDA-graph layers, each micro-batch starts a new graph step.

    CUDA graph trees record one graph per position on the path since the last step mark, so without a mark per
    micro-batch the tenth micro-batch's first layer is a different recording from the first micro-batch's, and
    a pass whose micro-batch shapes differ from the last pass's records all of them again (tens of seconds per
    update instead of replays). Nothing a micro-batch leaves behind may be a graph output: the caller keeps the
    gradients in tensors of its own (`own_gradients`) and reads only eager results.
    """
    if model in _GRAPHED:
        torch.compiler.cudagraph_mark_step_begin()


def own_gradients(model: Any, params: list[torch.nn.Parameter]) -> bool:
    """With CUDA-graph layers, give every parameter a zeroed gradient tensor of its own before the first backward
    (allocated once, zeroed in place after that); False (nothing done) for other models, whose caller zeroes the
    gradients as usual.

    Autograd would otherwise store a graph's output buffer as a parameter's first gradient, and the next
    micro-batch's replay (a new graph step, `micro_batch_begin`) overwrites that buffer; with a gradient of its
    own every micro-batch adds into it in place.
    """
    if model not in _GRAPHED:
        return False
    for p in params:
        if p.grad is None:
            p.grad = torch.empty_like(p)  # zeroed below with the others
    grads = [p.grad for p in params]
    if grads:
        torch._foreach_zero_(grads)  # one launch for all of them (a `zero_()` each: ~290 for Qwen2-0.5B)
    return True


def width_multiple(model: Any) -> int:
    """What `TrainBatch.trimmed` should round a micro-batch's widths to for `model`'s passes."""
    return GRAPH_WIDTH_MULTIPLE if model in _GRAPHED else 1


@contextlib.contextmanager
def compiled_layers(model: Any) -> Iterator[None]:
    """Inside the block, the prepared model's decoder layers run their compiled calls; a no-op otherwise.

    A layer under gradient checkpointing is checkpointed around its compiled call here, in eager mode, and
    its own (transformers') checkpointing is off meanwhile: traced from inside the compiled region, the
    checkpoint would break the graph (transformers' layers touch a context variable in forward).
    """
    pairs = _COMPILED.get(model)
    if not pairs:
        yield
        return
    if model not in _STARTED:  # say why the first pass is slow (on an H200, 15 s compiled and 46-54 s graphed)
        _STARTED.add(model)
        logger.info("compile_layers: the first pass compiles the decoder layers%s; this takes tens of seconds once",
                    " and records them as CUDA graphs" if model in _GRAPHED else "")
    saved = [(layer._compiled_call_impl, getattr(layer, "gradient_checkpointing", False)) for layer, _ in pairs]
    for (layer, fn), (_, checkpointed) in zip(pairs, saved):
        layer._compiled_call_impl = _checkpointed(layer, fn) if checkpointed else fn
        if checkpointed:
            layer.gradient_checkpointing = False
    try:
        yield
    except torch._dynamo.exc.BackendCompilerFailed as e:  # no Triton, no C++ compiler, an unsupported op...
        cause = e.inner_exception
        first_line = (str(cause).splitlines() or [""])[0]
        raise ToolrlError(f"compiling the decoder layers failed: {type(cause).__name__}: {first_line}",
                          where="trainer.compile_layers",
                          fix="set trainer.compile_layers=false (the layers then run eagerly; the results are the "
                              "same), or install a working Triton (CUDA) / C++ compiler (CPU)") from e
    finally:
        for (layer, _), (call, checkpointed) in zip(pairs, saved):
            layer._compiled_call_impl = call
            if checkpointed:
                layer.gradient_checkpointing = True


def _checkpointed(layer: torch.nn.Module, fn: Callable[..., Any]) -> Callable[..., Any]:
    from torch.utils.checkpoint import checkpoint

    def call(*args: Any, **kwargs: Any) -> Any:
        if layer.training and torch.is_grad_enabled():
            kwargs.pop("use_cache", None)  # as transformers does under checkpointing: nothing is cached
            return checkpoint(fn, *args, use_reentrant=False, **kwargs)
        return fn(*args, **kwargs)

    return call
