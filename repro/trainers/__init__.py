"""Trainers: ``reference`` (the single-process CPU RL trainer), ``pretrain`` (the supervised run
that builds the CPU starting checkpoint), ``rollout`` (their shared model/sampling/eval helpers)
and ``openrlhf`` (the paper-scale launcher)."""
