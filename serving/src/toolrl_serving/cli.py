"""Start a server: `toolrl serve CKPT_OR_NAME` (toolrl's CLI) or `toolrl-serve` / `python -m toolrl_serving`."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import click
from pydantic import ValidationError

from toolrl.errors import ToolrlError

from toolrl_serving.settings import Limits, ServerSettings, api_keys_from_env

logger = logging.getLogger(__name__)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_settings(*, model: str, backend: str = "hf", api_key_env: str | None = None, tool_parser: str = "auto",
                   max_batch_size: int = 32, dtype: str = "float32", **options: Any) -> ServerSettings:
    """ServerSettings from CLI options; `options` may hold any ServerSettings or Limits field."""
    limit_fields = set(Limits.model_fields)
    limits = {k: options.pop(k) for k in list(options) if k in limit_fields and options[k] is not None}
    threads = options.pop("num_threads", None)
    if threads is not None:
        options["backend_args"] = {**(options.get("backend_args") or {}), "num_threads": threads}
    rest = {k: v for k, v in options.items() if v is not None}
    try:
        return ServerSettings(model=model, backend=backend, tool_parser=tool_parser, max_batch_size=max_batch_size,
                              dtype=dtype, api_keys=api_keys_from_env(api_key_env), limits=Limits(**limits), **rest)
    except ValidationError as exc:
        problems = "; ".join(f"--{str(e['loc'][-1]).replace('_', '-')} {e['msg'].lower()} (got {e.get('input')!r})"
                             for e in exc.errors())
        raise ToolrlError(f"invalid server option: {problems}", fix="see `toolrl serve --help`") from None


def checkpoint_defaults(model: str, tool_parser: str | None, dtype: str | None,
                        options: dict[str, Any]) -> tuple[str, str, list[str]]:
    """Tool parser, dtype and default max_tokens from a checkpoint's training config, and what to tell the user.

    Explicit options win; one that differs from training is a warning naming the field. A model that is not a
    toolrl checkpoint gets the plain defaults ('auto', 'float32').
    """
    from toolrl.checkpoint_config import training_config

    found = training_config(model)
    if found is None:
        return tool_parser or "auto", dtype or "float32", []
    cfg, state_file = found
    trained = {"rollout.tool_parser": (cfg.get("rollout") or {}).get("tool_parser", "auto"),
               "model.dtype": (cfg.get("model") or {}).get("dtype", "float32")}
    notes, used = [], []
    for key, flag, given in (("rollout.tool_parser", "--tool-parser", tool_parser), ("model.dtype", "--dtype", dtype)):
        if given is not None and given != trained[key]:
            notes.append(f"warning: {flag} {given!r} differs from the checkpoint's training value {key}="
                         f"{trained[key]!r}; using {given!r}")
        elif given is None:
            used.append(f"{key}={trained[key]!r}")
    max_new = (cfg.get("rollout") or {}).get("max_new_tokens")
    if options.get("default_max_tokens") is None and isinstance(max_new, int):
        cap = options.get("max_tokens") or 1024
        options["default_max_tokens"] = min(max_new, cap)
        used.append(f"default max_tokens={options['default_max_tokens']} (rollout.max_new_tokens)")
    notes.insert(0, f"toolrl serve: using the training config of the checkpoint ({state_file}): {', '.join(used)}")
    return tool_parser or trained["rollout.tool_parser"], dtype or trained["model.dtype"], notes


def run_server(*, model: str, host: str = "127.0.0.1", port: int = 8000, backend: str = "hf",
               api_key_env: str | None = None, tool_parser: str | None = None, max_batch_size: int = 32,
               dtype: str | None = None, log_level: str = "info", **options: Any) -> None:
    """Serve `model` with uvicorn until interrupted. Binds to loopback unless `host` says otherwise.

    A toolrl checkpoint is served with its training tool parser, dtype and turn length unless the options
    say otherwise (see `checkpoint_defaults`).
    """
    import uvicorn

    from toolrl_serving.app import create_app
    from toolrl_serving.loading import preflight

    tool_parser, dtype, notes = checkpoint_defaults(model, tool_parser, dtype, options)
    for note in notes:
        (logger.warning if note.startswith("warning") else logger.info)("%s", note)
        click.echo(note, err=True)
    settings = build_settings(model=model, backend=backend, api_key_env=api_key_env, tool_parser=tool_parser,
                              max_batch_size=max_batch_size, dtype=dtype, **options)
    preflight(settings)  # a typo in the model, --backend or --tool-parser fails before uvicorn starts
    if not _is_loopback(host) and not settings.api_keys:
        logger.warning("binding to %s without an API key: anyone who can reach this port can use the model "
                       "(set --api-key-env)", host)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


@click.command(name="serve", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default).")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--backend", default="hf", show_default=True, help="Rollout backend that generates: hf, vllm, sglang.")
@click.option("--api-key-env", default=None, help="Environment variable holding the API key(s), comma-separated.")
@click.option("--tool-parser", default=None,
              help="Tool-call parser (default: the checkpoint's training rollout.tool_parser, else auto).")
@click.option("--max-batch-size", default=32, show_default=True, type=int)
@click.option("--max-queue", default=256, show_default=True, type=int, help="Waiting requests before 503.")
@click.option("--dtype", default=None, help="Weights dtype (default: the checkpoint's model.dtype, else float32).")
@click.option("--device", default="auto", show_default=True)
@click.option("--num-threads", default=None, type=int,
              help="torch CPU threads for the hf backend (1 is faster on a busy machine).")
@click.option("--served-model-name", default=None, help="Model id clients send (default: MODEL as given).")
@click.option("--max-tokens", "max_tokens", default=None, type=int, help="Largest max_tokens a request may ask.")
@click.option("--max-prompt-tokens", default=None, type=int, help="Longest prompt in tokens.")
@click.option("--max-n", default=None, type=int, help="Largest n.")
@click.option("--max-body-bytes", default=None, type=int, help="Largest request body.")
@click.option("--log-level", default="info", show_default=True)
def serve(model: str, **kw: Any) -> None:
    """Serve MODEL (checkpoint, HF folder or offline model name) behind an OpenAI-compatible API.

    This one command is both `toolrl serve` and `toolrl-serve` (the toolrl CLI
    loads it from here), so the two cannot drift apart.
    """
    logging.basicConfig(level=kw["log_level"].upper(), format="%(levelname)s %(name)s: %(message)s")
    run_server(model=model, **kw)


def main(argv: list[str] | None = None, prog_name: str = "toolrl-serve") -> None:
    """`toolrl-serve` / `python -m toolrl_serving`: a mistake the user can fix prints one message and exits 2."""
    import sys

    try:
        serve.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ToolrlError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
