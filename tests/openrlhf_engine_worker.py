"""One data-parallel rank of the real-engine test (tests/test_openrlhf_engine.py).

The package's policy actor (``_LambdaPolicyModelActorBase``: OpenRLHF's ``PolicyModelActor`` + λ)
is built by its stock ``init_model_from_pretrained`` around a tiny Qwen2 made from a config: the
real ``DeepspeedStrategy`` and DeepSpeed engine (ZeRO-2, bf16, CPU accelerator, gloo) and the
real ``LambdaActorPPOTrainer``. Each rollout goes the way the PPO trainer sends it:

    canned vLLM responses -> SamplesGenerator._process_response_into_experience (stock)
    -> LambdaExperienceMaker.split_rollout_samples (stock) -> old log-probs by the actor's
    stock ``forward`` on this rank's chunk -> LambdaExperienceMaker.compute_advantages_and_returns
    -> ``execute_batch("append", ...)`` with RayActorGroup.async_run_method_batch's chunking
    -> ``fit`` (the stock ``ppo_train``: replay-buffer DataLoader, shuffle, window normalisers)

Every micro-batch the loss sees is recorded (a forward pre-hook on the trainer's loss: the
current log-probs, old log-probs, advantages, mask and group info, and which optimizer step it
belongs to), so the test recomputes λ from ``repro.objective`` whatever the shuffle order.

Phase ``train`` runs ROLLOUTS rollouts and saves a checkpoint (stock ``save_checkpoint``, λ in
DeepSpeed's client_states) after SAVE_AFTER of them. Phase ``resume`` then builds a fresh actor
(new strategy, model, engine, trainer) with ``--ckpt.load_enable`` (stock checkpoint load, λ
restored by the package's actor) and runs the remaining rollouts.

usage: python openrlhf_engine_worker.py RANK WORLD PORT WORKDIR [PHASES, default train,resume]
"""
from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# 4 groups of 4 per rollout; experiences of one group each, so each rank holds 2 whole groups (the
# layout the package's ppo_train requires); one optimizer step (gas 4 x 2 samples) per epoch
P, G, ROLLOUTS, SAVE_AFTER = 4, 4, 3, 2
MICRO_ROLLOUT, MICRO_TRAIN, TRAIN_BATCH, EPOCHS = 4, 2, 16, 2
WEIGHTING = {"method": "lambda", "r": 1 / 9, "lambda": {"init": 0.3, "lr": 2.0}}
SCOPE = "group"  # the paper configs' scope
MAX_LEN = 64


def openrlhf_argv(pretrain: str, ckpt: str, world: int, load: bool) -> list[str]:
    argv = ["--actor.model_name_or_path", pretrain, "--ds.attn_implementation", "eager",
            "--ds.zero_stage", "2", "--ds.param_dtype", "bf16",
            "--actor.num_nodes", "1", "--actor.num_gpus_per_node", str(world),
            "--train.micro_batch_size", str(MICRO_TRAIN), "--train.batch_size", str(TRAIN_BATCH),
            "--train.max_epochs", str(EPOCHS), "--train.seed", "7",
            "--rollout.batch_size", str(P), "--rollout.n_samples_per_prompt", str(G),
            "--rollout.micro_batch_size", str(MICRO_ROLLOUT), "--rollout.max_new_tokens", "16",
            "--algo.advantage.estimator", "group_norm", "--algo.kl.init_coef", "0",
            "--actor.loss_agg_mode", "token-mean", "--actor.adam.lr", "3e-3", "--actor.lr_warmup_ratio", "0",
            "--actor.lr_scheduler", "constant", "--vllm.num_engines", "0", "--vllm.sync_backend", "gloo",
            "--ckpt.path", ckpt, "--ckpt.max_num", "2"]
    return argv + (["--ckpt.load_enable"] if load else [])


def run_phase(rank: int, world: int, workdir: str, phase: str) -> None:
    import torch

    from repro.trainers.openrlhf import local_actor
    from repro.trainers.openrlhf.settings import LambdaSettings

    pretrain = os.path.join(workdir, "tiny-qwen2")
    args = local_actor.parse_args(openrlhf_argv(pretrain, os.path.join(workdir, "ckpt"), world, phase == "resume"))
    actor = local_actor.policy_actor(args, pretrain, max_steps=ROLLOUTS * EPOCHS,
                                     lambda_settings=LambdaSettings(weighting=WEIGHTING, scope=SCOPE))
    trainer, engine = actor.trainer, actor.actor.model
    em = local_actor.experience_maker(args, actor.tokenizer)
    records, per_rollout = [], []
    lam_start = trainer.lgrpo_lambda.value
    handle = local_actor.record_loss_inputs(trainer, records)
    for rollout in range(SAVE_AFTER if phase == "resume" else 0, ROLLOUTS):
        mine = local_actor.rollout_experiences(actor, em, local_actor.canned_responses(rollout, P, G), rank, world,
                                               MAX_LEN)
        tokens, n_samples = int(sum(int(e.action_mask.sum()) for e in mine)), sum(len(e.index) for e in mine)
        actor.execute_batch("append", {"experience": mine}, 0, len(mine))
        torch.manual_seed(500 + rollout)  # the DataLoader's shuffle: same order in both phases
        status = actor.fit(kl_ctl=0.0)
        per_rollout.append(dict(rollout=rollout, lam=trainer.lgrpo_lambda.value, grads=list(trainer.lgrpo_grads),
                                tokens=tokens, samples=n_samples,
                                status={k: v for k, v in status.items() if k.startswith("lgrpo/")},
                                policy_loss=status.get("policy_loss")))
        if phase == "train" and rollout + 1 == SAVE_AFTER:
            actor.save_checkpoint(f"global_step{rollout + 1}", {"global_step": rollout + 1})
    handle.remove()
    torch.save(records, os.path.join(workdir, f"{phase}.rank{rank}.records.pt"))
    import deepspeed

    out = dict(rank=rank, phase=phase, lam_start=lam_start, rollouts=per_rollout,
               optimizer_steps=trainer.lgrpo_optimizer_steps, engine=type(engine).__name__,
               zero_stage=engine.zero_optimization_stage(), bf16=bool(engine.bfloat16_enabled()),
               optimizer=type(engine.optimizer).__name__, gas=engine.gradient_accumulation_steps(),
               accelerator=deepspeed.accelerator.get_accelerator().device_name(),
               backend=torch.distributed.get_backend(), world=torch.distributed.get_world_size(),
               checkpoint_steps=(actor.checkpoint_states or {}).get("global_step"))
    with open(os.path.join(workdir, f"{phase}.rank{rank}.json"), "w") as fh:
        json.dump(out, fh)


def main(rank: int, world: int, port: int, workdir: str, phases: list[str]) -> None:
    """Both phases in one process by default (saves a second start-up of OpenRLHF/DeepSpeed):
    the resume builds a fresh strategy, model, engine and trainer, and loads the checkpoint."""
    sys.path.insert(0, HERE)
    from openrlhf_cpu import use_stubs

    use_stubs()
    import torch

    from repro.trainers.openrlhf import local_actor

    shims = local_actor.cpu_shims()
    local_actor.torch_adam()
    local_actor.set_rank_env(rank, world, port)
    for phase in phases:
        run_phase(rank, world, workdir, phase)
    with open(os.path.join(workdir, f"shims.rank{rank}.json"), "w") as fh:
        json.dump(shims, fh)
    torch.distributed.barrier()  # no rank tears gloo down while the other still talks to it
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4],
         sys.argv[5].split(",") if len(sys.argv) > 5 else ["train", "resume"])
