"""The one-GPU trainer: TRL 1.16.0's ``GRPOTrainer`` with the λ-GRPO loss at three seams.

No TRL file is copied or edited. Modules, from the bottom up:

``options``           which GRPOConfig options keep Eq. 7 exact; a clear error for each that does not
``trainer``           ``LambdaGRPOTrainer``: the seams (``_generate_and_score_completions``,
                      ``_compute_loss``, ``training_step``) and λ's state in TRL checkpoints;
                      weights, λ, f statistics and the metrics line come from the trainer
                      contract (``repro.trainers.contract``)
``reward``            the paper's reward as a TRL reward function, graded in worker processes
``run``               ``python -m repro.trainers.trl --config ... --out ...`` (config, machine check)
``reproduce``         ``make reproduce-1gpu``: prompts, training, ``repro.eval``, the Table 1 comparison

Importing this package does not import trl.
"""
