"""Disease-aware vision tokens: mined from the Q-Former's attention during training (tokens.py)
and kept in a FAISS index, one sub-index per observation, searched top-k at generation (index.py)."""
