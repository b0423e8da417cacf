"""Benchmark scripts (``make bench``). They print ratios measured in one run; no test times them."""
