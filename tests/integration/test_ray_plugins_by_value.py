"""Plugins passed to `train` whose code is not installed reach the Ray workers by value, with the local
modules their code uses (`toolrl.trainer.group.local_modules`). Real local Ray instance, real workers."""

from __future__ import annotations

import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration


def _write_plugin_modules(folder, tag: str) -> None:
    """A plugin module and a helper module it imports, importable only through a sys.path entry the driver
    adds (the Ray workers do not have it)."""
    (folder / f"helper_{tag}.py").write_text("def answer():\n    return 41 + 1\n")
    (folder / f"plugin_{tag}.py").write_text(textwrap.dedent(f"""
        import json

        import helper_{tag}
        from toolrl import hookimpl


        class AnswerPlugin:
            @hookimpl
            def register_rewards(self, register):
                register("answer_{tag}", lambda trajectories, **kw: [helper_{tag}.answer()] * len(trajectories))

            def answer(self):
                return json.loads(json.dumps(helper_{tag}.answer()))
    """))


@pytest.fixture
def plugin_folder(tmp_path, monkeypatch):
    """A folder on the driver's sys.path only; the modules imported from it are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith(("plugin_", "helper_")):
            del sys.modules[name]


def test_local_modules_lists_the_plugin_module_and_its_local_helpers(plugin_folder):
    from toolrl.trainer.group import local_modules

    _write_plugin_modules(plugin_folder, "list")
    import plugin_list

    names = [m.__name__ for m in local_modules([plugin_list.AnswerPlugin()])]
    assert sorted(names) == ["helper_list", "plugin_list"]  # json and toolrl are installed: by name
    assert local_modules([sys.modules["json"], pytest.approx]) == []


def test_a_plugin_on_a_driver_only_path_reaches_the_workers(plugin_folder, shared_ray):
    import ray

    from toolrl.trainer.group import _pickle_plugins_by_value

    _write_plugin_modules(plugin_folder, "ray")
    import plugin_ray

    @ray.remote(num_cpus=0)
    def use(plugin):
        return plugin.answer()

    # by name, as before: the worker cannot import the module the driver found on its own path
    with pytest.raises(Exception, match="No module named 'plugin_ray'"):
        ray.get(use.remote(plugin_ray.AnswerPlugin()), timeout=120)
    _pickle_plugins_by_value([plugin_ray.AnswerPlugin()])
    assert ray.get(use.remote(plugin_ray.AnswerPlugin()), timeout=120) == 42  # the helper came along
