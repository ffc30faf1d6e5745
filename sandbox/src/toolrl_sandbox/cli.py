"""Command line: ``toolrl-sandbox build | run FILE | bench | gc``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from . import __version__


def _cmd_build(args: argparse.Namespace) -> int:
    from .engine import connect
    from .image import build_image

    report = build_image(connect(), image=args.image, method=args.method, force=args.force, base=args.base)
    print(report.describe())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .pool import SandboxPool

    if args.file == "-":
        code = sys.stdin.read()
        stdin = None
    else:
        with open(args.file, encoding="utf-8") as fh:
            code = fh.read()
        stdin = sys.stdin.read() if args.stdin else None

    async def go() -> int:
        async with SandboxPool(size=1, mode="fresh" if args.fresh else "reuse", image=args.image) as pool:
            result = await pool.run(code, stdin=stdin, timeout=args.timeout, memory_mb=args.memory_mb)
        if args.json:
            print(json.dumps(result.__dict__, indent=2))
        else:
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            print(f"[toolrl-sandbox] status={result.status} exit_code={result.exit_code} "
                  f"wall_ms={result.wall_ms:.1f}", file=sys.stderr)
        return 0 if result.status == "ok" else 1

    return asyncio.run(go())


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import quick, render

    rows = asyncio.run(quick(image=args.image, n=args.n, fresh_n=args.fresh_n))
    print(render(rows, "toolrl-sandbox quick benchmark (trivial snippet)"))
    return 0


def _cmd_gc(args: argparse.Namespace) -> int:
    from .gc import collect

    print(collect(all_containers=args.all, pool_id=args.pool).describe())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toolrl-sandbox", description="Hardened Docker execution pool.")
    parser.add_argument("--version", action="version", version=f"toolrl-sandbox {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="build the sandbox image (cached: no-op when current)")
    p.add_argument("--method", choices=["auto", "dockerfile", "offline"], default="auto",
                   help="auto: Dockerfile when the base image is local or pullable, else offline debootstrap")
    p.add_argument("--base", default=None, help="base image of the Dockerfile path (default python:3.12-slim)")
    p.add_argument("--image", default=None, help="tag to build (default toolrl-sandbox:<version>)")
    p.add_argument("--force", action="store_true", help="rebuild even if the image is current")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("run", help="run a Python file in a sandbox and print its output")
    p.add_argument("file", help="Python file, or - to read the code from stdin")
    p.add_argument("--timeout", type=float, default=5.0, help="wall-clock seconds (default 5)")
    p.add_argument("--memory-mb", type=int, default=256, help="address-space limit (default 256)")
    p.add_argument("--stdin", action="store_true", help="pass this process's stdin to the snippet")
    p.add_argument("--fresh", action="store_true", help="use a never-used container")
    p.add_argument("--json", action="store_true", help="print the ExecResult as JSON")
    p.add_argument("--image", default=None)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("bench", help="quick latency/throughput benchmark of the pool")
    p.add_argument("-n", type=int, default=200, help="snippets per reuse measurement")
    p.add_argument("--fresh-n", type=int, default=24, help="snippets per fresh measurement")
    p.add_argument("--image", default=None)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("gc", help="remove sandbox containers whose owning process is gone")
    p.add_argument("--all", action="store_true", help="remove every sandbox container, owned or not")
    p.add_argument("--pool", default=None, metavar="POOL_ID",
                   help="only this pool's containers (its id is the toolrl-sandbox.pool label)")
    p.set_defaults(func=_cmd_gc)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from .errors import SandboxError

    try:
        return int(args.func(args))
    except (SandboxError, OSError) as exc:
        print(f"toolrl-sandbox: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
