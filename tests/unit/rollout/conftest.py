"""An hf backend on the tiny random-init Llama of tests/unit/conftest.py; the behaviour tests with
the real models are in tests/integration/test_rollout_*.py.
"""

import pytest


@pytest.fixture(scope="module")
def tiny_backend(tiny_model_dir):
    from toolrl.rollout.base import BackendSettings
    from toolrl.rollout.hf_backend import HFBackend

    backend = HFBackend(BackendSettings(model_path=str(tiny_model_dir), device="cpu", max_batch_size=8))
    yield backend
    backend.close()
