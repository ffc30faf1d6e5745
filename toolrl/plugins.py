"""The plugin manager: built-ins and entry-point plugins, and the registries they fill.

Plugins are modules (or objects) with `@toolrl.hookimpl` functions. Built-ins
live in `toolrl.default_plugins` and go through the same hooks as third-party
plugins, which are found through the entry-point group `toolrl`:

    [project.entry-points.toolrl]
    my_rewards = "my_rewards_pkg"

Registration order is load order: built-ins first (in module-name order), then
entry-point plugins, then plugins registered by hand with `register()`. So a
third-party plugin that reuses a built-in name is the second owner named in the
duplicate-name error, and `toolrl plugins` lists what each plugin registered in
the order it did so.

Environment variables:
    TOOLRL_TRACE_PLUGINS=1        log every hook call and what it registered
    TOOLRL_NO_ENTRYPOINTS=1       do not load entry-point plugins (tests set this)
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import logging
import os
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pluggy

from toolrl import hookspecs
from toolrl.errors import PluginError, UnknownNameError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "toolrl"



def default_plugins() -> list[str]:
    """Built-in plugin modules: every module in `toolrl.default_plugins`, in name order."""
    import pkgutil

    import toolrl.default_plugins as pkg

    return [f"{pkg.__name__}.{m.name}" for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name)]

# hook name -> registry kind, and a hint used when a name is missing
KINDS: dict[str, str] = {
    "register_rollout_backends": "rollout_backends",
    "register_environments": "environments",
    "register_rewards": "rewards",
    "register_tool_parsers": "tool_parsers",
    "register_advantage_estimators": "advantage_estimators",
    "register_policy_losses": "policy_losses",
    "register_metric_sinks": "metric_sinks",
    "register_evaluators": "evaluators",
    "register_task_suites": "task_suites",
}


@dataclass(frozen=True)
class Entry:
    """One registered name: the object, and who registered it."""

    name: str
    obj: Any
    plugin: str
    distribution: str | None


@dataclass
class PluginInfo:
    """What `toolrl plugins` shows about one plugin."""

    name: str
    distribution: str | None
    version: str | None
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None


class Registry:
    """Names of one kind (e.g. rewards) mapped to objects, with their owners."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, entry: Entry) -> None:
        if not isinstance(entry.name, str) or not entry.name:
            raise PluginError(
                f"registered a {self.kind} entry with an invalid name {entry.name!r}",
                where=f"plugin {entry.plugin!r}",
                fix="pass a non-empty string as the first argument of register(name, obj)",
            )
        if entry.obj is None or not callable(entry.obj) and not hasattr(entry.obj, "parse"):
            raise PluginError(
                f"registered {self.kind} {entry.name!r} with {entry.obj!r}, which is not callable",
                where=f"plugin {entry.plugin!r}",
                fix="register a function, class or factory",
            )
        old = self._entries.get(entry.name)
        if old is not None:
            raise PluginError(
                f"{self.kind} name {entry.name!r} is registered twice: by plugin {old.plugin!r} "
                f"({old.distribution or 'built-in'}) and by plugin {entry.plugin!r} ({entry.distribution or 'built-in'})",
                fix="uninstall one of the two plugins, or rename the entry in one of them",
            )
        self._entries[entry.name] = entry

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, list(self._entries), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UnknownNameError(
                f"no {self.kind.rstrip('s').replace('_', ' ')} named {name!r} is registered "
                f"(available: {', '.join(sorted(self._entries)) or 'none'})",
                fix=f"{hint}install the plugin that provides it (see `toolrl plugins --all`)",
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


class PluginManager:
    """Loads plugins once and builds the registries on first use."""

    def __init__(self, load_entrypoints: bool | None = None):
        self.pm = pluggy.PluginManager("toolrl")
        self.pm.add_hookspecs(hookspecs)
        if load_entrypoints is None:
            load_entrypoints = os.environ.get("TOOLRL_NO_ENTRYPOINTS", "") in ("", "0")
        self._load_entrypoints = load_entrypoints
        self._infos: dict[str, PluginInfo] = {}
        self._registries: dict[str, Registry] | None = None
        self._lock = threading.RLock()
        self._loaded = False

    # -- loading ---------------------------------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for modname in default_plugins():
            mod = importlib.import_module(modname)
            self.pm.register(mod, name=modname)
            self._reject_unknown_hooks(modname)
            self._infos[modname] = PluginInfo(modname, "toolrl", _version("toolrl"), builtin=True)
        if self._load_entrypoints:
            for ep in md.entry_points(group=ENTRY_POINT_GROUP):
                self._load_entrypoint(ep)

    def _load_entrypoint(self, ep: md.EntryPoint) -> None:
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        info = PluginInfo(ep.name, dist, version, builtin=False)
        self._infos[ep.name] = info
        if self.pm.has_plugin(ep.name):
            info.error = f"PluginError: another plugin is already registered as {ep.name!r}"
            logger.error("plugin %s from %s not loaded: %s", ep.name, dist, info.error)
            return
        try:
            obj = ep.load()
            self.pm.register(obj, name=ep.name)
            self._reject_unknown_hooks(ep.name)
        except Exception as exc:  # a broken plugin must not take the others down
            info.error = f"{type(exc).__name__}: {exc}"
            logger.error("plugin %s from %s failed to load: %s", ep.name, dist, info.error)
            logger.debug("%s", traceback.format_exc())

    def register(self, plugin: object, name: str | None = None, distribution: str | None = None) -> str:
        """Register a plugin object or module by hand (tests, notebooks). Rebuilds registries."""
        with self._lock:
            self._load()
            pname = self.pm.register(plugin, name=name)
            if pname is None:
                raise PluginError(f"plugin {name!r} is blocked or already registered")
            self._reject_unknown_hooks(pname)
            self._infos[pname] = PluginInfo(pname, distribution, _version(distribution) if distribution else None,
                                            builtin=False)
            self._registries = None
            return pname

    def _reject_unknown_hooks(self, pname: str) -> None:
        """A `@hookimpl` whose name is no toolrl hook (a typo such as `register_reward`) would never be
        called; unregister the plugin and raise a PluginError naming the hook and the right spelling."""
        import difflib

        plugin = self.pm.get_plugin(pname)
        unknown = sorted({hc.name for hc in (self.pm.get_hookcallers(plugin) or []) if not hc.has_spec()})
        if not unknown:
            return
        self.pm.unregister(name=pname)
        hints = []
        for hook in unknown:
            close = difflib.get_close_matches(hook, list(KINDS), n=1, cutoff=0.6)
            hints.append(f"{hook!r} -> {close[0]!r}" if close else f"{hook!r} (no hook of that kind)")
        raise PluginError(
            f"it implements {', '.join(repr(h) for h in unknown)}, which "
            f"{'is not a toolrl hook' if len(unknown) == 1 else 'are not toolrl hooks'}, so "
            f"{'it' if len(unknown) == 1 else 'they'} would never be called",
            where=f"plugin {pname!r}",
            fix=f"rename: {'; '.join(hints)}. The hooks are: {', '.join(KINDS)} (docs/plugins.md)",
        )

    def unregister(self, name: str) -> None:
        with self._lock:
            self.pm.unregister(name=name)
            self._infos.pop(name, None)
            self._registries = None

    # -- registries ------------------------------------------------------
    def _build(self) -> dict[str, Registry]:
        self._load()
        registries = {kind: Registry(kind) for kind in KINDS.values()}
        trace = os.environ.get("TOOLRL_TRACE_PLUGINS", "") not in ("", "0")
        for info in self._infos.values():
            info.hooks, info.registered = [], {}
        for hook_name, kind in KINDS.items():
            caller = getattr(self.pm.hook, hook_name)
            # Load order: built-ins, then entry points, then hand-registered plugins.
            # get_hookimpls() lists them in registration order (pluggy *calls* them in
            # reverse, which is why the hook is not called through the caller here).
            for impl in caller.get_hookimpls():
                info = self._infos.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name, None, None, False))
                names: list[str] = []

                def register(name: str, obj: Any, _info: PluginInfo = info, _names: list[str] = names) -> None:
                    registries[kind].add(Entry(name, obj, _info.name, _info.distribution))
                    _names.append(name)

                if trace:
                    logger.warning("[toolrl trace] %s(register) -> plugin %s", hook_name, impl.plugin_name)
                try:
                    impl.function(register=register)
                except PluginError:
                    raise
                except Exception as exc:
                    info.error = f"{type(exc).__name__} in {hook_name}: {exc}"
                    logger.error("plugin %s failed in %s: %s", impl.plugin_name, hook_name, exc)
                    continue
                info.hooks.append(hook_name)
                if names:
                    info.registered.setdefault(kind, []).extend(names)
                if trace:
                    logger.warning("[toolrl trace] %s <- plugin %s registered %s", hook_name, impl.plugin_name, names)
        return registries

    def registry(self, kind: str) -> Registry:
        with self._lock:
            if self._registries is None:
                self._registries = self._build()
            try:
                return self._registries[kind]
            except KeyError:
                raise UnknownNameError(f"no registry kind {kind!r}", fix=f"use one of {sorted(self._registries)}") from None

    def plugin_infos(self, include_builtins: bool = False) -> list[PluginInfo]:
        with self._lock:
            if self._registries is None:
                self._registries = self._build()
            return [i for i in self._infos.values() if include_builtins or not i.builtin]


def _version(dist: str | None) -> str | None:
    if not dist:
        return None
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


_manager: PluginManager | None = None
_manager_lock = threading.Lock()


def get_manager() -> PluginManager:
    """The process-wide plugin manager (created on first use)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = PluginManager()
        return _manager


def reset(load_entrypoints: bool | None = None) -> PluginManager:
    """Forget all loaded plugins and start again (tests use this)."""
    global _manager
    with _manager_lock:
        _manager = PluginManager(load_entrypoints=load_entrypoints)
        return _manager


def registry(kind: str) -> Registry:
    """The registry of one kind, e.g. `registry("rewards").get("math_equiv")`."""
    return get_manager().registry(kind)


def get(kind: str, name: str) -> Any:
    """Shortcut: the object registered under `name` in registry `kind`."""
    return registry(kind).get(name)


def names(kind: str) -> list[str]:
    return registry(kind).names()


Factory = Callable[..., Any]
