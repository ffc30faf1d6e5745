"""MemoryStore: faiss and numpy give the same hits; save/load round-trips; bad set-ups fail clearly."""

import sys

import numpy as np
import pytest

from toolrl.errors import ToolrlError
from toolrl_env_memory.store import Memory, MemoryStore, resolve_backend


def _random_store(backend, n=200, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store = MemoryStore(dim, backend)
    store.add([Memory(id=f"m{i}", text=f"note {i}") for i in range(n)], vecs)
    return store, vecs, rng


def test_faiss_and_numpy_return_the_same_hits():
    pytest.importorskip("faiss")
    f, vecs, rng = _random_store("faiss")
    nmp, _, _ = _random_store("numpy")
    assert f.backend == "faiss" and nmp.backend == "numpy"
    for _ in range(20):
        q = rng.normal(size=16).astype(np.float32)
        q /= np.linalg.norm(q)
        a, b = f.search(q, 5), nmp.search(q, 5)
        assert [h.memory.id for h in a] == [h.memory.id for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5, atol=1e-5)
        best = int(np.argmax(vecs @ q))
        assert a[0].memory.id == f"m{best}"


@pytest.mark.parametrize("backend", ["faiss", "numpy"])
def test_search_edge_cases(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    store = MemoryStore(4, backend)
    assert store.search(np.ones(4, dtype=np.float32), 3) == []
    store.add([Memory("a", "x"), Memory("b", "y")], np.eye(4, dtype=np.float32)[:2])
    hits = store.search(np.array([0, 1, 0, 0], dtype=np.float32), 10)
    assert [h.memory.id for h in hits] == ["b", "a"]  # k larger than the store: all, best first
    with pytest.raises(ValueError, match="already in the store"):
        store.add([Memory("a", "again")], np.eye(4, dtype=np.float32)[:1])


def test_auto_falls_back_to_numpy_without_faiss(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    assert resolve_backend("auto") == "numpy"
    assert MemoryStore(8, "auto").backend == "numpy"
    with pytest.raises(ToolrlError, match="faiss is not installed") as exc:
        MemoryStore(8, "faiss")
    assert "backend=numpy" in exc.value.fix


def test_unknown_backend_is_an_error():
    with pytest.raises(ToolrlError, match="unknown memory index backend"):
        resolve_backend("annoy")


@pytest.mark.parametrize("backend", ["faiss", "numpy"])
def test_save_and_load_round_trip(tmp_path, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    store, _, rng = _random_store(backend, n=30)
    store.save(tmp_path / "u")
    again = MemoryStore.load(tmp_path / "u", 16, backend)
    assert [m.id for m in again.memories] == [m.id for m in store.memories]
    q = rng.normal(size=16).astype(np.float32)
    assert [h.memory.id for h in again.search(q, 4)] == [h.memory.id for h in store.search(q, 4)]
    assert len(MemoryStore.load(tmp_path / "nobody", 16, backend)) == 0


def test_load_rejects_an_inconsistent_folder(tmp_path):
    store, _, _ = _random_store("numpy", n=3)
    store.save(tmp_path)
    np.save(tmp_path / "vectors.npy", np.zeros((2, 16), dtype=np.float32))
    with pytest.raises(ToolrlError, match="inconsistent") as exc:
        MemoryStore.load(tmp_path, 16, "numpy")
    assert "delete the folder" in exc.value.fix
