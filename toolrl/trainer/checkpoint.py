"""Checkpoint directories: atomic writes, discovery for `trainer.resume`, pruning.

Layout of `<output_dir>/checkpoints/step_000010/`:

    policy/              the policy as a normal HF folder (model + tokenizer + chat
                         template); with LoRA, the PEFT adapter folder
    merged/              LoRA with model.lora.save_merged: base + adapters, plain HF folder
    optimizer.pt         policy optimizer state
    scheduler.pt         LR scheduler state
    critic/              PPO: critic backbone, value_head.safetensors, optimizer.pt, scheduler.pt
    trainer_state.json   step, weight version, data order, KL coefficient, seed, config
    rng.pt               the driver's Python / NumPy / torch RNG states
    COMPLETE             written last

Every file of that list is written and read by a function of this module
(`save_policy_files`/`load_policy_files` in trainer rank 0, `save_critic_files`/
`load_critic_files` in critic rank 0, `write_run_state`/`read_state` on the
driver). With a data-parallel group the weights and optimizer state are
identical on every rank (gradients are summed before each step), so rank 0
writes them and every rank reads them on resume: the checkpoint does not depend
on the number of ranks.

A checkpoint is written into a hidden temporary folder next to the final one
and renamed into place when complete (a rename is atomic on one filesystem), so
a run killed mid-save leaves the previous checkpoint intact and no half
folder that looks finished. `checkpoints/latest` is a symlink to the newest
one, swapped atomically as well.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from toolrl.errors import ToolrlError

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest"
COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.json"
RNG_FILE = "rng.pt"
POLICY_DIR = "policy"
CRITIC_DIR = "critic"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"


def step_name(step: int) -> str:
    return f"step_{step:06d}"


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoints_dir(run_dir)
    out = []
    if root.is_dir():
        for d in root.iterdir():
            if d.is_symlink() or not d.is_dir() or not d.name.startswith("step_"):
                continue
            if not (d / COMPLETE).exists():
                continue
            try:
                out.append((int(d.name.split("_", 1)[1]), d))
            except ValueError:
                continue
    return sorted(out)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def resolve_resume(resume: str, run_dir: str | Path) -> Path | None:
    """The checkpoint `trainer.resume` points at: None for 'none' (or 'auto' with none saved yet)."""
    if resume in ("none", "", None):
        return None
    if resume == "auto":
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            logger.info("trainer.resume=auto: no checkpoint in %s yet, starting from step 1", checkpoints_dir(run_dir))
        return ckpt
    p = Path(resume).expanduser()
    if p.is_dir() and not (p / COMPLETE).exists() and (p / CHECKPOINTS).is_dir():
        p = latest_checkpoint(p) or p  # a run directory: its latest checkpoint
    if not p.is_dir() or not (p / COMPLETE).exists() or not (p / STATE_FILE).exists():
        raise ToolrlError(
            f"trainer.resume={resume!r} is not a complete toolrl checkpoint (no {COMPLETE} / {STATE_FILE})",
            where="trainer.resume",
            fix="pass a folder like runs/NAME/checkpoints/step_000010, a run directory, 'auto' or 'none'",
        )
    return p.resolve()


def read_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))


def clean_partial(run_dir: str | Path) -> None:
    """Remove temporary folders left by a run killed while saving."""
    root = checkpoints_dir(run_dir)
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith(".tmp-") and d.is_dir():
                logger.info("removing unfinished checkpoint %s (the run was stopped while saving)", d.name)
                shutil.rmtree(d, ignore_errors=True)


@contextmanager
def atomic_checkpoint(run_dir: str | Path, step: int, keep: int = 0) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success rename it to `step_NNNNNN` and point `latest` at it."""
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{step_name(step)}-", dir=root))
    try:
        yield tmp
        (tmp / COMPLETE).write_text(f"{step}\n")
        _fsync_tree(tmp)
        if final.exists():  # re-saving the same step (e.g. after a resume): replace it
            old = root / f".tmp-old-{final.name}-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _point_latest(root, final.name)
    if keep:
        prune(run_dir, keep)


def _point_latest(root: Path, name: str) -> None:
    link = root / LATEST
    tmp_link = root / f".tmp-link-{os.getpid()}"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    tmp_link.symlink_to(name)
    os.replace(tmp_link, link)


def _fsync_tree(d: Path) -> None:
    for p in d.rglob("*"):
        if p.is_file():
            try:
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass


def prune(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints."""
    found = list_checkpoints(run_dir)
    for _, d in found[:-keep] if keep else []:
        shutil.rmtree(d, ignore_errors=True)


def capture_rng() -> dict[str, Any]:
    import numpy as np
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def restore_rng(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


# -- contents --------------------------------------------------------------------------------------


def save_policy_files(out: Path, model: Any, tokenizer: Any, optimizer: Any, scheduler: Any, *,
                      base_path: str | Path, save_merged: bool, state_dict: dict[str, Any] | None = None) -> None:
    """policy/ (HF folder or LoRA adapters, merged/ if asked), optimizer.pt, scheduler.pt.

    `state_dict`: the full weights when the model itself is sharded (FSDP2; its optimizer state is saved per
    rank by the caller instead of optimizer.pt).
    """
    import torch

    from toolrl.trainer.modeling import save_policy

    save_policy(model, tokenizer, out, base_path=base_path, save_merged=save_merged, state_dict=state_dict)
    if state_dict is None:
        torch.save(optimizer.state_dict(), out / OPTIMIZER_FILE)
    torch.save(scheduler.state_dict(), out / SCHEDULER_FILE)


def load_policy_files(src: Path, model: Any, optimizer: Any, scheduler: Any) -> None:
    import torch

    from toolrl.trainer.modeling import load_policy_weights

    load_policy_weights(model, src / POLICY_DIR)
    optimizer.load_state_dict(torch.load(src / OPTIMIZER_FILE, weights_only=False))
    scheduler.load_state_dict(torch.load(src / SCHEDULER_FILE, weights_only=False))


def save_critic_files(ckpt: Path, critic: Any, optimizer: Any, scheduler: Any) -> None:
    """critic/: backbone (HF folder or adapters), value_head.safetensors, optimizer.pt, scheduler.pt."""
    import torch

    from toolrl.trainer.modeling import save_critic

    out = ckpt / CRITIC_DIR
    save_critic(critic, out)
    torch.save(optimizer.state_dict(), out / OPTIMIZER_FILE)
    torch.save(scheduler.state_dict(), out / SCHEDULER_FILE)


def load_critic_files(ckpt: Path, critic: Any, optimizer: Any, scheduler: Any) -> None:
    import torch

    from toolrl.trainer.modeling import load_critic_weights

    src = ckpt / CRITIC_DIR
    if not src.is_dir():
        raise ToolrlError("the checkpoint has no critic/ folder, but this run trains a critic (PPO)",
                          where=str(ckpt), fix="resume with the algorithm.advantage the run was started with")
    load_critic_weights(critic, src)
    optimizer.load_state_dict(torch.load(src / OPTIMIZER_FILE, weights_only=False))
    scheduler.load_state_dict(torch.load(src / SCHEDULER_FILE, weights_only=False))


def write_run_state(tmp: Path, state: dict[str, Any]) -> None:
    """trainer_state.json (the driver's state) and rng.pt (the driver's RNG states)."""
    import torch

    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")
    torch.save(capture_rng(), tmp / RNG_FILE)


def restore_run_rng(ckpt: Path) -> None:
    import torch

    if (ckpt / RNG_FILE).exists():
        restore_rng(torch.load(ckpt / RNG_FILE, weights_only=False))
