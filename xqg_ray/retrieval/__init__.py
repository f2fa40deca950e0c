"""Retrieval math on vectors: xQG augmentation, FAISS index building and updates, the exact top-k merge."""
