"""toolrl-env-memory: a per-user long-term memory environment for toolrl agents.

Tools `remember(text)` and `recall(query, k)` over all-MiniLM-L6-v2 sentence
embeddings in a FAISS index (numpy when faiss is absent). See README.md.
"""

__version__ = "0.1.0"
