"""hiergym.benchmarks: fixed task splits, throughput and learning benchmarks."""
