"""The `toolrl` command line.

Each subcommand parses its options here and hands over to the module that
owns the feature, imported only when the command runs (so `toolrl plugins`
does not load torch). Errors a user can fix print as one clear message and
exit with status 2; anything else keeps its traceback.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from typing import Any

import click

from toolrl import __version__
from toolrl.errors import NotAvailableYetError, ToolrlError


def _feature(module: str, func: str, command: str):
    """Import `module.func`, or say that `command` is not available in this version."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module or module.startswith(exc.name + ".")):
            raise NotAvailableYetError(
                f"`toolrl {command}` is not available yet in toolrl {__version__}",
                fix="see the open issues / roadmap in docs/",
            ) from None
        raise
    return getattr(mod, func)


class _Toolrl(click.Group):
    """The `toolrl` group; `serve` is the toolrl-serving distribution's own command, loaded when asked for.

    One definition of the server options (toolrl_serving.cli.serve) serves both
    `toolrl serve` and `toolrl-serve`; importing it only on demand keeps the
    other commands from loading the serving package.
    """

    LAZY = {"serve": ("toolrl_serving.cli", "serve")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.LAZY:
            return super().get_command(ctx, cmd_name)
        module, attr = self.LAZY[cmd_name]
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if missing not in ("toolrl_serving", "fastapi", "uvicorn", "pydantic"):
                raise

        @click.command(cmd_name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                       add_help_option=False)
        def unavailable() -> None:
            """Serve a checkpoint behind an OpenAI-compatible API (needs the toolrl-serving distribution)."""
            raise ToolrlError(f"`toolrl {cmd_name}` needs the toolrl-serving distribution ({missing} is missing)",
                              fix="pip install -e ./serving  (or: pip install 'toolrl[serve]' toolrl-serving)")

        return unavailable


@click.group(cls=_Toolrl, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="toolrl")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Train tool-using language-model agents with RL, evaluate and serve them."""
    level = logging.WARNING - 10 * min(verbose, 2)
    from rich.console import Console
    from rich.logging import RichHandler

    handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False)
    handler.setLevel(level)  # the console shows what -v asks for; a run's train.log also gets toolrl's INFO
    logging.basicConfig(level=min(level, logging.INFO), format="%(message)s", handlers=[handler])


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def train(config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Train a policy: toolrl train --config run.yaml [key.sub=value ...]."""
    from toolrl.config import load_config

    cfg = load_config(config_path, overrides)  # fails fast, before anything heavy loads
    _feature("toolrl.trainer.api", "train", "train")(cfg)  # RL, or SFT / DPO (algorithm.objective)


@cli.command(name="eval", context_settings={"ignore_unknown_options": True})
@click.option("--model", "model", required=True, help="Checkpoint directory or model name.")
@click.option("--tasks", "tasks", required=True, type=click.Path(dir_okay=False), help="JSONL task file.")
@click.option("--n", "n", default=1, show_default=True, help="Samples per task (pass@k uses these).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Config for rollout/reward settings (default for a checkpoint: the config it was trained with).")
@click.option("--out", "out", type=click.Path(), default=None, help="Write results (JSON) here.")
@click.option("--label", "label", default=None, help="Name for this model in the results table.")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def eval_(model: str, tasks: str, n: int, config_path: str | None, out: str | None, label: str | None,
          overrides: tuple[str, ...]) -> None:
    """Evaluate a model on a task file: accuracy, pass@k, mean reward, diversity.

    A toolrl checkpoint is evaluated with the config it was trained with (its prompt settings, tool parser,
    limits, sampling and rewards) unless --config or key=value overrides say otherwise; a setting that then
    differs from training is a warning naming the field.
    """
    from toolrl.checkpoint_config import announce, resolve_config

    resolved = resolve_config(model, config_path, overrides)
    announce(resolved, "toolrl eval")
    _feature("toolrl.evaluation.cli", "eval_command", "eval")(resolved.config, model=model, tasks=tasks, n=n, out=out,
                                                                label=label)


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
def compare(results: tuple[str, ...]) -> None:
    """Before/after table of `toolrl eval --out` result files (e.g. base vs trained)."""
    _feature("toolrl.evaluation.cli", "compare_command", "compare")(list(results))


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Include built-in plugins.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(show_all: bool, as_json: bool) -> None:
    """List installed plugins: distribution, version, hooks and what each registered."""
    from toolrl import plugins as plugins_mod

    infos = plugins_mod.get_manager().plugin_infos(include_builtins=show_all)
    if as_json:
        rows = [
            {"name": i.name, "distribution": i.distribution, "version": i.version, "builtin": i.builtin,
             "hooks": i.hooks, "registered": i.registered, "error": i.error}
            for i in infos
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="toolrl plugins" + (" (including built-ins)" if show_all else ""))
    for col in ("plugin", "distribution", "version", "hooks", "registered", "status"):
        table.add_column(col, overflow="fold")
    for i in infos:
        reg = "\n".join(f"{k}: {', '.join(v)}" for k, v in i.registered.items())
        status = f"[red]BROKEN: {i.error}[/]" if i.error else "[green]ok[/]"
        table.add_row(i.name, i.distribution or "-", i.version or "-", "\n".join(i.hooks), reg, status)
    Console().print(table)
    if not infos:
        click.echo("No third-party plugins installed. `toolrl plugins --all` lists the built-ins.")


@cli.group()
def config() -> None:
    """Show the resolved configuration or the generated reference."""


@config.command("show", context_settings={"ignore_unknown_options": True})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def config_show(config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Print the config after defaults and overrides are applied."""
    from toolrl.config import dump_yaml, load_config

    click.echo(dump_yaml(load_config(config_path, overrides)), nl=False)


@config.command("reference")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write Markdown here (default: stdout).")
def config_reference(out: str | None) -> None:
    """Generate the config reference (docs/config.md) from the config types."""
    from toolrl.config_reference import render_reference

    text = render_reference()
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        click.echo(text, nl=False)


@cli.command()
@click.option("--model", "model", default=None, help="Also check this model's chat template and tool parsers.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--ray-address", "ray_address", default=None,
              help="Also join this Ray cluster (auto, host:6379) and list its nodes and resources.")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="Take the Ray cluster to show from this run config (ray.address, ray.auth, ray.auth_token_file).")
def doctor(model: str | None, as_json: bool, ray_address: str | None, config_path: str | None) -> None:
    """Report versions and which engines, GPUs, Docker and model packages are usable (and a Ray cluster's nodes)."""
    from toolrl.doctor import print_report, run_checks

    ray_cfg = None
    if config_path or ray_address:
        from toolrl.config import load_config

        overrides = [f"ray.address={ray_address}"] if ray_address else []
        ray_cfg = load_config(config_path, overrides).ray
    report = run_checks(model=model, ray=ray_cfg)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)


@cli.group()
def data() -> None:
    """Make task files, SFT conversations and DPO pairs."""


@data.command("make", context_settings={"ignore_unknown_options": True})
@click.argument("suite")
@click.option("--n", "n", default=100, show_default=True, help="Number of tasks.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output JSONL file.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def data_make(suite: str, n: int, seed: int, out: str, args: tuple[str, ...]) -> None:
    """Write N tasks of a registered suite (arith-tool, memory, bfcl, code, ...) to a JSONL file."""
    _feature("toolrl.data", "make_command", "data make")(suite, n=n, seed=seed, out=out, args=args)


@data.command("sft", context_settings={"ignore_unknown_options": True})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config: rollout, envs and rewards.")
@click.option("--model", required=True, help="Model name, HF folder or a run's checkpoint.")
@click.option("--tasks", required=True, type=click.Path(dir_okay=False), help="JSONL task file (toolrl data make).")
@click.option("--n", "n", default=4, show_default=True, help="Samples per task.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output JSONL conversations.")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def data_sft(config_path: str | None, model: str, tasks: str, n: int, out: str, overrides: tuple[str, ...]) -> None:
    """SFT conversations by rejection sampling: the best correct of N samples per task (docs/algorithms.md)."""
    from toolrl.config import load_config

    cfg = load_config(config_path, overrides)
    _feature("toolrl.trainer.offline_data", "sft_command", "data sft")(cfg, model=model, tasks=tasks, n=n, out=out)


@data.command("dpo", context_settings={"ignore_unknown_options": True})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config: rollout, envs and rewards.")
@click.option("--model", required=True, help="Model name, HF folder or a run's checkpoint.")
@click.option("--tasks", required=True, type=click.Path(dir_okay=False), help="JSONL task file (toolrl data make).")
@click.option("--n", "n", default=4, show_default=True, help="Samples per task (a GRPO group).")
@click.option("--min-margin", default=1e-6, show_default=True, help="Least reward gap between chosen and rejected.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output JSONL preference pairs.")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def data_dpo(config_path: str | None, model: str, tasks: str, n: int, min_margin: float, out: str,
             overrides: tuple[str, ...]) -> None:
    """DPO pairs: the best and the worst of N samples per task, when their rewards differ (docs/algorithms.md)."""
    from toolrl.config import load_config

    cfg = load_config(config_path, overrides)
    _feature("toolrl.trainer.offline_data", "dpo_command", "data dpo")(cfg, model=model, tasks=tasks, n=n, out=out,
                                                                       min_margin=min_margin)


@data.command("convert")
@click.argument("path", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output JSONL task file.")
@click.option("--format", "fmt", default=None, help="parquet, json, csv, arrow or text (default: from the extension).")
@click.option("--split", default="train", show_default=True, help="Split to read.")
@click.option("--question", default="question", show_default=True, help="Column with the question.")
@click.option("--answer", default="answer", show_default=True, help="Column with the reference answer ('' for none).")
@click.option("--answer-regex", default=None, help="Take the answer from this regex's first group, e.g. '####\\s*(.+)$'.")
@click.option("--system", default=None, help="System prompt for every task.")
@click.option("--system-field", default=None, help="Column with each row's system prompt.")
@click.option("--tools", "tools_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="JSON file with a list of tool schemas for every task.")
@click.option("--tools-field", default=None, help="Column with each row's tools (a list or a JSON string).")
@click.option("--env", default=None, help="Environment that runs the tools, e.g. python.")
@click.option("--id-field", default=None, help="Column with unique ids (default: <file stem>-<row>).")
@click.option("--metadata", "metadata_fields", multiple=True, help="Column copied into metadata (repeatable).")
@click.option("--prompt-template", default="{question}", show_default=True, help="User message; {question} is replaced.")
@click.option("--limit", type=int, default=None, help="Convert only the first N rows.")
def data_convert(path: str, out: str, fmt: str | None, split: str, limit: int | None, tools_file: str | None,
                 answer: str, **mapping: Any) -> None:
    """Turn a parquet/JSON/CSV/arrow file into tasks with a field mapping (question, answer, system, tools)."""
    _feature("toolrl.data_convert", "convert_command", "data convert")(
        path, out=out, fmt=fmt, split=split, limit=limit, tools_file=tools_file, answer=answer or None, **mapping)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--out", default=None, help="Folder for the PNGs (default: RUN_DIR/plots).")
def plot(run_dir: str, out: str | None) -> None:
    """Plot a run's curves (reward, KL, length, accuracy) as PNG files."""
    _feature("toolrl.metrics.plot", "plot_command", "plot")(run_dir, out=out)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--step", type=int, default=None, help="Logged step to show (default: the latest).")
@click.option("--worst", is_flag=True, help="Lowest rewards first.")
@click.option("--best", is_flag=True, help="Highest rewards first.")
@click.option("--n", "n", type=int, default=5, show_default=True, help="Samples to show.")
@click.option("--task", default=None, help="Only this task id.")
@click.option("--full", is_flag=True, help="Do not shorten long messages.")
@click.option("--show-prompt", is_flag=True, help="Also show the system prompt and earlier prompt messages.")
def inspect(run_dir: str, step: int | None, worst: bool, best: bool, n: int, task: str | None, full: bool,
            show_prompt: bool) -> None:
    """Show a step's samples: conversation, tool calls and results, reward components, advantage."""
    _feature("toolrl.metrics.inspect_samples", "inspect_command", "inspect")(
        run_dir, step=step, worst=worst, best=best, n=n, task=task, full=full, show_prompt=show_prompt)


def main(argv: list[str] | None = None) -> Any:
    try:
        return cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ToolrlError as exc:
        from rich.console import Console
        from rich.text import Text

        Console(stderr=True).print(Text("Error: ", style="bold red") + Text(str(exc)), highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
