"""benchmarks/gpu/close_probe.py's referrer chain on the CPU: what keeps an object alive, owners named, the
probe's own frames and Python modules' globals left out, and the output bounded."""

from __future__ import annotations


class Model:
    pass


class Engine:
    def __init__(self, model):
        self.model = model


def test_the_chain_names_the_owner_that_keeps_a_model_alive(load_benchmark):
    with load_benchmark("gpu/close_probe.py") as probe:
        model = Model()
        engine = Engine(model)  # noqa: F841 - the stray reference the chain must find
        chain = probe.referrer_chain(model, depth=2)
        assert chain and "Engine" in chain[0]  # the object itself, or "dict(model) of ['Engine']" (older Pythons)
        assert not any("__name__" in line for line in chain)  # no module globals
        many = [Model() for _ in range(3)]
        holders = [[m for m in many] for _ in range(100)]  # noqa: F841
        assert len(probe.referrer_chain(many[0], depth=3, limit=5)) == 5
