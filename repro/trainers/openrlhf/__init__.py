"""The paper-scale trainer: OpenRLHF 0.11.2 extended at a few seams to carry the λ-weighted loss.

No OpenRLHF file is copied or edited. Modules, from the bottom up:

``settings``   the weighting settings as ``--lgrpo.*`` flags and how they travel to the Ray
               workers (an env var); validated by ``repro.trainers.contract.WeightingConfig``
``weighting``  pure torch, no OpenRLHF import: the seams over the trainer contract
               (``repro.trainers.contract``): the group info attached to each sample, the loss
               wrapper around the *stock* ``PolicyLoss``, and the λ step at the accumulation
               boundary (a mixin for ``ActorPPOTrainer``)
``metrics``    one JSONL line per rollout step (the contract's ``metrics_record``)
``checkpoints`` rotation of the ``{tag}_hf`` folders that OpenRLHF saves but never rotates
``preflight``  stdlib only: says how to create the GPU environment when it is not active
``reward_fn``  the file for ``--reward.remote_url``: +1 / -0.5 / -1 through the package's grader
``patches``    the subclasses of OpenRLHF classes (imports openrlhf, ray, deepspeed)
``launch``     patches the classes in and runs the stock ``openrlhf.cli.train_ppo_ray``
``cli_check``  runs the installed OpenRLHF argument parser on a command line without Ray/vLLM
``environment`` the machine check of ``reproduce`` (GPUs, Python, locked packages, data)
``prompts``    the training prompts: SimpleRL-Zoo parquet -> OpenRLHF JSONL, cut to whole batches
``reproduce``  ``make reproduce-1.5b|3b|7b``: configs (``repro/configs/paper/``), commands and
               the steps in order: check, prompts, train, eval, comparison table
``local_actor`` OpenRLHF's policy actor outside Ray (CPU tests with gloo, and the GPU check)
``gpu_check``  a one-GPU, offline check: λ gradient (bf16 vs fp64), the real DeepSpeed engine,
               loss timing and 1.5B-shape memory (``make gpu-check``)
"""
