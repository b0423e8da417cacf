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
* ``trainer/ppo_utils/samples_generator.py:199-207`` (``_dispatch_prompts_to_vllm``) builds the
  ``SamplingParams`` from the module-global name (imported at :7) and asks vLLM for log-probs
  only with ``--algo.advantage.is_correction_level`` on, which also changes the loss
  (``models/loss.py:216``): in the controller's process that name is wrapped to ask for the
  sampled token's log-prob always (``logprobs=1``), and ``cli/train_ppo_ray.py:66-78``'s
  ``create_vllm_engines`` gets ``logprobs_mode="processed_logprobs"`` (what the correction uses:
  after temperature, as the actor's log-probs), so ``Experience.rollout_log_probs`` is filled;
  with the correction off the stock loss ignores it. ``_compute_rollout_stats`` (:416) then
  logs the gap between those and the actor's log-probs of the same tokens (``metrics.logprob_gap``)
  and stops the run when the weights did not reach the engines (``metrics.check_logprob_gap``).
* ``cli/train_ppo_ray.py:14`` imports ``PolicyModelActor`` at module level and :148 imports
  ``PPOTrainer`` inside ``train()`` (``--train.async_enable`` imports ``PPOTrainerAsync`` at :146
  instead, which is not patched: the launcher refuses that flag): ``install()`` replaces both module attributes before the
  launcher runs the CLI module with ``runpy``.

This module imports openrlhf, ray and deepspeed; nothing else in the package does.
"""
from __future__ import annotations

import contextlib
import functools
import threading
import time

import ray
from torch.utils.data import DataLoader as _TorchDataLoader

import openrlhf.trainer.ppo_trainer as _ppo_trainer_mod
import openrlhf.trainer.ppo_utils.samples_generator as _samples_mod
import openrlhf.trainer.ray as _ray_mod
import openrlhf.trainer.ray.ppo_actor as _ppo_actor_mod
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from openrlhf.trainer.ray.ppo_actor import ActorPPOTrainer

from repro.trainers.openrlhf import stop as _stop
from repro.trainers.openrlhf.checkpoints import rotate_hf_checkpoints
from repro.trainers.openrlhf.metrics import (
    check_logprob_gap,
    logprob_gap,
    process_versions,
    record_from_status,
    rollout_stats,
)
from repro.trainers.openrlhf.settings import LambdaSettings
from repro.trainers.openrlhf.weighting import (
    GROUPS_STATUS_KEY,
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
STOCK_CREATE_VLLM_ENGINES = _ray_mod.create_vllm_engines
LOGPROBS_MODE = "processed_logprobs"  # cli/train_ppo_ray.py:78, what the IS correction uses


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

    def lgrpo_versions(self) -> dict:
        return process_versions("policy_actor")

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
        self.lgrpo_groups: list[dict] = []
        self.lgrpo_rollout = 0
        ask_rollout_logprobs()  # in this process, where the samples generator builds SamplingParams

    def fit(self, global_step: int = 0):
        if self.lgrpo_run is not None:
            self.lgrpo_prepare_resume(self.init_checkpoint_states())
            self.lgrpo_write_versions()
        return super().fit(global_step)

    def lgrpo_write_versions(self) -> None:
        """``engine_versions.json`` in the run folder: the versions each kind of process reports
        from inside itself (controller, policy actors, vLLM engine actors)."""
        import json

        from repro.runs import write_text_atomic

        recs = [process_versions("controller")]
        recs += ray.get(self.actor_model_group.async_run_method(method_name="lgrpo_versions"))
        for engine in self.vllm_engines or []:
            recs.append(ray.get(engine.__ray_call__.remote(_engine_versions)))
        write_text_atomic(self.lgrpo_run.path / "engine_versions.json", json.dumps(recs, indent=1, sort_keys=True))

    def train_step(self, rollout_samples, global_step):
        status, step = super().train_step(rollout_samples, global_step)
        self.lgrpo_groups = []
        for k in sorted(k for k in status if k.startswith(GROUPS_STATUS_KEY)):
            self.lgrpo_groups += status.pop(k)
        return status, step

    def lgrpo_prepare_resume(self, checkpoint_states: dict) -> None:
        """On resume, drop metrics lines written after the checkpoint (they will be redone)."""
        if checkpoint_states.get("global_step", 0) > 0:
            state = checkpoint_states.get(LambdaTrainerMixin.STATE_KEY)
            if state is None:
                raise RuntimeError("the checkpoint has no λ state: it was not written by this launcher")
            self.lgrpo_run.truncate_metrics(int(state["optimizer_steps"]))

    def _compute_rollout_stats(self, experiences):
        """Before the batch is trained on: the stock stats, the package's, and the log-prob gap,
        which stops the run (``metrics.WeightSyncError``) when the engines lack the weights."""
        self.lgrpo_rollout += 1
        stats = super()._compute_rollout_stats(experiences)
        stats.update(rollout_stats(experiences, self.args.rollout.n_samples_per_prompt))
        gap = logprob_gap(experiences)
        stats.update(gap)
        check_logprob_gap(gap, self.lgrpo_settings.max_logprob_gap, self.lgrpo_rollout)
        return stats

    def save_logs_and_checkpoints(self, global_step, logs_dict=None, client_states=None):
        if self.lgrpo_run is not None and logs_dict:
            rec = record_from_status(logs_dict, rollout=global_step, method=self.lgrpo_settings.method,
                                     time_s=time.time() - self.lgrpo_t0)
            self.lgrpo_run.log(rec)
            for g in getattr(self, "lgrpo_groups", []):
                self.lgrpo_run.log_group(**g, rollout=global_step)
        self.lgrpo_groups = []
        return super().save_logs_and_checkpoints(global_step, logs_dict, client_states)


LambdaPPOTrainer = ray.remote(_LambdaPPOTrainerBase)


def _engine_versions(engine_actor) -> dict:
    """Run inside a vLLM engine actor (``__ray_call__``)."""
    return process_versions("vllm_engine")


def _asks_logprobs(sampling_params_cls):
    @functools.wraps(sampling_params_cls)
    def make(*a, **k):
        if k.get("logprobs") is None:
            k["logprobs"] = 1  # the sampled token's log-prob (vLLM returns it with the top-1)
        return sampling_params_cls(*a, **k)
    make._lgrpo_logprobs = True
    return make


def ask_rollout_logprobs() -> None:
    """``samples_generator.SamplingParams`` asks for the sampled tokens' log-probs (this process)."""
    if not getattr(_samples_mod.SamplingParams, "_lgrpo_logprobs", False):
        _samples_mod.SamplingParams = _asks_logprobs(_samples_mod.SamplingParams)


@functools.wraps(STOCK_CREATE_VLLM_ENGINES)
def create_vllm_engines(*args, **kwargs):
    """The stock ``create_vllm_engines`` with ``logprobs_mode`` set (its 12th argument): the
    engines return log-probs after temperature, comparable with the actor's."""
    args = list(args)
    if len(args) > 11:
        args[11] = args[11] or LOGPROBS_MODE
    else:
        kwargs["logprobs_mode"] = kwargs.get("logprobs_mode") or LOGPROBS_MODE
    return STOCK_CREATE_VLLM_ENGINES(*args, **kwargs)


def install() -> None:
    """Replace the stock classes where ``openrlhf.cli.train_ppo_ray`` will look them up."""
    _ppo_actor_mod.PolicyModelActor = LambdaPolicyModelActor
    _ppo_actor_mod.ActorPPOTrainer = LambdaActorPPOTrainer
    _ppo_trainer_mod.PPOTrainer = LambdaPPOTrainer
    _ray_mod.create_vllm_engines = create_vllm_engines
