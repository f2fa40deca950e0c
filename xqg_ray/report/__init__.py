"""What a person reads: report.md tables and the PNG charts, drawn from metrics.json's structure."""
