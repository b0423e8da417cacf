"""Synthetic verifiable tasks for the CPU-scale reproduction (see ``repro.tasks.arith``)."""
