"""The embedder is sentence-transformers on the packaged MiniLM: the published vectors, cached."""

import numpy as np
import torch


def _by_hand(path, texts):
    """The model card's recipe: transformer, mean pooling over the attention mask, L2 normalisation."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path)).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def test_vectors_match_the_model_cards_recipe_and_rank_by_meaning(embedder):
    texts = ["My dog is called Rex.", "The cat sleeps on the sofa.", "I work as a nurse in Leeds.",
             "What is my dog's name?"]
    vecs = embedder.encode(texts)
    assert vecs.shape == (4, 384) and vecs.dtype == np.float32 and embedder.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vecs, _by_hand(embedder.path, texts), atol=2e-5)
    sims = vecs[:3] @ vecs[3]
    assert int(np.argmax(sims)) == 0  # the question about the dog is closest to the dog fact


def test_cache_returns_the_same_vectors_without_encoding_again(embedder, monkeypatch):
    first = embedder.encode(["a sentence to cache", "another one"])
    calls = []
    real = embedder.model.encode
    monkeypatch.setattr(embedder.model, "encode", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = embedder.encode(["another one", "a sentence to cache", "something new"])
    assert len(calls) == 1 and calls[0][0] == ["something new"]  # only the unseen text is encoded
    np.testing.assert_array_equal(again[:2], first[::-1])
