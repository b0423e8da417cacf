"""The one-GPU trainer: TRL 1.16.0's ``GRPOTrainer`` with the λ-GRPO loss at three seams.

No TRL file is copied or edited. Modules, from the bottom up:

``contract_adapter``  what the seams take from the shared layer (weights, Eq. 3, λ, f statistics,
                      the metrics line): the one file to switch to ``repro.trainers.contract``
``options``           which GRPOConfig options keep Eq. 7 exact; a clear error for each that does not
``trainer``           ``LambdaGRPOTrainer``: the seams (``_generate_and_score_completions``,
                      ``_compute_loss``, ``training_step``) and λ's state in TRL checkpoints
``reward``            the paper's reward as a TRL reward function, graded in worker processes
``run``               ``python -m repro.trainers.trl --config ... --out ...`` (config, machine check)
``reproduce``         ``make reproduce-1gpu``: prompts, training, ``repro.eval``, the Table 1 comparison

Importing this package does not import trl.
"""
