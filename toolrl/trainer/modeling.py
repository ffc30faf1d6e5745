"""Loading and saving the models the workers hold: policy (optionally LoRA), reference, critic.

Checkpoints hold the policy as a normal Hugging Face folder (`save_pretrained`
+ tokenizer + chat template), loadable by transformers and `toolrl serve` with
no conversion. With LoRA the policy folder holds the PEFT adapter (which
transformers loads on top of the base model named in `adapter_config.json`);
`model.lora.save_merged` adds a `merged/` folder with base + adapters folded
into plain weights.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from toolrl.errors import ToolrlError, require
from toolrl.trainer import compiled

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def quiet_transformers() -> None:
    """No per-file loading progress bars in worker logs."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - cosmetic only
        logger.debug("could not quiet transformers' logging", exc_info=True)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ToolrlError(f"model.device={name!r} but no CUDA device is visible to this worker",
                          where="model.device",
                          fix="set model.device=auto (or cpu), or give the worker a GPU: ray.policy.num_gpus=1")
    return torch.device(name)


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: str | Path, dtype: str, device: torch.device, *, trainable: bool = True) -> Any:
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype])
    model.to(device)
    model.eval()  # no dropout: the update recomputes exactly what the rollout sampled
    if not trainable:
        model.requires_grad_(False)
    return model


