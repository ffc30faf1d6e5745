"""toolrl hooks of toolrl-env-memory: the `memory` environment, task suite and `memory_recall` reward."""

from toolrl import hookimpl


@hookimpl
def register_environments(register):
    from toolrl_env_memory.env import memory_env

    register("memory", memory_env)


@hookimpl
def register_task_suites(register):
    from toolrl_env_memory.suite import make_memory_tasks

    register("memory", make_memory_tasks)


@hookimpl
def register_rewards(register):
    from toolrl_env_memory.reward import memory_recall

    register("memory_recall", memory_recall)
