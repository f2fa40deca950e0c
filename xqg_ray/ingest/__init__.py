"""Corpus ingest: shared row rules (readers), byte-range planning and the partitioned Ray Data ingest."""
