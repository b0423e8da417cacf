"""Subclasses of OpenRLHF 0.11.2 classes that carry λ-GRPO, and ``install()`` to patch them in.

Seams (file:line in openrlhf 0.11.2):

* ``trainer/ppo_utils/experience_maker.py:238`` ``RemoteExperienceMaker.compute_advantages_and_returns``
  -> ``LambdaExperienceMaker``: after the stock group advantages, attach each sample's group
  lengths and position (``weighting.attach_group_info``).
* ``trainer/ray/ppo_actor.py:37`` ``ActorPPOTrainer`` (loss built at :76, ``training_step`` :259,
  ``ppo_train`` :153) -> ``LambdaActorPPOTrainer`` = ``LambdaTrainerMixin`` + stock class.
  ``ppo_train`` builds ``DataLoader(replay_buffer, shuffle=True, drop_last=True)`` (:163-170,
  ``DataLoader`` looked up in the module's globals, imported at :12), which shuffles samples, so
  an optimizer step held pieces of many groups. For the duration of the stock ``ppo_train`` only,
  ``_whole_group_loader`` stands in for that name: same arguments, but a shuffled buffer is read
  through ``weighting.GroupShuffleSampler`` (whole groups in random order), after checking that
  the rank's buffer holds whole groups and fills whole optimizer steps. Everything else in
  ``ppo_train`` is the stock code.
* ``trainer/ray/ppo_actor.py:494`` ``PolicyModelActor`` (a Ray actor; trainer built at :585 from
  the module-global name ``ActorPPOTrainer``, checkpoint loaded at :577, saved at :661) ->
  ``LambdaPolicyModelActor``: subclass of the plain class behind ``__ray_actor_class__``,
  wrapped with ``ray.remote(num_gpus=1)`` again.
* ``trainer/ppo_trainer.py:450`` ``PPOTrainer`` (Ray actor; experience maker built at :178,
  rollout stats :416, logging + checkpoints :384) -> ``LambdaPPOTrainer``: uses the experience
  maker above, adds rollout stats, writes the JSONL metrics line.
* ``cli/train_ppo_ray.py:14`` imports ``PolicyModelActor`` at module level and :148 imports
  ``PPOTrainer`` inside ``train()`` (``--train.async_enable`` imports ``PPOTrainerAsync`` at :146
  instead, which is not patched: the launcher refuses that flag): ``install()`` replaces both module attributes before the
  launcher runs the CLI module with ``runpy``.

This module imports openrlhf, ray and deepspeed; nothing else in the package does.
"""
from __future__ import annotations

import contextlib
import threading
import time

import ray
from torch.utils.data import DataLoader as _TorchDataLoader

import openrlhf.trainer.ppo_trainer as _ppo_trainer_mod
import openrlhf.trainer.ray.ppo_actor as _ppo_actor_mod
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from openrlhf.trainer.ray.ppo_actor import ActorPPOTrainer

from repro.trainers.openrlhf import stop as _stop
from repro.trainers.openrlhf.checkpoints import rotate_hf_checkpoints
from repro.trainers.openrlhf.metrics import record_from_status, rollout_stats
from repro.trainers.openrlhf.settings import LambdaSettings
from repro.trainers.openrlhf.weighting import (
    GroupShuffleSampler,
    LambdaTrainerMixin,
    attach_group_info,
    check_step_layout,
    group_members,
)

if _ppo_actor_mod.DataLoader is not _TorchDataLoader:
    raise ImportError("openrlhf.trainer.ray.ppo_actor.DataLoader is not torch's DataLoader: the group-shuffle "
                      "seam (LambdaActorPPOTrainer.ppo_train) does not fit this OpenRLHF version")

STOCK_POLICY_ACTOR = _ppo_actor_mod.PolicyModelActor
STOCK_PPO_TRAINER = _ppo_trainer_mod.PPOTrainer


class LambdaExperienceMaker(RemoteExperienceMaker):
    def compute_advantages_and_returns(self, experiences):
        experiences = super().compute_advantages_and_returns(experiences)
        attach_group_info(experiences, self.strategy.args.rollout.n_samples_per_prompt)
        return experiences


