"""lambda-grpo: reproducibility package for λ-GRPO (learnable token preferences for GRPO).

Layers, each importing only from those above it:
    repro.objective          the paper's math (pure torch)
    repro.grading, repro.reward
    repro.eval, repro.trainers
    repro.runs               the run-folder layout and metrics schema (read by notebooks)
"""
__version__ = "0.1.0"
