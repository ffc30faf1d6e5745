"""Every toolrl hook. A plugin implements any of them with `@toolrl.hookimpl`.

Each hook receives a `register(name, obj)` callback. Names are global per
kind: registering a name that another plugin already registered is an error
that names both plugins. docs/plugins.md shows a runnable example per hook.
"""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("toolrl")
hookimpl = HookimplMarker("toolrl")


@hookspec
def register_rollout_backends(register):
    """Register rollout backends: register(name, factory); factory(settings: BackendSettings) -> RolloutBackend."""


@hookspec
def register_environments(register):
    """Register environments: register(name, factory); factory(ctx: EnvContext, **args) -> Environment, one per episode."""


@hookspec
def register_rewards(register):
    """Register rewards: register(name, fn); fn(trajectories, *, tasks, metadata, env_states, completions, **args) -> list[float | None], sync or async."""


@hookspec
def register_tool_parsers(register):
    """Register tool-call parsers: register(name, parser); parser.parse(text) -> ParsedTurn."""


@hookspec
def register_advantage_estimators(register):
    """Register advantage estimators: register(name, fn); fn(batch: AdvantageInput, config) -> AdvantageOutput."""


@hookspec
def register_policy_losses(register):
    """Register policy losses: register(name, fn); fn(inp: PolicyLossInput, config) -> PolicyLossOutput (toolrl.algorithms.losses)."""


@hookspec
def register_metric_sinks(register):
    """Register metric sinks: register(name, factory); factory(run_dir: Path) -> MetricSink."""


@hookspec
def register_evaluators(register):
    """Register evaluators: register(name, fn); fn(trajectories, *, tasks, rewards) -> dict[str, float]."""


@hookspec
def register_task_suites(register):
    """Register task suites for `toolrl data make`: register(name, fn); fn(n: int, seed: int, **args) -> list[Task]."""
