"""toolrl.runtime: one event loop and one sandbox pool per process, shared by the python environment and the
code reward, closed by runtime.close() (real Docker)."""

import asyncio

import pytest

pytestmark = pytest.mark.integration


def test_env_and_reward_share_the_runs_one_pool_and_close_closes_it(docker_ready):
    from toolrl import runtime
    from toolrl.env import sandbox_pool_key
    from toolrl.rewards import reward_loop
    from toolrl_env_code.env import shared_pool
    from toolrl_rewards_code.rewards import _run_pool

    runtime.close()
    rt = runtime.current({"python": {"pool_size": 1}})
    assert reward_loop() is rt.loop and rt.env.config == {"python": {"pool_size": 1}}

    async def both():
        env_pool = await shared_pool(rt.env, pool_size=1, mode="reuse", image=None)
        reward_pool = await _run_pool(1, "reuse")
        return env_pool, reward_pool, rt.env.get(sandbox_pool_key("reuse"))

    env_pool, reward_pool, kept = rt.run(both())
    assert env_pool is reward_pool is kept  # one pool for the run, not one per plugin
    ids = env_pool.container_ids()
    assert ids
    runtime.close()
    assert rt.closed and runtime.current() is not rt  # the next run gets a fresh runtime
    alive = {c.id for c in docker_ready.containers.list(all=True)}
    assert not alive & set(ids)
    runtime.close()


def test_a_reward_awaited_on_another_loop_keeps_its_own_pool(docker_ready):
    """Code that awaits compute_rewards in its own loop does not borrow the runtime's pool (whose connections
    belong to the runtime's loop)."""
    from toolrl import runtime
    from toolrl_rewards_code import close_pools, live_pools
    from toolrl_rewards_code.rewards import _run_pool

    async def elsewhere():
        pool = await _run_pool(1, "reuse")
        assert pool in live_pools()
        assert await close_pools() == 1

    asyncio.run(elsewhere())
    assert runtime.current().env.get("toolrl/sandbox-pool") is None
    runtime.close()
