"""`mtbert bench`: the step-time, throughput and quality-table benchmarks."""
