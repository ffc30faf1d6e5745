"""GPU rollout throughput: the hf backend vs the vllm backend vs HF `model.generate`, and vLLM weight pushes.

Same prompts for every method (chat-rendered arithmetic questions for the real
SmolLM2-135M-Instruct), sampling at temperature 1, natural stopping with a cap
of 256 new tokens. Reports generated tokens/s, and the time of
`VLLMBackend.update_weights` with the full SmolLM2 state dict.

    python3 benchmarks/gpu/backend_throughput.py --prompts 256 --out $OUT/gpu_throughput.json
"""
import argparse
import json
import os
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def prompts_for(tok, n):
    import random

    rng = random.Random(0)
    out = []
    for _ in range(n):
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        msgs = [{"role": "user", "content": f"What is {a} times {b}? Explain step by step."}]
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        out.append(tuple(int(i) for i in ids))
    return out


def run_backend(backend, prompts, cap, batch):
    from toolrl.rollout.base import GenerationRequest, SamplingParams

    reqs = [GenerationRequest(p, SamplingParams(temperature=1.0, max_tokens=cap, seed=i)) for i, p in enumerate(prompts)]
    backend.generate(reqs[: min(8, len(reqs))])  # warm-up
    t = time.perf_counter()
    res = []
    for i in range(0, len(reqs), batch):
        res += backend.generate(reqs[i : i + batch])
    dt = time.perf_counter() - t
    toks = sum(len(r.token_ids) for r in res)
    return {"tokens": toks, "seconds": dt, "tok_per_s": toks / dt}


def run_hf_generate(path, prompts, cap, batch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).cuda().eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    toks, t = 0, time.perf_counter()
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        width = max(map(len, chunk))
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in chunk]).cuda()
        mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in chunk])[:, None]).long().cuda()
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=cap, do_sample=True,
                                 temperature=1.0, top_p=1.0, top_k=0, pad_token_id=pad)
        for row in out[:, width:].tolist():
            n = len(row)
            for j, x in enumerate(row):
                if x in (tok.eos_token_id, pad):
                    n = j + 1
                    break
            toks += n
    dt = time.perf_counter() - t
    return {"tokens": toks, "seconds": dt, "tok_per_s": toks / dt}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--cap", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default="gpu_throughput.json")
    a = ap.parse_args()

    import torch

    from toolrl import models
    from toolrl.rollout.base import BackendSettings
    from toolrl.rollout.hf_backend import HFBackend
    from toolrl.rollout.vllm_backend import VLLMBackend
    from transformers import AutoTokenizer

    path = str(models.resolve("smollm2-135m-instruct", progress=False))
    tok = AutoTokenizer.from_pretrained(path)
    prompts = prompts_for(tok, a.prompts)
    results = {"device": torch.cuda.get_device_name(0), "prompts": a.prompts, "cap": a.cap, "batch": a.batch}
    results["hf_generate"] = run_hf_generate(path, prompts, a.cap, a.batch)
    hf = HFBackend(BackendSettings(model_path=path, dtype="float32", device="cuda", max_batch_size=a.batch, seed=0))
    results["hf_backend"] = run_backend(hf, prompts, a.cap, a.batch)
    hf.close()
    v = VLLMBackend(BackendSettings(model_path=path, dtype="float32", max_batch_size=max(a.batch, 256), seed=0,
                                    extra={"gpu_memory_utilization": 0.3, "max_model_len": 2048}))
    results["vllm_backend"] = run_backend(v, prompts, a.cap, len(prompts))
    from transformers import AutoModelForCausalLM

    sd = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).cuda().state_dict()
    times = []
    for _ in range(5):
        torch.cuda.synchronize()
        t = time.perf_counter()
        v.update_weights(sd)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    results["vllm_update_weights_ms"] = sorted(times)[len(times) // 2] * 1000
    v.close()
    with open(a.out, "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"device: {results['device']}; {a.prompts} prompts, cap {a.cap}, temperature 1, natural stopping")
    print(f"{'method':<34}{'tokens':>8}{'seconds':>9}{'tok/s':>10}")
    for k, label in (("hf_generate", f"HF model.generate (batch {a.batch})"), ("hf_backend", f"toolrl hf backend (batch {a.batch})"),
                     ("vllm_backend", "toolrl vllm backend (all at once)")):
        r = results[k]
        print(f"{label:<34}{r['tokens']:>8}{r['seconds']:>9.2f}{r['tok_per_s']:>10.0f}")
    print(f"vllm update_weights (SmolLM2-135M, fp32, median of 5): {results['vllm_update_weights_ms']:.1f} ms")


if __name__ == "__main__":
    main()
