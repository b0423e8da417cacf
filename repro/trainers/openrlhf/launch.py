"""Start an OpenRLHF 0.11.2 run with λ-GRPO patched in:

    python -m repro.trainers.openrlhf.launch --lgrpo.method lambda --lgrpo.r 0.1111 ... <stock flags>

Takes the ``--lgrpo.*`` flags off the command line (``settings.split_argv``), checks the rest
with the installed OpenRLHF parser, starts Ray with the λ settings in every worker's environment,
replaces the stock classes (``patches.install``) and runs the stock ``openrlhf.cli.train_ppo_ray``
entry point with ``runpy``, so every stock flag works as documented by OpenRLHF.
"""
from __future__ import annotations

import os
import runpy
import sys

from repro.trainers.openrlhf.settings import ENV_VAR, split_argv

# the three variables OpenRLHF's train() sets when it starts Ray itself (cli/train_ppo_ray.py:21-32)
_STOCK_ENV = {"TOKENIZERS_PARALLELISM": "true", "NCCL_DEBUG": "WARN", "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1"}
_PASS_ENV = ("LGRPO_GRADER", "LGRPO_GRADER_TIMEOUT", "PYTHONPATH")


def check_args(stock_argv: list[str], settings) -> object:
    """Parse with the installed OpenRLHF parser and refuse combinations the patches do not cover."""
    from repro.trainers.openrlhf.cli_check import parse_train_ppo_ray

    args, _ = parse_train_ppo_ray(stock_argv)
    problems = []
    if args.train.async_enable:
        problems.append("--train.async_enable uses PPOTrainerAsync, which is not patched")
    if args.actor.loss_agg_mode != "token-mean":
        problems.append("--actor.loss_agg_mode must be token-mean (the weights multiply a token-level loss)")
    if args.actor.policy_loss_type != "ppo":
        problems.append("--actor.policy_loss_type must be ppo")
    if settings.learnable and args.ds.param_dtype != "bf16":
        problems.append("learnable λ needs --ds.param_dtype bf16")
    if args.rollout.n_samples_per_prompt < 2:
        problems.append("--rollout.n_samples_per_prompt must be >= 2 (group weights)")
    if problems:
        raise SystemExit("launch: " + "; ".join(problems))
    return args


def runtime_env(settings) -> dict:
    env = {k: os.environ.get(k, v) for k, v in _STOCK_ENV.items()}
    env[ENV_VAR] = settings.to_json()
    env.update({k: os.environ[k] for k in _PASS_ENV if k in os.environ})
    return {"env_vars": env}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    settings, stock = split_argv(argv)
    check_args(stock, settings)
    if settings.run_dir:
        from repro.runs import Run

        if not Run(settings.run_dir).meta_path.exists():
            raise SystemExit(f"launch: {settings.run_dir} is not a run folder (create it with repro.runs.Run.create)")
    os.environ[ENV_VAR] = settings.to_json()

    import ray

    from repro.trainers.openrlhf import patches

    ray.init(runtime_env=runtime_env(settings))
    patches.install()
    sys.argv = ["openrlhf.cli.train_ppo_ray", *stock]
    runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
