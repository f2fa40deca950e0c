"""xqg-ray: cross-lingual dense retrieval evaluation (questions in language L, English passages)."""
