"""Which TRL 1.16.0 options keep Eq. 7 exact, and a clear error for each one that does not.

``check_config(args, weighting)`` (a ``repro.trainers.contract.WeightingConfig``) looks at a ``trl.GRPOConfig`` before the trainer is built;
``check_trainer(trainer)`` at what the built trainer holds (reward functions, tools, vLLM);
``check_window(args, n_prompts)`` at the prompt count when training starts. Each returns the
problems as sentences (empty: fine); ``LambdaGRPOTrainer`` raises ``ValueError`` with all of them.
File:line references are to ``trl/trainer/grpo_trainer.py`` of trl 1.16.0.

How the seams carry Eq. 7 (see ``trainer.py``): TRL's ``dr_grpo`` loss divides each micro-batch's
token sum by the constant B·L_max·GA (L3163-3167); scaling each sample's advantage by
f_i·G·L_max/Σ_{j∈group(i)}|o_j| turns that into the group-scope Eq. 7, averaged over the groups
of the optimizer step, as long as every optimizer step holds GA equal micro-batches made of whole,
distinct generation batches. The checks below keep those conditions.
"""
from __future__ import annotations

SUPPORTED_LOSS = "dr_grpo"
SCALE_REWARDS = {"group": "std", "none": "none"}  # TRL scale_rewards -> Eq. 3 scale


def check_config(args, weighting) -> list[str]:
    p: list[str] = []
    ga = int(args.gradient_accumulation_steps)
    spg = int(args.steps_per_generation)
    G = int(args.num_generations)
    if args.loss_type != SUPPORTED_LOSS:
        p.append(f"loss_type={args.loss_type!r}: the λ seams need loss_type='dr_grpo', whose normaliser "
                 "is the constant B*max_completion_length*GA (grpo_trainer.py:3163-3167) that the weights "
                 "replace by Eq. 7's per-group 1/Σ|o_j|; the method is chosen by weighting.method, not loss_type")
    if ga % spg:
        p.append(f"steps_per_generation={spg} does not divide gradient_accumulation_steps={ga}: an optimizer "
                 "step would hold part of a generation batch, so groups would straddle optimizer steps")
    if args.num_iterations > 1 and spg != ga:
        p.append(f"num_iterations={args.num_iterations} with steps_per_generation={spg} != "
                 f"gradient_accumulation_steps={ga}: an optimizer step would hold the same samples "
                 "twice (set steps_per_generation = gradient_accumulation_steps for several PPO epochs)")
    if args.beta != 0.0:
        p.append(f"beta={args.beta}: TRL adds beta*KL per token before its own normaliser "
                 "(grpo_trainer.py:3149-3150), not with Eq. 7's per-group normaliser the objective uses "
                 "for the KL term; set beta=0 (the one-GPU recipe has no reference model)")
    if args.entropy_coef != 0.0 or args.use_adaptive_entropy:
        p.append("entropy_coef/use_adaptive_entropy: TRL's entropy bonus is a per-micro-batch token mean "
                 "(grpo_trainer.py:3198-3201), not normalised per group as repro.objective.policy_loss "
                 "does; set entropy_coef=0 and use_adaptive_entropy=False")
    if args.top_entropy_quantile < 1.0:
        p.append(f"top_entropy_quantile={args.top_entropy_quantile}: masks low-entropy tokens out of the "
                 "policy loss, so L_i is no longer the sum over all of o_i's tokens; set 1.0")
    if args.mask_truncated_completions:
        p.append("mask_truncated_completions=True: truncated responses would leave the loss mask, so their "
                 "length would read 0 in the group's Σ|o_j| and their surrogate would be dropped; Eq. 7 "
                 "keeps every response of the group. Set False")
    if args.importance_sampling_level != "token":
        p.append(f"importance_sampling_level={args.importance_sampling_level!r}: Eq. 7 clips the per-token "
                 "ratio; set 'token'")
    if args.delta is not None:
        p.append(f"delta={args.delta}: two-sided clipping of the ratio is not Eq. 7's clipped surrogate")
    if getattr(args, "off_policy_mask_threshold", None) is not None:
        p.append("off_policy_mask_threshold: drops whole sequences from the loss, not part of Eq. 7")
    if args.scale_rewards not in SCALE_REWARDS:
        p.append(f"scale_rewards={args.scale_rewards!r}: Eq. 3 normalises within each group ('group') or "
                 "only centres (Dr.GRPO, 'none'); 'batch' std is not Eq. 3")
    if args.multi_objective_aggregation != "sum_then_normalize":
        p.append("multi_objective_aggregation must be 'sum_then_normalize' (one reward, then Eq. 3)")
    if args.fp16:
        p.append("fp16=True: the loss scale of fp16 training would multiply λ's gradient (λ is outside the "
                 "model's optimizer and its unscaling); use bf16 (GPU) or fp32 (CPU)")
    if getattr(args, "deepspeed", None) or getattr(args, "fsdp", None):
        p.append("deepspeed/fsdp: not tested with the λ seams (the one-GPU recipe needs neither); "
                 "use plain DDP through accelerate/torchrun")
    if str(getattr(args, "eval_strategy", "no")) not in ("no", "IntervalStrategy.NO"):
        p.append(f"eval_strategy={args.eval_strategy!r}: TRL's in-training evaluation computes a loss "
                 "without the group information; evaluate checkpoints with `python -m repro.eval`")
    check_group = getattr(weighting.params, "check_group_size", None)  # the method's own (r, G) check
    if check_group is not None:
        try:
            check_group(G)
        except ValueError as e:
            p.append(f"weighting with num_generations G={G}: {e}")
    return p


