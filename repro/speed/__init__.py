"""Speed benchmarks (``make bench``): ratios measured in one run, printed; no test times them.
(Named ``speed`` so that "benchmark" means one of the paper's evaluation sets, ``repro.paper``.)"""
