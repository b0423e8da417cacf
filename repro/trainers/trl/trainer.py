"""``LambdaGRPOTrainer``: TRL 1.16.0's ``GRPOTrainer`` carrying the package's loss exactly.

Line numbers are ``trl/trainer/grpo_trainer.py`` of trl 1.16.0 (and transformers 5.24.0's
``trainer.py`` where said). Nothing of TRL is copied; each override calls the stock method.

Seams
-----
1. ``_generate_and_score_completions`` (L2324). After the stock method: gather every sample's
   completion length across processes (``accelerator.gather``, process order, the order of the
   reward gather at L1681 and of the process slice at L2813), reshape to ``[groups, G]``, and add
   to the output each local sample's whole-group lengths and its position in the group
   (``lgrpo_group_lengths``, ``lgrpo_group_pos``). TRL's shuffle and split of the generation batch
   (L1543-1544) act on dim 0 of every tensor, so the rows stay aligned. The advantages are
   replaced by the package's Eq. 3 (``repro.objective.eq3_group_advantages``: sample std, ε = 1e-6; TRL's own use
   ε = 1e-4, L2787) from the gathered rewards, which ``_calculate_rewards`` (L1579) hands over.
2. ``_compute_loss`` (L3020). Each sample's advantage is multiplied by f_i(λ)·G·L_max/Σ_{j∈g(i)}|o_j|
   before the stock loss runs. For f > 0, min(ρ·cA, clip(ρ)·cA) = c·min(ρA, clip(ρ)A), so with
   TRL's ``dr_grpo`` normaliser B·L_max·GA per micro-batch (L3163-3167), summed over GA
   micro-batches (the loss is already scaled for accumulation, ``loss_is_scaled_for_ga``, L285)
   and averaged over P processes by DDP, the step's loss is exactly

       -(1/n_groups) Σ_samples f_i L_i / Σ_{j in group(i)} |o_j|,   n_groups = B·GA·P/G,

   i.e. ``repro.objective.policy_loss(scope="group")``, Eq. 7 averaged over the step's groups.
   λ gets its gradient through the advantages (the stock loss does not detach them).
3. ``training_step`` (L1510). When ``accelerator.sync_gradients`` is set (the Trainer sets it per
   micro-batch before calling ``training_step``, transformers trainer.py:1899), ``WeightingState.
   step()``: λ's gradient averaged over processes, then its own SGD, outside the model, its
   optimizer, its gradient clipping and its LR schedule.

The weights, λ, its checkpoint format, the f statistics and the metrics line are the trainer
contract's (``repro.trainers.contract``): ``WeightingState``, ``GroupInfo``, ``rollout_stats``,
``metrics_record``.

Also: ``_get_grad_norm`` (transformers trainer.py:2789) is read for the metrics line;
``_save_checkpoint`` (L3384) / ``_load_optimizer_and_scheduler`` (L3397) carry λ's state
(``lgrpo_state.pt`` in each ``checkpoint-N`` folder), so a resumed run continues λ's trajectory.
One ``repro.runs`` metrics line per optimizer step (``on_step_end``), and the same λ / f values
go into TRL's own logs (``lgrpo/*``) for its wandb / TensorBoard reporting.

Several PPO epochs (``num_iterations`` = μ > 1, allowed only with ``steps_per_generation`` equal to
the accumulation): TRL generates once every ``steps_per_generation × μ`` micro-batches (L1538-1546)
and trains μ optimizer steps on the same buffered slices, with ``old_per_token_logps`` taken at
generation (L2642-2655), so each of those steps holds exactly one whole generation batch and its
loss is Eq. 7 with ratios ρ ≠ 1 after the first. A step without a new generation batch reports the
rollout statistics of the batch it trains on and its epoch (``iteration``, 1..μ) on the metrics line.
A run resumed from a checkpoint inside a batch's μ epochs regenerates (TRL's buffer is empty after a
restart, L1539-1540): every step stays exact, the trajectory is not the uninterrupted run's (warned).
"""
from __future__ import annotations

import os
import time
import warnings

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer

