"""toolrl-env-code: a sandboxed `python` tool for toolrl agents, with the `arith-tool` and `code` task suites.

See README.md.
"""

__version__ = "0.1.0"
