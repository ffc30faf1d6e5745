"""Where an in-process vLLM engine's GPU memory goes after `VLLMBackend.close()` (diagnostic for the GPU test
`test_close_frees_the_engines_gpu_memory_and_keeps_the_process_group`). Prints the memory after each extra
release step, and the largest live CUDA tensors with their referrers' types."""
from __future__ import annotations

import gc
import sys
import tempfile


def gib(x: int) -> str:
    return f"{x / 2**30:.2f}"


def main() -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from toolrl.rollout.base import BackendSettings, GenerationRequest, SamplingParams
    from toolrl.rollout.vllm_backend import VLLMBackend
    import toolrl.rollout.vllm_backend as vlb

    cfg = Qwen2Config(vocab_size=2048, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    path = tempfile.mkdtemp()
    Qwen2ForCausalLM(cfg).save_pretrained(path, safe_serialization=True)
    free0 = torch.cuda.mem_get_info()[0]
    b = VLLMBackend(BackendSettings(model_path=path, dtype="float32", max_batch_size=8, seed=0,
                                    extra={"gpu_memory_utilization": float(sys.argv[1]) if len(sys.argv) > 1 else 0.2,
                                           "enforce_eager": True, "skip_tokenizer_init": True, "max_model_len": 1024}))
    b.generate([GenerationRequest([1, 5, 7], SamplingParams(temperature=0.0, max_tokens=4))])

    def report(tag: str) -> None:
        torch.cuda.empty_cache()
        print(f"{tag:40s} taken {gib(free0 - torch.cuda.mem_get_info()[0])} GiB  allocated "
              f"{gib(torch.cuda.memory_allocated())}  reserved {gib(torch.cuda.memory_reserved())}", flush=True)

    report("after generate")
    core = b.llm.llm_engine.engine_core
    print("core type", type(core).__name__, "inner", type(getattr(core, "engine_core", None)).__name__,
          "executor", type(getattr(getattr(core, "engine_core", None), "model_executor", None)).__name__)
    print("gc frozen objects", gc.get_freeze_count())
    import weakref

    model_ref = weakref.ref(core.engine_core.model_executor.driver_worker.worker.model_runner.model)
    orig = vlb.free_inprocess_engine
    vlb.free_inprocess_engine = lambda llm: print("free_inprocess_engine ->", orig(llm)) or True
    b.close()
    report("after close")
    print("gc frozen objects", gc.get_freeze_count())
    big = [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.is_cuda and o.numel() * o.element_size() > 1 << 24]
    print("live CUDA tensors > 16 MiB:", len(big))
    for t in sorted(big, key=lambda t: -t.numel() * t.element_size())[:6]:
        refs = [type(r).__name__ + (":" + ",".join(list(r.keys())[:4]) if isinstance(r, dict) else "")
                for r in gc.get_referrers(t) if r is not big]
        print("  ", tuple(t.shape), t.dtype, gib(t.numel() * t.element_size()), "GiB referrers", refs[:5])
    seen = {id(big), id(sys._getframe())}

    def describe(o):
        if isinstance(o, dict):
            owners = [type(x).__name__ for x in gc.get_referrers(o) if getattr(x, "__dict__", None) is o]
            return "dict(" + ",".join(map(str, list(o.keys())[:3])) + ")" + (f" of {owners}" if owners else "")
        if isinstance(o, (list, tuple)):
            return f"{type(o).__name__}[{len(o)}]"
        return type(o).__name__

    lines = [0]

    def chain(o, depth, indent):
        if depth == 0 or lines[0] > 70:
            return
        for r in gc.get_referrers(o):
            if id(r) in seen or type(r).__name__ in ("frame", "list_iterator"):
                continue
            seen.add(id(r))
            lines[0] += 1
            print(indent + describe(r), flush=True)
            target = r
            if isinstance(r, dict):
                owners = [x for x in gc.get_referrers(r) if getattr(x, "__dict__", None) is r]
                if owners:
                    target = owners[0]
                    seen.add(id(target))
            chain(target, depth - 1, indent + "  ")

    model = model_ref()
    print("model alive after close:", model is not None)
    if model is not None:
        chain(model, 10, "  ")
        del model
    gc.unfreeze(); gc.collect()
    report("after gc.unfreeze + collect")
    b.llm.llm_engine.engine_core.engine_core.scheduler = None
    gc.collect()
    report("after dropping the scheduler")
    del b
    gc.collect()
    report("after del backend")


if __name__ == "__main__":
    main()
