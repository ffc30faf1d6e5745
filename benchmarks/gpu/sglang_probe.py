"""Start the sglang backend on a tiny random Qwen2 and generate once, printing each stage (diagnostics).

    python3 benchmarks/gpu/sglang_probe.py [attention_backend]
"""
import sys
import tempfile


def main():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from toolrl.rollout.base import BackendSettings, GenerationRequest, SamplingParams
    from toolrl.rollout.sglang_backend import SGLangBackend

    cfg = Qwen2Config(vocab_size=2048, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    out = tempfile.mkdtemp()
    Qwen2ForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    print("model saved", flush=True)
    extra = {"mem_fraction_static": 0.3, "disable_cuda_graph": True, "context_length": 1024}
    if len(sys.argv) > 1:
        extra["attention_backend"] = sys.argv[1]
    dtype = sys.argv[2] if len(sys.argv) > 2 else "float32"
    b = SGLangBackend(BackendSettings(model_path=out, dtype=dtype, max_batch_size=8, seed=0, extra=extra))
    print("engine up", flush=True)
    [r] = b.generate([GenerationRequest((10, 11, 12), SamplingParams(temperature=1.0, max_tokens=8, seed=0))])
    print("generated", r, flush=True)
    b.close()


if __name__ == "__main__":
    main()
