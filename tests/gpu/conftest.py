"""GPU tests: skipped without CUDA; each engine test also skips when its engine is not installed.

The model is a small random-init Qwen2 built from a config in a temp folder, so nothing has to
be downloaded or carried to the GPU machine. Run: `pytest -m gpu tests/gpu -q`.
"""

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")


_HERE = __import__("pathlib").Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    # this hook sees every collected item of the session, not only this folder's: touch only ours
    for item in items:
        if _HERE not in item.path.resolve().parents:
            continue
        item.add_marker(pytest.mark.gpu)
        if not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory):
    """A 2-layer random Qwen2 (vocab 2048) saved as a normal HF folder, in float32."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=2048, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # sharper than the default init, so greedy choices are not near-ties
        model.lm_head.weight.mul_(20.0)
    out = tmp_path_factory.mktemp("tiny-qwen2")
    model.save_pretrained(out, safe_serialization=True)
    return out


def hf_logprobs(model_dir, prompt, tokens, temperature=1.0, dtype=torch.float32, state_dict=None):
    """Teacher-forced logprobs of `tokens` after `prompt` with the HF model on the GPU."""
    from transformers import AutoModelForCausalLM

    from toolrl.rollout.testing import teacher_forced_logprobs

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).cuda().eval()
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return teacher_forced_logprobs(model, prompt, tokens, temperature)


def perturbed_state_dict(model_dir, scale=0.5, seed=1):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale * p.abs().mean())
    return {k: v.clone() for k, v in model.state_dict().items()}


def spin_cycles_per_second() -> float:
    """GPU clock cycles per second as `torch.cuda._sleep` counts them (one spinning thread block): tests keep a
    stream busy for a chosen time with `torch.cuda._sleep(int(seconds * spin_cycles_per_second()))`.

    The fastest of three timings after a warm-up spin. With one timing of a 50M-cycle spin (2026-12-05, H200) a
    spin meant for 3.0 s lasted 1.33 s: the timing read too few cycles per second, probably because an idle
    GPU's clock was still rising (not measured)."""
    cycles = 200_000_000
    torch.cuda._sleep(cycles)  # warm-up: let the clock rise
    rates = []
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        end.synchronize()
        rates.append(cycles / (start.elapsed_time(end) / 1000))
    return max(rates)


@pytest.fixture(scope="session")
def gpu_helpers():
    """Teacher-forced logprobs with HF on the GPU, perturbed weights for update tests, the spin-kernel clock."""
    return SimpleNamespace(hf_logprobs=hf_logprobs, perturbed_state_dict=perturbed_state_dict,
                           spin_cycles_per_second=spin_cycles_per_second)
