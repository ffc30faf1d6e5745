"""Checkpointed weights load back exactly: full model (tied embeddings), LoRA adapters, critic."""

from types import SimpleNamespace

import torch

from toolrl.trainer.modeling import (
    CriticModel,
    apply_lora,
    load_critic_weights,
    load_policy_weights,
    rollout_state_dict,
    save_critic,
    save_policy,
)


def _perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.01)


def _tokenizer(smollm2_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path)


def _tied_llama(seed):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def test_full_policy_round_trip(tmp_path, smollm2_path):
    trained = _tied_llama(0)
    _perturb(trained, 1)
    save_policy(trained, _tokenizer(smollm2_path), tmp_path, base_path=smollm2_path)
    assert (tmp_path / "policy" / "config.json").exists() and (tmp_path / "policy" / "tokenizer.json").exists()
    fresh = _tied_llama(5)
    load_policy_weights(fresh, tmp_path / "policy")
    for (k, a), (_, b) in zip(trained.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k
    assert fresh.lm_head.weight.data_ptr() == fresh.model.embed_tokens.weight.data_ptr()  # still tied


def test_lora_round_trip_and_rollout_weights(tmp_path, smollm2_path):
    lora = SimpleNamespace(rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    trained = apply_lora(_tied_llama(0), lora)
    _perturb(trained, 2)
    save_policy(trained, _tokenizer(smollm2_path), tmp_path, base_path=smollm2_path, save_merged=True)
    assert (tmp_path / "policy" / "adapter_config.json").exists() and (tmp_path / "merged" / "config.json").exists()
    fresh = apply_lora(_tied_llama(0), lora)
    load_policy_weights(fresh, tmp_path / "policy")
    for (k, a), (_, b) in zip(trained.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k
    # the weights pushed to an external engine are the merged HF names
    pushed = rollout_state_dict(trained)
    assert "model.layers.0.self_attn.q_proj.weight" in pushed and not any("lora" in k for k in pushed)
    x = torch.tensor([[1, 2, 3]])
    plain = _tied_llama(0)
    plain.load_state_dict(pushed, strict=False)
    with torch.no_grad():
        assert torch.allclose(plain(x).logits, trained(x).logits, atol=1e-5)


def test_critic_round_trip(tmp_path):
    from transformers import LlamaModel

    torch.manual_seed(0)
    critic = CriticModel(LlamaModel(_tied_llama(0).config), 32)
    _perturb(critic, 3)
    save_critic(critic, tmp_path / "critic")
    torch.manual_seed(1)
    fresh = CriticModel(LlamaModel(_tied_llama(1).config), 32)
    load_critic_weights(fresh, tmp_path / "critic")
    for (k, a), (_, b) in zip(critic.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k
