"""A LoRA critic (PPO with model.lora.rank > 0) on the real SmolLM2: it loads (peft's plain wrapper on the
bare backbone: the causal-LM wrapper refused it), only the adapters and the value head train, and a saved
critic loads back exactly."""

import torch

from toolrl.config import Config
from toolrl.trainer.modeling import is_peft, load_critic, load_critic_weights, save_critic


def _cfg(path):
    return Config.model_validate({"model": {"name_or_path": str(path), "lora": {"rank": 4}, "dtype": "float32",
                                            "gradient_checkpointing": False},
                                  "algorithm": {"advantage": "ppo"}, "data": {"train_file": "unused.jsonl"}})


def test_lora_critic_trains_adapters_and_head_and_round_trips(smollm2_path, tmp_path):
    torch.manual_seed(0)
    cfg = _cfg(smollm2_path)
    critic = load_critic(cfg, smollm2_path, torch.device("cpu"))
    assert is_peft(critic.backbone)
    trainable = {n for n, p in critic.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("value_head.") for n in trainable)
    assert {"value_head.weight", "value_head.bias"} <= trainable

    ids = torch.tensor([[1, 20, 30, 40, 50], [1, 60, 70, 80, 90]])
    mask, pos = torch.ones_like(ids), torch.arange(5).expand(2, 5)
    before = critic(ids, mask, pos).detach()
    assert before.shape == (2, 5)
    opt = torch.optim.AdamW([p for p in critic.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):  # pull every value towards 1
        opt.zero_grad()
        loss = ((critic(ids, mask, pos) - 1.0) ** 2).mean()
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in critic.named_parameters() if "lora_" in n)
        opt.step()
    trained = critic(ids, mask, pos).detach()
    assert ((trained - 1.0) ** 2).mean() < ((before - 1.0) ** 2).mean()

    save_critic(critic, tmp_path / "critic")
    assert (tmp_path / "critic" / "adapter_model.safetensors").exists()
    fresh = load_critic(cfg, smollm2_path, torch.device("cpu"))
    assert not torch.allclose(fresh(ids, mask, pos), trained)
    load_critic_weights(fresh, tmp_path / "critic")
    torch.testing.assert_close(fresh(ids, mask, pos), trained)