class LambdaActorPPOTrainer(LambdaTrainerMixin, ActorPPOTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.setup_lambda(LambdaSettings.from_env())

    def ppo_train(self, *args, **kwargs):
        with _whole_group_loader(self):
            return super().ppo_train(*args, **kwargs)


# replay buffers (by id) whose trainer's ppo_train is running, and how many are (a lock makes this
# safe when several trainers share one process, e.g. the tests' thread-emulated ranks)
_ACTIVE: dict[int, object] = {}
_ACTIVE_LOCK = threading.Lock()


def _loader(dataset, *args, shuffle=False, **kwargs):
    """``ppo_actor.DataLoader`` while a ``LambdaActorPPOTrainer.ppo_train`` runs: the stock
    torch DataLoader, except that a shuffled replay buffer of a running trainer is read through
    ``GroupShuffleSampler`` after the whole-group and whole-step checks."""
    trainer = _ACTIVE.get(id(dataset))
    if trainer is None or trainer.args.train.dynamic_batch_enable:
        return _TorchDataLoader(dataset, *args, shuffle=shuffle, **kwargs)
    groups = group_members(dataset.items)
    check_step_layout(len(dataset.items), kwargs.get("batch_size", 1),
                      trainer.strategy.accumulated_gradient, len(groups[0]) if groups else 1)
    if not shuffle:  # ring attention / DS tensor parallelism: the stock sequential order
        return _TorchDataLoader(dataset, *args, shuffle=False, **kwargs)
    return _TorchDataLoader(dataset, *args, sampler=GroupShuffleSampler(groups), **kwargs)


@contextlib.contextmanager
def _whole_group_loader(trainer):
    """Within the block, ``ppo_actor.DataLoader`` reads ``trainer.replay_buffer`` group-wise."""
    key = id(trainer.replay_buffer)
    with _ACTIVE_LOCK:
        _ACTIVE[key] = trainer
        _ppo_actor_mod.DataLoader = _loader
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.pop(key, None)
            if not _ACTIVE:
                _ppo_actor_mod.DataLoader = _TorchDataLoader


class _LambdaPolicyModelActorBase(STOCK_POLICY_ACTOR.__ray_actor_class__):
    def init_model_from_pretrained(self, *args, **kwargs):
        # The stock method builds its trainer from the module-global name; point it at ours in
        # this worker process, then restore λ from the checkpoint the stock code just loaded.
        _ppo_actor_mod.ActorPPOTrainer = LambdaActorPPOTrainer
        super().init_model_from_pretrained(*args, **kwargs)
        state = (self.checkpoint_states or {}).get(LambdaTrainerMixin.STATE_KEY)
        if state is not None:
            self.trainer.lgrpo_load_state(state)
        elif self.checkpoint_states:
            raise RuntimeError("resuming from a checkpoint without λ state (not written by this launcher)")

    def save_checkpoint(self, tag, client_states=None, metric_value=None, metric_key=None):
        client_states = dict(client_states or {})
        client_states[LambdaTrainerMixin.STATE_KEY] = self.trainer.lgrpo_state()
        out = super().save_checkpoint(tag, client_states, metric_value=metric_value, metric_key=metric_key)
        rotate_saved_hf(self.strategy)  # the stock code never removes {tag}_hf folders
        return out


def rotate_saved_hf(strategy) -> None:
    """Keep the ``{tag}_hf`` folders within ``ckpt.max_num`` (``checkpoints``), on rank 0 only."""
    args = strategy.args
    if getattr(args.ckpt, "save_hf", False) and strategy.is_rank_0():
        for d in rotate_hf_checkpoints(args.ckpt.path, int(args.ckpt.max_num)):
            strategy.print(f"Deleted HF checkpoint {d} (ckpt.max_num={args.ckpt.max_num})")


LambdaPolicyModelActor = ray.remote(num_gpus=1)(_LambdaPolicyModelActorBase)


class _LambdaPPOTrainerBase(STOCK_PPO_TRAINER.__ray_actor_class__):
    def __init__(self, *args, **kwargs):
        _stop.install()  # the stop rule, in this actor's process where the samples generator runs
        super().__init__(*args, **kwargs)
        self.lgrpo_settings = LambdaSettings.from_env()
        self.lgrpo_t0 = time.time()
        self.lgrpo_run = None
        if self.lgrpo_settings.run_dir:
            from repro.runs import Run

            self.lgrpo_run = Run(self.lgrpo_settings.run_dir)
        self.experience_maker = LambdaExperienceMaker(
            self.actor_model_group, self.critic_model_group, self.reward_model_group,
            self.reference_model_group, self.kl_ctl, self.strategy, self.tokenizer)

    def fit(self, global_step: int = 0):
        if self.lgrpo_run is not None:
            self.lgrpo_prepare_resume(self.init_checkpoint_states())
        return super().fit(global_step)

    def lgrpo_prepare_resume(self, checkpoint_states: dict) -> None:
        """On resume, drop metrics lines written after the checkpoint (they will be redone)."""
        if checkpoint_states.get("global_step", 0) > 0:
            state = checkpoint_states.get(LambdaTrainerMixin.STATE_KEY)
            if state is None:
                raise RuntimeError("the checkpoint has no λ state: it was not written by this launcher")
            self.lgrpo_run.truncate_metrics(int(state["optimizer_steps"]))

    def _compute_rollout_stats(self, experiences):
        stats = super()._compute_rollout_stats(experiences)
        stats.update(rollout_stats(experiences, self.args.rollout.n_samples_per_prompt))
        return stats

    def save_logs_and_checkpoints(self, global_step, logs_dict=None, client_states=None):
        if self.lgrpo_run is not None and logs_dict:
            rec = record_from_status(logs_dict, rollout=global_step, method=self.lgrpo_settings.method,
                                     time_s=time.time() - self.lgrpo_t0)
            self.lgrpo_run.log(rec)
        return super().save_logs_and_checkpoints(global_step, logs_dict, client_states)


LambdaPPOTrainer = ray.remote(_LambdaPPOTrainerBase)


def install() -> None:
    """Replace the stock classes where ``openrlhf.cli.train_ppo_ray`` will look them up."""
    _ppo_actor_mod.PolicyModelActor = LambdaPolicyModelActor
    _ppo_actor_mod.ActorPPOTrainer = LambdaActorPPOTrainer
    _ppo_trainer_mod.PPOTrainer = LambdaPPOTrainer