from repro.objective import eq3_group_advantages
from repro.runs import validate_record
from repro.stop import SHARE_KEYS, STOP_KINDS, eos_token_ids, marker_token_ids, stop_kind, stop_shares
from repro.trainers.contract import GroupInfo, WeightingConfig, WeightingState, metrics_record, rollout_stats
from repro.trainers.trl.options import SCALE_REWARDS, check_config, check_trainer, check_window, vllm_is_note

GROUP_LEN_KEY = "lgrpo_group_lengths"  # [B, G] float64: the lengths of the sample's whole group
GROUP_POS_KEY = "lgrpo_group_pos"  # [B] long: the sample's position in its group
STATE_FILE = "lgrpo_state.pt"


def _refuse(problems: list[str], where: str) -> None:
    if problems:
        raise ValueError(f"{where}: {len(problems)} option(s) would make Eq. 7 inexact:\n  - "
                         + "\n  - ".join(problems))


class _StepEnd(TrainerCallback):
    def __init__(self, trainer: "LambdaGRPOTrainer"):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.lgrpo_step_end()


class LambdaGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer(model, reward_funcs, args=GRPOConfig(...), ...)`` plus ``weighting`` (the
    contract's ``WeightingConfig``: method, its parameters, λ's init and lr), ``run`` (a
    ``repro.runs.Run`` for the metrics JSONL, or None) and ``record_extra`` (constant extra keys
    for every metrics line, e.g. the task)."""

    def __init__(self, *args, weighting: WeightingConfig, run=None, record_extra: dict | None = None, **kwargs):
        targs = kwargs.get("args")
        if targs is None:
            raise ValueError("LambdaGRPOTrainer needs args=GRPOConfig(...) as a keyword")
        _refuse(check_config(targs, weighting), "GRPOConfig")
        super().__init__(*args, **kwargs)
        _refuse(check_trainer(self), "GRPOTrainer")
        note = vllm_is_note(self.args)
        if note:
            warnings.warn(note, stacklevel=2)
        self.lgrpo = WeightingState(weighting, device=self.accelerator.device)
        self.lgrpo_lambda = self.lgrpo.lam  # LearnableLambda, or None for a fixed-weight method
        self.lgrpo_adv_scale = SCALE_REWARDS[self.scale_rewards]
        self.lgrpo_run = run
        self.lgrpo_extra = dict(record_extra or {})
        self.lgrpo_records: list[dict] = []  # every metrics line of this process (tests read it)
        self.lgrpo_rollouts = 0
        self.lgrpo_elapsed0 = 0.0
        self.lgrpo_t0 = time.time()
        self._lgrpo_reset_window()
        self._lgrpo_trained = None  # (rollout stats, epoch) of the generation batch the last step trained on
        self._lgrpo_rewards = None
        self.add_callback(_StepEnd(self))

    def _lgrpo_reset_window(self):
        self.lgrpo_window = {"entropy": [], "clip": [], "rollouts": []}
        self.lgrpo_last_grad = None
        self.lgrpo_grad_norm = None

    # ------------------------------------------------------------------------------------------
    # seam 1: group information and the package's advantages
    # ------------------------------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._lgrpo_rewards = rewards_per_func  # [N_all, n_funcs], gathered over processes (L1681)
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            raise RuntimeError("LambdaGRPOTrainer: evaluation inside TRL is not supported (use repro.eval)")
        rpf, self._lgrpo_rewards = self._lgrpo_rewards, None
        if rpf is None:
            raise RuntimeError("_calculate_rewards was not called for this generation batch")
        if not bool(torch.isfinite(rpf).all()):
            raise ValueError("a reward function returned None or NaN: the paper's reward gives every "
                             "response a number (+1 / -0.5 / -1); refusing to drop samples from groups")
        rewards = (rpf * self.reward_weights.to(rpf.device).unsqueeze(0)).sum(dim=1).double()
        G = self.num_generations
        mask = out["completion_mask"]
        B = mask.shape[0]
        dev = mask.device
        local_len = mask.sum(dim=1).to(torch.float64)
        ids = out["completion_ids"]
        last = ids.gather(1, (local_len.long() - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
        eos = torch.as_tensor(list(self.eos_token_ids), device=dev)
        local_trunc = (~torch.isin(last, eos)).to(torch.float64)
        all_len = self.accelerator.gather(local_len)  # process order, as the reward gather
        all_trunc = self.accelerator.gather(local_trunc)
        if all_len.numel() != rewards.numel() or all_len.numel() % G:
            raise RuntimeError(f"{all_len.numel()} lengths, {rewards.numel()} rewards, G = {G}: not whole groups")
        groups = all_len.view(-1, G)
        adv_all = eq3_group_advantages(rewards.view(-1, G).cpu(), scale=self.lgrpo_adv_scale).to(dev).reshape(-1)
        gidx = torch.arange(B, device=dev) + self.accelerator.process_index * B  # as L2813
        out["advantages"] = adv_all[gidx].to(out["advantages"].dtype)
        out[GROUP_LEN_KEY] = groups[gidx // G]
        out[GROUP_POS_KEY] = gidx % G
        self.lgrpo_rollouts += 1
        self.lgrpo_window["rollouts"].append({**rollout_stats(
            rewards.view(-1, G).cpu(), groups.cpu(), adv_all.view(-1, G).cpu(), all_trunc.cpu()),
            **self._lgrpo_stop_shares(ids, local_len, local_trunc)})
        return out

    def _lgrpo_stop_shares(self, ids, lengths, truncated) -> dict:
        """How this generation batch's completions ended (``repro.stop.stop_shares``, all processes)."""
        tok = self.processing_class
        markers, eos = marker_token_ids(tok), eos_token_ids(tok)
        codes = torch.tensor([STOP_KINDS.index(stop_kind(ids[i, :int(lengths[i])].tolist(), marker_ids=markers,
                                                         eos_ids=eos, truncated=bool(truncated[i])))
                              for i in range(ids.shape[0])], device=ids.device)
        return stop_shares([STOP_KINDS[int(c)] for c in self.accelerator.gather(codes).cpu()])

    # ------------------------------------------------------------------------------------------
    # seam 2: the weighted, group-normalised loss
    # ------------------------------------------------------------------------------------------
    def lgrpo_scale(self, group_lengths, positions, mask):
        """(f_i(λ), f_i·G·L_max/Σ_group|o|) for one micro-batch; the second multiplies the advantages."""
        own = group_lengths.gather(1, positions.view(-1, 1)).squeeze(1)
        if not torch.equal(own, mask.sum(dim=1).to(own.dtype)):
            raise ValueError("a sample's own group length differs from its completion-mask length")
        f = self.lgrpo.weights(GroupInfo(group_lengths, positions))
        if not bool((f.detach() > 0).all()):
            raise ValueError("a token-preference weight is <= 0: scaling the advantage by it would not "
                             "equal weighting the clipped surrogate")
        G = group_lengths.shape[1]
        return f, f * (G * float(self.max_completion_length) / group_lengths.sum(dim=1))

    def _compute_loss(self, model, inputs):
        if GROUP_LEN_KEY not in inputs or GROUP_POS_KEY not in inputs:
            raise KeyError("inputs lack the group information of seam 1")
        f, scale = self.lgrpo_scale(inputs[GROUP_LEN_KEY], inputs[GROUP_POS_KEY], inputs["completion_mask"])
        adv = inputs["advantages"]
        inputs = {**inputs, "advantages": adv * scale.to(adv.dtype)}
        loss = super()._compute_loss(model, inputs)
        self.lgrpo.fstats.add(f)
        m = self._metrics["train"]
        self.lgrpo_window["entropy"].append(m["entropy"][-1])
        self.lgrpo_window["clip"].append(m["clip_ratio/region_mean"][-1])
        return loss

    # ------------------------------------------------------------------------------------------
    # seam 3: λ's own step at the accumulation boundary
    # ------------------------------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch):
        out = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:
            self.lgrpo_last_grad = self.lgrpo.step()  # None for a fixed-weight method
        return out

    def _get_grad_norm(self, model, grad_norm=None):
        self.lgrpo_grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        return self.lgrpo_grad_norm

    # ------------------------------------------------------------------------------------------
    # metrics: one line per optimizer step
    # ------------------------------------------------------------------------------------------
    def lgrpo_step_end(self) -> None:
        w = self.lgrpo_window
        rollouts, epoch = w["rollouts"], 1
        if not rollouts:  # another PPO epoch over the last generation batch (num_iterations > 1)
            if self.num_iterations == 1 or self._lgrpo_trained is None:
                raise RuntimeError("an optimizer step without a generation batch")
            rollouts, epoch = self._lgrpo_trained[0], self._lgrpo_trained[1] + 1
            if epoch > self.num_iterations:
                raise RuntimeError(f"{epoch} optimizer steps on one generation batch, num_iterations = "
                                   f"{self.num_iterations}")
        self._lgrpo_trained = (rollouts, epoch)
        ro = {k: sum(r[k] for r in rollouts) / len(rollouts) for k in rollouts[0]}
        ro["response_length_max"] = max(r["response_length_max"] for r in rollouts)
        if self.lgrpo.optimizer_steps != self.state.global_step:
            raise RuntimeError(f"λ took {self.lgrpo.optimizer_steps} steps, the model {self.state.global_step}")
        gn = self.lgrpo_grad_norm
        rec = metrics_record(
            step=self.state.global_step, rollout=self.lgrpo_rollouts, method=self.lgrpo.method,
            lam=self.lgrpo.value, lam_grad=self.lgrpo_last_grad, f=self.lgrpo.pop_fstats(),
            stats=ro, entropy=sum(w["entropy"]) / len(w["entropy"]), kl=None,
            clip_ratio=sum(w["clip"]) / len(w["clip"]), grad_norm=None if gn is None else float(gn),
            time_s=self.lgrpo_elapsed0 + time.time() - self.lgrpo_t0,
            extras={"trainer": "trl", "learning_rate": float(self._get_learning_rate()), "iteration": epoch,
                    **{k: ro[k] for k in SHARE_KEYS}, **self.lgrpo_extra})
        validate_record(rec)
        self.lgrpo_records.append(rec)
        for k in ("lambda", "lambda_grad", "f_mean", "f_std", "f_min", "f_max", "accuracy", "len_adv_cov"):
            if rec[k] is not None:
                self._metrics["train"][f"lgrpo/{k}"].append(rec[k])
        if self.lgrpo_run is not None and self.accelerator.is_main_process:
            self.lgrpo_run.log(rec)
        self._lgrpo_reset_window()

    # ------------------------------------------------------------------------------------------
    # checkpoints: λ's state next to TRL's
    # ------------------------------------------------------------------------------------------
    def lgrpo_state(self) -> dict:
        """The contract's λ state (``WeightingState.state_dict``) plus TRL-side counters."""
        return {"weighting": self.lgrpo.state_dict(), "step": int(self.state.global_step),
                "rollouts": self.lgrpo_rollouts,
                "time_s": self.lgrpo_elapsed0 + time.time() - self.lgrpo_t0}

    def lgrpo_load_state(self, state: dict) -> None:
        self.lgrpo.load_state_dict(state["weighting"])
        self.lgrpo_rollouts = int(state["rollouts"])
        self.lgrpo_elapsed0, self.lgrpo_t0 = float(state["time_s"]), time.time()

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            tmp = os.path.join(folder, f".{STATE_FILE}.tmp")
            torch.save(self.lgrpo_state(), tmp)
            os.replace(tmp, os.path.join(folder, STATE_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} missing: {checkpoint} was not written by LambdaGRPOTrainer, "
                                    "so λ and its SGD state cannot be restored")
        state = torch.load(path, weights_only=True, map_location="cpu")
        self.lgrpo_load_state(state)
        if self.num_iterations > 1 and int(state["step"]) % self.num_iterations:
            warnings.warn(f"resuming at step {state['step']}, inside a generation batch's {self.num_iterations} "
                          "PPO epochs: TRL samples new completions for the remaining epochs, so the run does not "
                          "retrace the uninterrupted one (each step's loss and λ stay exact)", stacklevel=2)
        if self.lgrpo_run is not None and self.accelerator.is_main_process:
            self.lgrpo_run.truncate_metrics(int(state["step"]))

    def train(self, *args, **kwargs):
        _refuse(check_window(self.args, len(self.train_dataset)), "prompt set")
        return super().train(*args, **kwargs)
