"""Start an OpenRLHF 0.11.2 run with λ-GRPO patched in:

    python -m repro.trainers.openrlhf.launch --lgrpo.weighting.method lambda --lgrpo.weighting.r 0.1111 \
        --lgrpo.weighting.lambda.lr 0.1 --lgrpo.scope group ... <stock flags>

Takes the ``--lgrpo.*`` flags off the command line (``settings.split_argv``; the config's
``weighting:`` block as ``--lgrpo.weighting.KEY VALUE``, any registered method with any
parameters of its own; a bad one is one line and exit code 2), checks the rest
with the installed OpenRLHF parser, starts Ray with the λ settings in every worker's environment,
replaces the stock classes (``patches.install``) and runs the stock ``openrlhf.cli.train_ppo_ray``
entry point with ``runpy``, so every stock flag works as documented by OpenRLHF.

On a machine without a GPU, in the engine venv (``make engines``) with ``LGRPO_CPU_ENGINES=1``:
the same stock path on vLLM's CPU build, Ray and DeepSpeed's CPU accelerator
(``cpu_engines.py`` lists the shims). The launcher then starts a local Ray cluster with logical
GPUs (unless ``RAY_ADDRESS`` names one) and refuses the flags that cannot run on CPU.

A run whose weights do not reach the vLLM engines stops with one line and exit code 3
(``metrics.WeightSyncError``, raised by the controller from the log-prob gap).
"""
from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path

from repro.config import config_errors
from repro.trainers.openrlhf.settings import ENV_VAR, split_argv

# the three variables OpenRLHF's train() sets when it starts Ray itself (cli/train_ppo_ray.py:21-32)
_STOCK_ENV = {"TOKENIZERS_PARALLELISM": "true", "NCCL_DEBUG": "WARN", "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1"}
_PASS_ENV = ("LGRPO_GRADER", "LGRPO_GRADER_TIMEOUT", "LGRPO_GRADER_WORKERS", "PYTHONPATH", "LGRPO_CPU_ENGINES",
             "LGRPO_CPU_ENGINES_FAULT", "DS_ACCELERATOR", "OMP_NUM_THREADS")
# the logical resources of the local Ray cluster on a CPU machine: enough GPUs for every placement
# OpenRLHF makes for a small run (engines, actors, reference), CPUs for the bundles that also ask one
CPU_RAY_GPUS = 8
CPU_RAY_CPUS = 16


