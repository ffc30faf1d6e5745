"""`python -m toolrl.evaluation compare A.json B.json [...]`: a before/after table of `toolrl eval --out` files."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "compare" or len(args) < 2:
        print("usage: python -m toolrl.evaluation compare RESULTS.json [RESULTS.json ...]", file=sys.stderr)
        return 2
    from toolrl.errors import ToolrlError
    from toolrl.evaluation.cli import compare_command

    try:
        compare_command(args[1:])
    except ToolrlError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
