"""Where committed data lives: local or s3:// storage, sha256-verified files and sealed records, per-stage ledgers."""