def layout_problems(*, prompts: int, rollout_batch: int, group_size: int, rollout_micro: int, actors: int,
                    train_batch: int, train_micro: int) -> list[str]:
    """Why OpenRLHF 0.11.2 would give the data-parallel ranks unequal work or split groups.

    The path (file:line in openrlhf 0.11.2): prompts are drawn ``rollout.batch_size`` at a time
    and a last partial batch is trained on (``samples_generator.py:16-37``, ``:89-134``); the
    ``B·G`` samples of a batch are cut into experiences of ``rollout.micro_batch_size``
    (``experience_maker.py:70-76``) and handed out in contiguous chunks of ``ceil(E / actors)``
    (``trainer/ray/launcher.py:346-371``); each rank trains on micro-batches of
    ``train.micro_batch_size`` (``ppo_actor.py:163-170``, ``drop_last``) in optimizer steps of
    ``gas = train.batch_size / train.micro_batch_size / actors`` of them
    (``utils/deepspeed/deepspeed.py:110-116``; a trailing partial window is still trained,
    ``utils/loss_utils.py:102-105``). Ranks that run different numbers of micro-batches issue
    different numbers of collectives (ZeRO reductions, the window token counts) and hang.
    Every rollout batch is equal and whole, and every optimizer step holds whole groups on every
    rank, exactly when all of these hold."""
    B, G, mr, W, T, m = rollout_batch, group_size, rollout_micro, actors, train_batch, train_micro
    S = B * G
    out = []
    if min(B, G, mr, W, T, m) <= 0:
        return [f"batch sizes and counts must be positive (rollout.batch_size {B}, G {G}, rollout.micro_batch_size "
                f"{mr}, actors {W}, train.batch_size {T}, train.micro_batch_size {m})"]
    if prompts % B:
        out.append(f"{prompts} prompts are not a multiple of rollout.batch_size {B}: OpenRLHF trains on the last "
                   f"partial batch ({prompts % B} prompts), which its split gives the ranks unequal work (a hang); "
                   f"cut the prompt set to {prompts - prompts % B} (reproduce.py prepare-prompts does)")
    if S % mr:
        out.append(f"rollout.batch_size x G = {S} samples is not a multiple of rollout.micro_batch_size {mr}")
    elif (S // mr) % W:
        out.append(f"{S // mr} experiences of rollout.micro_batch_size {mr} do not split evenly over {W} actors")
    if S % W == 0 and (S // W) % G:
        out.append(f"{S // W} samples per actor are not whole groups of {G}")
    if T % (m * W):
        out.append(f"train.batch_size {T} is not a multiple of train.micro_batch_size {m} x {W} actors")
    elif (T // W) % G:
        out.append(f"an optimizer step holds {T // W} samples per actor, not whole groups of {G}")
    if S % T:
        out.append(f"rollout.batch_size x G = {S} is not a multiple of train.batch_size {T}: ranks would end "
                   "the rollout with a partial optimizer step")
    return out


def count_prompts(dataset: str, max_samples: int | None = None) -> int:
    """Rows of a local prompt file (JSONL, JSON list or Parquet), capped by ``data.max_samples``
    as ``ppo_trainer.prepare_datasets`` does (``ppo_trainer.py:40``)."""
    if not dataset:
        raise ValueError("--data.prompt_dataset is not set: the launcher counts its prompts to check that every "
                         "rollout batch is whole")
    p = Path(dataset)
    if "," in dataset or not p.is_file():
        raise ValueError(f"--data.prompt_dataset {dataset!r}: the launcher counts prompts only in one local file "
                         "(JSONL, JSON or Parquet), to check that every rollout batch is whole")
    if p.suffix == ".parquet":
        import pandas as pd

        n = len(pd.read_parquet(p, columns=[]))
    elif p.suffix == ".json":
        n = len(json.loads(p.read_text()))
    else:
        with p.open("rb") as fh:
            n = sum(1 for line in fh if line.strip())
    return min(n, int(max_samples)) if max_samples is not None else n


def check_args(stock_argv: list[str], settings, *, count_prompt_file: bool = True) -> object:
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
    if args.algo.dynamic_filtering_enable:
        problems.append("--algo.dynamic_filtering_enable drops groups, so rollout batches are no longer whole")
    if args.train.dynamic_batch_enable and settings.scope == "group":
        problems.append("--train.dynamic_batch_enable spreads groups over ranks and optimizer steps by length; "
                        "lgrpo.scope group needs whole groups in every step")
    if not problems:
        prompts = args.rollout.batch_size  # a stand-in that passes the prompt check
        if count_prompt_file:
            try:
                prompts = count_prompts(args.data.prompt_dataset, args.data.max_samples)
            except (TypeError, ValueError) as e:
                problems.append(str(e))
        ds = args.ds
        problems += layout_problems(
            prompts=prompts, rollout_batch=args.rollout.batch_size, group_size=args.rollout.n_samples_per_prompt,
            rollout_micro=args.rollout.micro_batch_size,
            actors=args.actor.num_nodes * args.actor.num_gpus_per_node // ds.ring_attn_size // ds.tensor_parallel_size,
            train_batch=args.train.batch_size, train_micro=args.train.micro_batch_size)
    if not problems and cpu_engines_on():
        problems += cpu_problems(args)
    if problems:
        raise SystemExit("launch: " + "; ".join(problems))
    return args


def cpu_engines_on() -> bool:
    from repro.trainers.openrlhf.cpu_engines import enabled

    return enabled()


def cpu_problems(args) -> list[str]:
    """The flags that cannot run on the CPU engines, with the reason."""
    out = []
    if args.vllm.num_engines < 1:
        out.append("--vllm.num_engines must be >= 1 (the CPU path checks the weight sync through the engines)")
    if args.vllm.enable_sleep:
        out.append("--vllm.enable_sleep: vLLM's CPU platform has no sleep mode")
    if args.ds.enable_sleep:
        out.append("--ds.enable_sleep offloads through CUDA memory; not on CPU")
    if args.vllm.sync_with_ray:
        out.append("--vllm.sync_with_ray: Ray 2.55's gloo collective group calls new_group in processes that already "
                   "have a default group and fails; the CPU path syncs over its own gloo group")
    if args.vllm.sync_backend != "gloo":
        out.append(f"--vllm.sync_backend {args.vllm.sync_backend}: the CPU engines need gloo (NCCL and CUDA IPC "
                   "are GPU-only)")
    if args.ds.attn_implementation not in ("eager", "sdpa"):
        out.append(f"--ds.attn_implementation {args.ds.attn_implementation}: flash attention is GPU-only "
                   "(use eager or sdpa)")
    if args.ds.packing_samples:
        out.append("--ds.packing_samples needs flash attention (GPU-only)")
    if args.vllm.tensor_parallel_size != 1:
        out.append("--vllm.tensor_parallel_size must be 1 on the CPU engines (not tried)")
    return out


def init_ray(settings) -> None:
    """Join the cluster of ``RAY_ADDRESS``; else start a local one (on the CPU engines with
    logical GPUs, which OpenRLHF's placement groups need). ``address="local"``: a new cluster of
    its own even where another process on the machine runs one (without it ``ray.init`` joins
    that one, and refuses the logical GPUs: "When connecting to an existing cluster, num_cpus
    and num_gpus must not be provided")."""
    import ray

    if cpu_engines_on() and not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        ray.init(address="local", num_gpus=CPU_RAY_GPUS, num_cpus=CPU_RAY_CPUS, include_dashboard=False,
                 runtime_env=runtime_env(settings))
    else:
        ray.init(runtime_env=runtime_env(settings))


def runtime_env(settings) -> dict:
    env = {k: os.environ.get(k, v) for k, v in _STOCK_ENV.items()}
    env[ENV_VAR] = settings.to_json()
    env.update({k: os.environ[k] for k in _PASS_ENV if k in os.environ})
    return {"env_vars": env}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    with config_errors("launch"):
        settings, stock = split_argv(argv)
    check_args(stock, settings)
    if settings.run_dir:
        from repro.runs import Run

        if not Run(settings.run_dir).meta_path.exists():
            raise SystemExit(f"launch: {settings.run_dir} is not a run folder (create it with repro.runs.Run.create)")
    os.environ[ENV_VAR] = settings.to_json()

    from repro.trainers.openrlhf import patches
    from repro.trainers.openrlhf.metrics import WeightSyncError

    init_ray(settings)
    patches.install()
    sys.argv = ["openrlhf.cli.train_ppo_ray", *stock]
    try:
        runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="__main__", alter_sys=True)
    except WeightSyncError as e:  # raised in the controller actor; Ray re-raises it as this type
        cause = getattr(e, "cause", None) or e
        print(f"launch: {cause}", file=sys.stderr)
        raise SystemExit(3) from None


if __name__ == "__main__":
    main()
