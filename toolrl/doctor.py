"""`toolrl doctor`: what is installed and usable on this machine.

Every check is cheap and never raises: a failing check is reported with the
reason. With `--model`, the model's chat template and tool parsers are checked
too (append-only rendering, parser round trip), through `toolrl.chat.template_check`.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import platform
import shutil
import subprocess
import sys
from typing import Any


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _check_docker() -> dict[str, Any]:
    if shutil.which("docker") is None:
        return {"ok": False, "detail": "docker CLI not found (make setup installs docker.io)"}
    try:
        r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                           timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "detail": f"docker info failed: {exc}"}
    if r.returncode != 0:
        return {"ok": False, "detail": "no Docker engine answers (run `bash scripts/ensure_docker.sh`): "
                + (r.stderr.strip().splitlines() or ["?"])[-1]}
    out: dict[str, Any] = {"ok": True, "detail": f"engine {r.stdout.strip()}"}
    try:
        from toolrl_sandbox import image as sb_image  # type: ignore[import-not-found]

        tag = sb_image.image_tag()
        r2 = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, text=True, timeout=10)
        out["sandbox_image"] = tag if r2.returncode == 0 else f"{tag} missing (run `toolrl-sandbox build`)"
    except Exception as exc:  # sandbox distribution absent or older
        out["sandbox_image"] = f"unknown ({type(exc).__name__})"
    return out


def _check_gpu() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"ok": False, "detail": "torch not installed"}
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return {"ok": True, "detail": ", ".join(names)}
    return {"ok": False, "detail": "no CUDA device (CPU only)"}


def _check_compile() -> dict[str, Any]:
    """What `trainer.compile_layers` needs: Triton on CUDA, a C++ compiler on the CPU (Inductor's code)."""
    import shutil

    triton = _version("triton") if importlib.util.find_spec("triton") is not None else None
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    parts = [f"triton {triton}" if triton else "no triton (compile_layers on CUDA needs it)",
             f"C++ compiler {cxx}" if cxx else "no C++ compiler (compile_layers on the CPU needs one)"]
    return {"ok": bool(triton or cxx), "detail": "; ".join(parts)}


def _importable(module: str, dist: str, extra: str) -> dict[str, Any]:
    if importlib.util.find_spec(module) is None:
        return {"ok": False, "detail": f"not installed (pip install 'toolrl[{extra}]')"}
    return {"ok": True, "detail": _version(dist) or "installed"}


def check_ray_cluster(ray_cfg: Any) -> dict[str, Any]:
    """Join the cluster of `ray_cfg` (a `RayConfig`: address, auth) and list its live nodes and resources."""
    if not getattr(ray_cfg, "address", None):
        return {"ok": False, "detail": "no Ray address given (--ray-address ADDRESS, or ray.address in --config)"}
    if importlib.util.find_spec("ray") is None:
        return {"ok": False, "detail": "ray not installed (pip install 'toolrl[ray]')"}
    from types import SimpleNamespace

    import ray

    from toolrl.errors import ToolrlError
    from toolrl.trainer.cluster import auth_mode, cluster_nodes, start_ray, stop_ray

    if ray.is_initialized():
        return {"ok": False, "detail": "Ray is already initialised in this process; run `toolrl doctor` on its own"}
    try:
        start_ray(SimpleNamespace(ray=ray_cfg))
    except ToolrlError as exc:
        return {"ok": False, "detail": f"{exc}"}
    try:
        nodes = cluster_nodes()
        return {"ok": bool(nodes), "address": ray_cfg.address, "auth": auth_mode(), "nodes": nodes,
                "detail": f"{len(nodes)} live node(s), token auth {auth_mode()}"}
    except Exception as exc:  # noqa: BLE001 - doctor reports, never raises
        return {"ok": False, "detail": f"listing the nodes failed: {type(exc).__name__}: {exc}"}
    finally:
        stop_ray(False)  # disconnects; the cluster keeps running


def _fmt_resources(total: dict[str, float], free: dict[str, float]) -> str:
    parts = []
    for name in sorted(total):
        if name in ("memory", "object_store_memory"):
            continue
        have = total[name]
        parts.append(f"{name} {free.get(name, have):g}/{have:g} free" if free else f"{name} {have:g}")
    gib = total.get("memory", 0) / 2**30
    return ", ".join(parts + ([f"memory {gib:.1f} GiB"] if gib else []))


def run_checks(model: str | None = None, ray: Any = None) -> dict[str, Any]:
    """The checks; `ray` (a `RayConfig` with an address) adds the cluster's nodes and resources."""
    from toolrl import __version__, models

    report: dict[str, Any] = {
        "toolrl": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "engines": {
            "ray": _importable("ray", "ray", "ray"),
            "vllm": _importable("vllm", "vllm", "vllm"),
            "sglang": _importable("sglang", "sglang", "sglang"),
            "peft (LoRA)": _importable("peft", "peft", "lora"),
            "fastapi (serving)": _importable("fastapi", "fastapi", "serve"),
        },
        "gpu": _check_gpu(),
        "compile": _check_compile(),
        "docker": _check_docker(),
        "models": {},
    }
    for name, ok in models.installed_models().items():
        spec = models.MODELS.get(name)
        install = spec.pip_short if spec else models.EMBEDDING_MODELS[name][2]
        report["models"][name] = {"installed": ok, "install": None if ok else install}
    if ray is not None:
        report["ray_cluster"] = check_ray_cluster(ray)
    if model is not None:
        try:
            from toolrl.chat.template_check import check_model_template

            report["template"] = check_model_template(model)
        except ModuleNotFoundError as exc:
            report["template"] = {"ok": False, "detail": f"template checks unavailable ({exc.name} missing)"}
        except Exception as exc:
            report["template"] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
    return report


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title=f"toolrl doctor (toolrl {report['toolrl']})", show_lines=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")

    def mark(ok: bool) -> str:
        return "[green]ok[/]" if ok else "[yellow]no[/]"

    add_row = table.add_row
    table.add_row = lambda a, b, c: add_row(escape(str(a)), b, escape(str(c)))  # type: ignore[method-assign]

    table.add_row("python", "[green]ok[/]", report["python"])
    table.add_row("torch", mark(bool(report["torch"])), str(report["torch"]))
    table.add_row("transformers", mark(bool(report["transformers"])), str(report["transformers"]))
    for name, res in report["engines"].items():
        table.add_row(name, mark(res["ok"]), res["detail"])
    table.add_row("gpu", mark(report["gpu"]["ok"]), report["gpu"]["detail"])
    if "compile" in report:
        table.add_row("torch.compile (trainer.compile_layers)", mark(report["compile"]["ok"]), report["compile"]["detail"])
    d = report["docker"]
    table.add_row("docker", mark(d["ok"]), d["detail"] + (f"; image {d['sandbox_image']}" if "sandbox_image" in d else ""))
    for name, m in report["models"].items():
        table.add_row(f"model {name}", mark(m["installed"]), "installed" if m["installed"] else m["install"])
    if "ray_cluster" in report:
        rc = report["ray_cluster"]
        table.add_row("ray cluster", mark(rc["ok"]), (f"{rc['address']}: " if "address" in rc else "") + rc["detail"])
        for n in rc.get("nodes", []):
            table.add_row(f"ray node {n['node_id'][:12]}" + (" (head)" if n["head"] else ""), "[green]ok[/]",
                          f"{n['address']}: " + _fmt_resources(n["resources"], n["available"]))
    if "template" in report:
        t = report["template"]
        table.add_row("chat template", mark(t.get("ok", False)), t.get("detail", ""))
    console.print(table)
