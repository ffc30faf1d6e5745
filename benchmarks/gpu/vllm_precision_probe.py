"""Why do vLLM float32 logprobs differ from HF's by ~5e-3 on the tiny model? Probe TF32.

Run on the GPU machine: python3 benchmarks/gpu/vllm_precision_probe.py
"""
import os
import sys
import tempfile

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def main():
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from toolrl.rollout.base import BackendSettings, GenerationRequest, SamplingParams
    from toolrl.rollout.testing import teacher_forced_logprobs
    from toolrl.rollout.vllm_backend import VLLMBackend

    cfg = Qwen2Config(vocab_size=2048, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    out = tempfile.mkdtemp()
    model.save_pretrained(out, safe_serialization=True)
    print("precision before vllm:", torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32)
    b = VLLMBackend(BackendSettings(model_path=out, dtype="float32", max_batch_size=8, seed=0,
                                    extra={"gpu_memory_utilization": 0.2, "enforce_eager": True,
                                           "skip_tokenizer_init": True, "max_model_len": 1024}))
    print("precision after vllm:", torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32)
    prompts = [tuple(range(10, 10 + n)) for n in (5, 17, 3, 40)]
    reqs = [GenerationRequest(p, SamplingParams(temperature=1.0, max_tokens=24, seed=i)) for i, p in enumerate(prompts)]
    res = b.generate(reqs)
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).cuda().eval()
    for prec in ("highest", "high"):
        torch.set_float32_matmul_precision(prec)
        diffs = []
        for req, r in zip(reqs, res):
            ref = teacher_forced_logprobs(hf, req.prompt_ids, r.token_ids, 1.0)
            diffs.append(max(abs(a - c) for a, c in zip(r.logprobs, ref)))
        print(f"HF at {prec}: max |vllm - hf| per prompt = {[round(d, 6) for d in diffs]}")
    # the same check on a model with default (unscaled) lm_head: are the errors scale-driven?
    b.close()


if __name__ == "__main__":
    sys.exit(main())
