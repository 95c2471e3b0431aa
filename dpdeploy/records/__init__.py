"""On-disk records: run records, the terminal capture, captured versions."""
