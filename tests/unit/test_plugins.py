"""The plugin core: built-ins, hand-registered plugins, duplicates, broken plugins, tracing."""

import importlib.metadata as md
import logging

import pluggy
import pytest

from toolrl import hookimpl, plugins
from toolrl.errors import PluginError, UnknownNameError


def test_builtins_register_through_the_same_hooks(plugin_manager):
    entry = plugins.registry("rollout_backends").entry("hf")
    assert entry.plugin == "toolrl.default_plugins.backends"
    assert entry.distribution == "toolrl"
    infos = {i.name: i for i in plugin_manager.plugin_infos(include_builtins=True)}
    backends = infos["toolrl.default_plugins.backends"]
    assert backends.builtin and "register_rollout_backends" in backends.hooks
    assert {"hf", "vllm", "sglang"} <= set(backends.registered["rollout_backends"])
    # built-ins are hidden unless asked for
    assert all(not i.builtin for i in plugin_manager.plugin_infos())


class RewardPlugin:
    def __init__(self, *names):
        self.names = names

    @hookimpl
    def register_rewards(self, register):
        for n in self.names:
            register(n, lambda trajectories, **kw: [1.0] * len(trajectories))


def test_registered_names_record_their_plugin(plugin_manager):
    plugin_manager.register(RewardPlugin("r1", "r2"), name="two-rewards", distribution="toolrl")
    assert plugins.names("rewards") == ["r1", "r2"]
    assert plugins.registry("rewards").entry("r2").plugin == "two-rewards"
    info = next(i for i in plugin_manager.plugin_infos() if i.name == "two-rewards")
    assert info.registered == {"rewards": ["r1", "r2"]}
    assert info.hooks == ["register_rewards"]


def test_duplicate_name_is_an_error_naming_both_plugins(plugin_manager):
    plugin_manager.register(RewardPlugin("same"), name="first-plugin")
    plugin_manager.register(RewardPlugin("same"), name="second-plugin")
    with pytest.raises(PluginError) as exc:
        plugins.registry("rewards")
    msg = str(exc.value)
    assert "'same'" in msg and "first-plugin" in msg and "second-plugin" in msg
    assert "Fix:" in msg


def test_builtins_register_before_other_plugins(plugin_manager):
    class BackendPlugin:
        @hookimpl
        def register_rollout_backends(self, register):
            register("zz_later", lambda **kw: None)
            register("aa_after_it", lambda **kw: None)

    plugin_manager.register(BackendPlugin(), name="hand-registered")
    entries = list(plugins.registry("rollout_backends")._entries.values())
    owners = [e.plugin for e in entries]
    first_other = owners.index("hand-registered")
    assert first_other > 0 and all(o.startswith("toolrl.default_plugins.") for o in owners[:first_other])
    assert [e.name for e in entries[first_other:]] == ["zz_later", "aa_after_it"]  # registration order kept


def test_plugin_reusing_a_builtin_name_is_named_second(plugin_manager):
    builtin = plugins.registry("rollout_backends").entry("hf").plugin
    plugin_manager.register(type("Dup", (), {"register_rollout_backends": hookimpl(
        lambda self, register: register("hf", lambda **kw: None))})(), name="my-hf")
    with pytest.raises(PluginError) as exc:
        plugins.registry("rollout_backends")
    msg = str(exc.value)
    assert msg.index(builtin) < msg.index("my-hf"), msg


def test_unknown_name_lists_available_and_suggests(plugin_manager):
    with pytest.raises(UnknownNameError) as exc:
        plugins.get("rollout_backends", "hff")
    msg = str(exc.value)
    assert "'hff'" in msg and "hf, sglang, vllm" in msg and "did you mean 'hf'" in msg


def test_plugin_that_fails_on_import_is_reported_and_others_load(plugin_manager):
    bad = md.EntryPoint(name="bad-plugin", value="toolrl_no_such_module_xyz", group="toolrl")
    plugin_manager._load()
    plugin_manager._load_entrypoint(bad)
    plugin_manager.register(RewardPlugin("still_here"), name="good")
    assert "still_here" in plugins.registry("rewards")
    info = next(i for i in plugin_manager.plugin_infos() if i.name == "bad-plugin")
    assert info.error.startswith("ModuleNotFoundError") and "toolrl_no_such_module_xyz" in info.error


def test_hook_that_raises_is_reported_and_others_still_register(plugin_manager):
    class Exploding:
        @hookimpl
        def register_rewards(self, register):
            raise RuntimeError("boom in plugin")

    plugin_manager.register(Exploding(), name="exploding")
    plugin_manager.register(RewardPlugin("fine"), name="fine")
    assert plugins.names("rewards") == ["fine"]
    info = next(i for i in plugin_manager.plugin_infos() if i.name == "exploding")
    assert "boom in plugin" in info.error and "register_rewards" in info.error


def test_wrong_hook_signature_is_rejected_with_plugin_name(plugin_manager):
    class Wrong:
        @hookimpl
        def register_rewards(self, register, unknown_arg):
            pass

    with pytest.raises(pluggy.PluginValidationError) as exc:
        plugin_manager.register(Wrong(), name="wrong-signature")
    assert "wrong-signature" in str(exc.value) and "unknown_arg" in str(exc.value)


def test_non_callable_registration_is_rejected(plugin_manager):
    class Bad:
        @hookimpl
        def register_rewards(self, register):
            register("bad", 42)

    plugin_manager.register(Bad(), name="bad-obj")
    with pytest.raises(PluginError, match="not callable"):
        plugins.registry("rewards")


def test_trace_logs_every_hook_call(plugin_manager, monkeypatch, caplog):
    monkeypatch.setenv("TOOLRL_TRACE_PLUGINS", "1")
    plugin_manager.register(RewardPlugin("traced"), name="traced-plugin")
    with caplog.at_level(logging.WARNING, logger="toolrl.plugins"):
        plugins.registry("rewards")
    text = caplog.text
    assert "register_rewards(register) -> plugin traced-plugin" in text
    assert "registered ['traced']" in text
    assert "register_rollout_backends(register) -> plugin toolrl.default_plugins.backends" in text


def test_entrypoints_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("TOOLRL_NO_ENTRYPOINTS", "1")
    assert plugins.PluginManager()._load_entrypoints is False
    monkeypatch.setenv("TOOLRL_NO_ENTRYPOINTS", "0")
    assert plugins.PluginManager()._load_entrypoints is True


def test_unregister_removes_names(plugin_manager):
    plugin_manager.register(RewardPlugin("temp"), name="temp-plugin")
    assert "temp" in plugins.registry("rewards")
    plugin_manager.unregister("temp-plugin")
    assert "temp" not in plugins.registry("rewards")


def test_misspelt_hook_is_reported_with_the_right_spelling(plugin_manager):
    from toolrl.errors import PluginError

    class Typo:
        @hookimpl
        def register_reward(self, register):  # register_rewards
            register("never", lambda *a, **k: [])

    with pytest.raises(PluginError) as exc:
        plugin_manager.register(Typo(), name="typo-plugin")
    text = str(exc.value)
    assert "typo-plugin" in text and "'register_reward'" in text and "'register_rewards'" in text
    assert not plugin_manager.pm.has_plugin("typo-plugin")
    assert "never" not in plugins.names("rewards")
