"""Speed benchmarks: the original per-question algorithm against the batched engine (see README.md)."""