def check_trainer(trainer) -> list[str]:
    p: list[str] = []
    if trainer.tools or trainer.environment_factories is not None:
        p.append("tools/environment_factory: tool-call tokens are masked out of the loss (tool_mask), "
                 "so a response's loss tokens are not its length; not supported")
    if trainer.rollout_func is not None:
        p.append("rollout_func: a custom rollout bypasses the generation the seams were checked against")
    if getattr(trainer, "use_liger_kernel", False) or getattr(trainer.args, "use_liger_kernel", False):
        p.append("use_liger_kernel: the Liger GRPO loss replaces _compute_loss, where the λ weights enter")
    return p


def vllm_is_note(args) -> str | None:
    """Not refused, documented: with vLLM and ``vllm_importance_sampling_correction`` TRL multiplies
    each token's surrogate by the (truncated) ratio π_old/π_vLLM (grpo_trainer.py:3146-3147), so
    L_i becomes Σ_t w_t·min(ρA, clip(ρ)A). Weights, normaliser and λ's gradient stay exact for that
    L_i; with the correction off (the recipe's choice) L_i is Eq. 7's, with samples drawn by vLLM."""
    if getattr(args, "use_vllm", False) and getattr(args, "vllm_importance_sampling_correction", False):
        return ("vllm_importance_sampling_correction=True: each token's surrogate is multiplied by TRL's "
                "truncated importance ratio pi_old/pi_vLLM; Eq. 7's L_i becomes the IS-weighted sum")
    return None


def check_window(args, n_prompts: int, world_size: int | None = None) -> list[str]:
    """Every optimizer step must hold ``gradient_accumulation_steps`` micro-batches: the Trainer
    makes the last window of an epoch shorter when the epoch's micro-batches are not a multiple of
    it, and that window would hold part of a generation batch."""
    G = int(args.num_generations)
    prompts_per_gen = int(args.generation_batch_size) // G
    n_gen = int(n_prompts) // prompts_per_gen  # RepeatSampler drops a partial generation batch
    if n_gen == 0:
        return [f"{n_prompts} prompts: fewer than one generation batch ({prompts_per_gen} prompts x G={G})"]
    micro = n_gen * int(args.steps_per_generation) * int(args.num_iterations)
    ga = int(args.gradient_accumulation_steps)
    if micro % ga:
        per_step = prompts_per_gen * max(ga // (int(args.steps_per_generation) * int(args.num_iterations)), 1)
        return [f"{n_prompts} prompts give {micro} micro-batches per epoch, not a multiple of "
                f"gradient_accumulation_steps={ga}: the epoch's last optimizer step would be short and hold "
                f"part of a generation batch. Size the prompt set to a multiple of {per_step} prompts"]
    return []
