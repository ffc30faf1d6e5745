"""Where an in-process vLLM engine's GPU memory goes after `VLLMBackend.close()` (a GPU diagnostic).

    python3 benchmarks/gpu/close_probe.py --out $OUT/close_probe.json [--gpu-memory-utilization 0.2]

Builds the `vllm` backend on a tiny random Qwen2, generates, closes it, and prints (and writes to `--out`) the
memory the engine still takes after each further release step: `gc.unfreeze()` + a collection, dropping the
scheduler, deleting the backend. If the engine's model outlives the close, the chain of objects that keeps it
reachable is printed (bounded). The 2026-12-05 run (docs/BENCHMARKS.md, fourteenth sitting) found all 28 GiB of
an engine kept, the KV cache bound to the model's attention layers; `close()` now empties the model's tensors.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any


def describe(o: Any) -> str:
    if isinstance(o, dict):
        owners = [type(x).__name__ for x in gc.get_referrers(o) if getattr(x, "__dict__", None) is o]
        return "dict(" + ",".join(map(str, list(o)[:3])) + ")" + (f" of {owners}" if owners else "")
    if isinstance(o, (list, tuple)):
        return f"{type(o).__name__}[{len(o)}]"
    return type(o).__name__


def referrer_chain(obj: Any, depth: int = 10, limit: int = 40) -> list[str]:
    """What keeps `obj` alive, as indented lines: referrers, their owners' referrers, ... (frames, iterators and
    Python modules' globals left out)."""
    lines: list[str] = []
    seen = {id(sys._getframe()), id(lines)}

    def walk(o: Any, left: int, indent: str) -> None:
        if left == 0 or len(lines) >= limit:
            return
        for r in gc.get_referrers(o):
            if len(lines) >= limit:
                return
            if id(r) in seen or type(r).__name__ in ("frame", "list_iterator", "cell"):
                continue
            if isinstance(r, dict) and "__name__" in r and "__package__" in r:  # a module's globals
                continue
            seen.add(id(r))
            lines.append(indent + describe(r))
            target = r
            if isinstance(r, dict):
                owners = [x for x in gc.get_referrers(r) if getattr(x, "__dict__", None) is r]
                if owners:
                    target = owners[0]
                    seen.add(id(target))
            walk(target, left - 1, indent + "  ")

    walk(obj, depth, "")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.2)
    ap.add_argument("--out", default="close_probe.json")
    a = ap.parse_args()

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from toolrl.rollout.base import BackendSettings, GenerationRequest, SamplingParams
    from toolrl.rollout.vllm_backend import VLLMBackend

    cfg = Qwen2Config(vocab_size=2048, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    path = tempfile.mkdtemp()
    Qwen2ForCausalLM(cfg).save_pretrained(path, safe_serialization=True)
    torch.cuda.empty_cache()
    free0 = torch.cuda.mem_get_info()[0]
    b = VLLMBackend(BackendSettings(model_path=path, dtype="float32", max_batch_size=8, seed=0,
                                    extra={"gpu_memory_utilization": a.gpu_memory_utilization, "enforce_eager": True,
                                           "skip_tokenizer_init": True, "max_model_len": 1024}))
    b.generate([GenerationRequest([1, 5, 7], SamplingParams(temperature=0.0, max_tokens=4))])
    readings: list[dict] = []

    def read(step: str) -> None:
        torch.cuda.empty_cache()
        r = {"after": step, "taken_gib": (free0 - torch.cuda.mem_get_info()[0]) / 2**30,
             "allocated_gib": torch.cuda.memory_allocated() / 2**30}
        readings.append(r)
        print(f"{step:32s} taken {r['taken_gib']:7.2f} GiB   allocated {r['allocated_gib']:7.2f} GiB", flush=True)

    read("generate")
    core = b.llm.llm_engine.engine_core.engine_core
    model_ref = weakref.ref(core.model_executor.driver_worker.worker.model_runner.model)
    b.close()
    read("close")
    model = model_ref()
    alive = model is not None
    chain = referrer_chain(model) if alive else []
    big = sum(1 for o in gc.get_objects()
              if isinstance(o, torch.Tensor) and o.is_cuda and o.numel() * o.element_size() > 1 << 24)
    print(f"model alive after close: {alive}; live CUDA tensors over 16 MiB: {big}")
    print("\n".join(chain))
    del model
    gc.unfreeze()
    gc.collect()
    read("gc.unfreeze + collect")
    core.scheduler = None
    gc.collect()
    read("dropping the scheduler")
    del b, core
    gc.collect()
    read("deleting the backend")
    res = {"device": torch.cuda.get_device_name(0), "readings": readings, "model_alive_after_close": alive,
           "cuda_tensors_over_16mib_after_close": big, "referrer_chain": chain}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