@contextlib.contextmanager
def _peft_reads_old_checkpointing_name() -> Iterator[None]:
    """Silence one FutureWarning that is peft's, not ours: wrapping a model, peft (0.21) reads
    `is_gradient_checkpointing`, which transformers deprecates for v6. A user can do nothing about it, and
    `make demo` printed it. Other warnings pass through."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def apply_lora(model: Any, lora: Any, task_type: str | None = "CAUSAL_LM") -> Any:
    """Wrap `model` with PEFT LoRA adapters (only they train).

    task_type: "CAUSAL_LM" for a policy; None for a bare backbone (the critic's: peft's causal-LM wrapper
    needs the LM head's generation methods, and the plain wrapper passes every forward argument through).
    """
    peft = require("peft", "lora", "LoRA (model.lora.rank > 0)")
    cfg = peft.LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules), task_type=task_type,
    )
    try:
        with _peft_reads_old_checkpointing_name():
            wrapped = peft.get_peft_model(model, cfg)
    except ValueError as exc:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ToolrlError(f"LoRA could not be applied: {exc}", where="model.lora.target_modules",
                          fix=f"use linear-layer names of this model, e.g. {names}") from None
    wrapped.eval()
    return wrapped


def load_policy(cfg: Any, path: str | Path, device: torch.device) -> Any:
    """The trainable policy: the full model, or the base with LoRA adapters."""
    model = load_causal_lm(path, cfg.model.dtype, device)
    if cfg.model.lora.rank:
        model = apply_lora(model, cfg.model.lora)
    if _checkpointing(cfg, device):  # None: on for CUDA (optimize.py asks the model: forward.uses_gradient_checkpointing)
        enable_checkpointing(model)
        if cfg.model.lora.rank:
            model.enable_input_require_grads()
    compiled.prepare(model, cfg)  # trainer.compile_layers
    return model


def enable_checkpointing(model: Any) -> None:
    """Recompute activations in backward (non-reentrant checkpoints), through the current transformers name:
    `activation_checkpointing_enable` (`gradient_checkpointing_enable` is deprecated, removal in v6)."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:  # transformers before the rename
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _checkpointing(cfg: Any, device: torch.device) -> bool:
    from toolrl.trainer.forward import gradient_checkpointing_wanted

    return gradient_checkpointing_wanted(cfg.model.gradient_checkpointing, device)


def count_parameters(model: Any) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def save_policy(model: Any, tokenizer: Any, out: Path, *, base_path: str | Path, save_merged: bool = False,
                state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write the policy as an HF folder (`out/policy`), and with LoRA optionally `out/merged`.

    `state_dict`: the full weights to write instead of the model's own (an FSDP2-sharded model, gathered).
    """
    policy_dir = out / "policy"
    if state_dict is not None and not is_peft(model):
        model.save_pretrained(str(policy_dir), state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(str(policy_dir))
        return
    if is_peft(model):
        model.save_pretrained(str(policy_dir), safe_serialization=True)
        _point_adapter_at_base(policy_dir, base_path)
        tokenizer.save_pretrained(str(policy_dir))
        if save_merged:
            merged = _merged_copy(model)
            merged.save_pretrained(str(out / "merged"), safe_serialization=True)
            tokenizer.save_pretrained(str(out / "merged"))
            del merged
    else:
        model.save_pretrained(str(policy_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(policy_dir))


def _point_adapter_at_base(policy_dir: Path, base_path: str | Path) -> None:
    """Record the absolute base-model folder, so the adapter loads from anywhere on this machine."""
    import json

    cfg_file = policy_dir / "adapter_config.json"
    data = json.loads(cfg_file.read_text())
    data["base_model_name_or_path"] = str(Path(base_path).resolve())
    cfg_file.write_text(json.dumps(data, indent=2))


def _merged_copy(model: Any) -> Any:
    """Base + adapters folded into plain weights, as a new model (the training model is untouched)."""
    import copy

    clone = copy.deepcopy(model)
    merged = clone.merge_and_unload()
    merged.requires_grad_(False)
    return merged


def load_policy_weights(model: Any, ckpt_policy_dir: Path) -> None:
    """Load checkpointed weights into an already built policy (full or LoRA), exactly."""
    from safetensors.torch import load_file

    if is_peft(model):
        from peft import set_peft_model_state_dict

        state = load_file(str(ckpt_policy_dir / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(model, state)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ToolrlError(f"the checkpoint's adapter has unexpected weights {unexpected[:3]}",
                              where=str(ckpt_policy_dir), fix="resume with the same model.lora settings as the run")
        return
    files = sorted(ckpt_policy_dir.glob("*.safetensors"))
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ToolrlError(f"the checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})",
                          where=str(ckpt_policy_dir), fix="resume with the same model.name_or_path as the run")


def rollout_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """Weights to push to an external rollout engine (vLLM/SGLang), HF names, adapters merged.

    An FSDP2-sharded model gives its full weights on the GPU (a collective: every rank must call it).
    """
    from toolrl.trainer.fsdp import full_state_dict, is_sharded

    if is_sharded(model):
        return full_state_dict(model, cpu=False)
    if not is_peft(model):
        return {k: v.detach() for k, v in model.state_dict().items()}
    model.merge_adapter()
    try:
        out = {}
        for k, v in model.base_model.model.state_dict().items():
            if "lora_" in k:
                continue
            out[k.replace(".base_layer", "")] = v.detach().clone()
        return out
    finally:
        model.unmerge_adapter()


class CriticModel(torch.nn.Module):
    """A value model: the policy's backbone (without LM head) and a linear value head."""

    def __init__(self, backbone: Any, hidden_size: int):
        super().__init__()
        self.backbone = backbone
        self.value_head = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.normal_(self.value_head.weight, std=1.0 / (hidden_size + 1))
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False)
        return self.value_head(out.last_hidden_state.to(self.value_head.weight.dtype)).squeeze(-1)


def load_critic(cfg: Any, path: str | Path, device: torch.device) -> CriticModel:
    from transformers import AutoModel

    quiet_transformers()
    backbone = AutoModel.from_pretrained(str(path), dtype=DTYPES[cfg.model.dtype])
    if cfg.model.lora.rank:
        backbone = apply_lora(backbone, cfg.model.lora, task_type=None)
    if _checkpointing(cfg, device):
        enable_checkpointing(backbone)
        if cfg.model.lora.rank:
            backbone.enable_input_require_grads()
    hidden = backbone.config.hidden_size
    critic = CriticModel(backbone, hidden).to(device=device, dtype=torch.float32)
    if cfg.model.dtype != "float32":
        critic.backbone.to(DTYPES[cfg.model.dtype])
    critic.eval()
    return critic


def save_critic(critic: CriticModel, out: Path) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    critic.backbone.save_pretrained(str(out), safe_serialization=True)
    save_file({k: v.contiguous() for k, v in critic.value_head.state_dict().items()}, str(out / "value_head.safetensors"))


def load_critic_weights(critic: CriticModel, out: Path) -> None:
    from safetensors.torch import load_file

    if is_peft(critic.backbone):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(critic.backbone, load_file(str(out / "adapter_model.safetensors")))
    else:
        state: dict[str, torch.Tensor] = {}
        for f in sorted(out.glob("model*.safetensors")):
            state.update(load_file(str(f)))
        critic.backbone.load_state_dict(state, strict=True)
    critic.value_head.load_state_dict(load_file(str(out / "value_head.safetensors")))


def load_eval_model(model_path: Path, dtype: str, device: str) -> Any:
    """A LoRA adapter folder as a merged model (None for a plain HF folder: the backend loads it itself)."""
    if not (model_path / "adapter_config.json").exists() or (model_path / "config.json").exists():
        return None
    from transformers import AutoModelForCausalLM

    peft = require("peft", "lora", "evaluating a LoRA adapter checkpoint")
    quiet_transformers()
    base_name = peft.PeftConfig.from_pretrained(str(model_path)).base_model_name_or_path
    base = AutoModelForCausalLM.from_pretrained(base_name, dtype=DTYPES[dtype])
    with _peft_reads_old_checkpointing_name():
        model = peft.PeftModel.from_pretrained(base, str(model_path)).merge_and_unload()
    model.to(pick_device(device)).eval().requires_grad_(False)
    return model


def resolve_model(model: str) -> Path:
    """A model folder for `model`: a LoRA checkpoint's `policy/` adapter folder, or `toolrl.models.resolve`."""
    from toolrl import models

    p = Path(model).expanduser()
    if (p / "policy" / "adapter_config.json").exists() and not (p / "policy" / "config.json").exists():
        return p / "policy"
    return Path(models.resolve(model))
