"""Errors that toolrl raises on purpose.

Every error a user can cause says what was wrong, where, and how to fix it.
Each class carries those three parts separately so the CLI can print them
consistently and tests can assert on them.
"""

from __future__ import annotations


class ToolrlError(Exception):
    """Base class: a problem the user can fix.

    Args:
        what: what went wrong, in one sentence.
        where: the file / key / plugin / task it concerns (optional).
        fix: what to do about it (optional).
    """

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.what if not self.where else f"{self.where}: {self.what}"]
        if self.fix:
            parts.append(f"Fix: {self.fix}")
        return "\n".join(parts)


class ConfigError(ToolrlError):
    """The configuration is invalid. `problems` lists every bad key at once."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        lines = [f"{len(problems)} problem(s) in the configuration:"]
        for p in problems:
            lines.append(f"  - {p}")
        ToolrlError.__init__(self, "\n".join(lines))


class ConfigProblem:
    """One bad key: its dotted path, the value given, why it is wrong, how to fix it."""

    def __init__(self, key: str, value: object, reason: str, fix: str, source: str | None = None):
        self.key = key
        self.value = value
        self.reason = reason
        self.fix = fix
        self.source = source

    def __str__(self) -> str:
        src = f" (from {self.source})" if self.source else ""
        return f"{self.key} = {self.value!r}{src}: {self.reason}. Fix: {self.fix}"

    def __repr__(self) -> str:
        return f"ConfigProblem({self})"


class PluginError(ToolrlError):
    """A plugin misbehaved: duplicate names, bad registration, failing import."""


class UnknownNameError(ToolrlError, KeyError):
    """A name (backend, reward, environment, parser …) that no plugin registered."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self._render()


class MissingExtraError(ToolrlError, ImportError):
    """An optional dependency is not installed; says which extra brings it."""

    def __init__(self, module: str, extra: str, purpose: str):
        self.module = module
        self.extra = extra
        ToolrlError.__init__(
            self,
            f"{purpose} needs the Python package '{module}', which is not installed",
            fix=f"pip install 'toolrl[{extra}]'",
        )


class ModelNotAvailableError(ToolrlError):
    """A model name or path cannot be resolved to local weights."""


class TaskFormatError(ToolrlError):
    """A task (JSONL row) does not follow the documented schema."""


class RewardError(ToolrlError):
    """A reward plugin returned something that is not a finite float or None, or raised."""


class NotAvailableYetError(ToolrlError):
    """A CLI command whose implementation is not part of this version."""


def require(module: str, extra: str, purpose: str):
    """Import an optional module or raise MissingExtraError naming the extra.

    >>> require("json", "dev", "testing")  # doctest: +ELLIPSIS
    <module 'json' ...>
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if getattr(exc, "name", None) not in (None, top, module):
            raise  # the module exists but one of *its* imports failed: show the real cause
        raise MissingExtraError(module, extra, purpose) from exc
