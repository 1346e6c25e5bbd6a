"""The synthetic production fleet used by the demo, the tests and the benchmarks."""
