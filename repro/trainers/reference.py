"""The reference RL trainer: one process, one file, written to be read.

    python -m repro.trainers.reference --task sum --method lambda --out runs/x
    python -m repro.trainers.reference --task sum --method lambda --out runs/x --resume   # continue
    python -m repro.trainers.reference ... --out runs/x --set steps=20 --set weighting.lambda.lr=10
    python -m repro.trainers.reference ... --out runs/x --tensorboard  # + TensorBoard events
    python -m repro.trainers.reference --config runs/x/config.yaml --out runs/y   # rerun a config

The config is ``repro/configs/cpu/base.yaml`` + ``tasks/<task>.yaml`` + ``methods/<method>.yaml``
+ ``--set`` (``load_cpu_config``; dotted keys reach into ``weighting:``).

One step of the loop (every piece of math comes from ``repro.objective``; nothing is re-derived):

1. rollout: P train-split problems, G samples each with Hugging Face ``generate`` (KV cache,
   temperature 1, no top-k/top-p), seeded by (seed, rollout index);
2. reward: the paper's rule (``repro.reward``: +1 correct, -0.5 wrong box, -1 no box);
3. advantage: ``eq3_group_advantages`` (group mean/std; ``adv_scale: none`` for Dr.GRPO);
4. ``ppo_epochs`` optimizer steps on that rollout, each minimising ``policy_loss`` with
   ``scope='group'`` (Eq. 7 exactly: every group divided by its own Σ|o_i|, groups averaged via
   ``step_denominator``), the method's token preference f, clip ε, optional k3 KL to the
   starting policy and entropy bonus; then ``WeightingState.step()`` once per optimizer step
   (steps λ's own SGD, lr 0.1 as in the paper, for a learnable method). The method, λ, the
   group info and the metrics line come from the trainer contract (``repro.trainers.contract``),
   which the OpenRLHF seams use too;
5. one metrics line per optimizer step through ``repro.runs.Run.log`` (the shared schema);
   a checkpoint every ``checkpoint_every`` steps and at the end; a greedy evaluation on held-out
   problems at the end (``eval/scores.json``) and, optionally (``eval_every`` > 0), at step 0
   and every ``eval_every`` steps on the first ``eval_every_problems`` of those problems
   (``eval/periodic.jsonl``, also ``eval_accuracy`` / ``eval_length`` in the metrics line).

Resume (``--resume``) reloads the newest checkpoint (weights, AdamW state, λ and its SGD state,
counters) and drops metrics lines after it. Because each rollout's randomness is seeded from
(seed, rollout index), the resumed run reproduces the metrics the uninterrupted run would have
written (up to ``time_s``), with the same number of torch threads.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import random
import shutil
import time
import typing
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from repro import config as layers
from repro.objective import PAPER_R, SCOPES, eq3_group_advantages, step_denominator
from repro.reward import reward
from repro.runs import Run, write_json_atomic, write_text_atomic
from repro.tasks.arith import classify_style, get_variant, sample_problems
from repro.trainers.contract import (GroupInfo, WeightingConfig, WeightingState, metrics_record,
                                     rollout_stats)
from repro.trainers.rollout import ASSET_DIR, evaluate, generate, load_policy, save_policy


# ----------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """One run's settings. Their values live in the YAML layers alone (``repro/configs/cpu/
    base.yaml`` + ``tasks/<task>.yaml`` + ``methods/<method>.yaml``, composed by
    ``load_cpu_config``; or a run's own ``config.yaml``): this class holds no defaults, so no
    second set of values can disagree with them. Every key is required; what each means is
    written beside its value in ``base.yaml``."""
    task: str
    init_checkpoint: str
    seed: int
    steps: int
    prompts_per_rollout: int  # P
    group_size: int  # G
    max_new_tokens: int
    temperature: float
    lr: float  # the policy's AdamW
    weight_decay: float
    ppo_epochs: int
    clip_low: float
    clip_high: float
    kl_coef: float
    entropy_coef: float
    grad_clip: float
    scope: str
    adv_scale: str
    weighting: WeightingConfig  # the method, its parameters and λ's SGD (repro.trainers.contract)
    checkpoint_every: int
    eval_every: int
    eval_every_problems: int
    eval_problems: int
    eval_seed: int
    threads: int
    device: str
    grader: str
    record_groups: int
    notes: str

    @property
    def method(self) -> str:
        return self.weighting.method

    def validate(self) -> "TrainConfig":
        get_variant(self.task)
        if self.group_size < 2:
            raise ValueError(f"group_size G = {self.group_size}: group-relative advantages and "
                             f"weights need G >= 2")
        self.weighting.weighting.check_group_size(self.group_size)  # e.g. λ-GRPO's r vs G
        for name in ("steps", "prompts_per_rollout", "ppo_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or not self.temperature > 0:
            raise ValueError("lr and temperature must be > 0")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if self.adv_scale not in ("std", "none"):
            raise ValueError(f"adv_scale must be 'std' or 'none', got {self.adv_scale!r}")
        if self.checkpoint_every < 0 or self.checkpoint_every % self.ppo_epochs:
            raise ValueError(f"checkpoint_every ({self.checkpoint_every}) must be >= 0 and a "
                             f"multiple of ppo_epochs ({self.ppo_epochs}): checkpoints fall on "
                             f"rollout boundaries")
        if self.device != "cpu":
            raise ValueError(f"device {self.device!r}: this trainer runs on CPU only so far "
                             f"(moving the model and rollout tensors to a GPU is not implemented)")
        if self.max_new_tokens < 0 or self.eval_problems < 0 or self.kl_coef < 0 or self.record_groups < 0:
            raise ValueError("max_new_tokens, eval_problems, kl_coef and record_groups must be >= 0")
        if self.eval_every < 0 or (self.eval_every and self.eval_every_problems < 1):
            raise ValueError(f"eval_every ({self.eval_every}) must be >= 0, and eval_every_problems "
                             f"({self.eval_every_problems}) >= 1 when it is > 0")
        ckpt = Path(self.checkpoint_path)
        if not (ckpt / "config.json").is_file():
            raise FileNotFoundError(f"init_checkpoint {ckpt} has no config.json: not a model "
                                    f"checkpoint (build one with python -m repro.trainers.pretrain)")
        return self

    @property
    def checkpoint_path(self) -> str:
        return self.init_checkpoint or str(ASSET_DIR)

    @property
    def budget(self) -> int:
        return self.max_new_tokens or get_variant(self.task).max_new_tokens

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        types = typing.get_type_hints(cls)
        unknown = sorted(set(d) - set(types))
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(types)}")
        missing = [k for k in types if k not in d]
        if missing:
            raise ValueError(f"config keys {missing} missing: a complete config is "
                             f"repro/configs/cpu/base.yaml + tasks/<task>.yaml + methods/<method>.yaml "
                             f"(load_cpu_config) or a run's config.yaml")
        out = {}
        for k, v in d.items():
            if k == "weighting":  # method and λ's SGD from the YAML too, not from defaults: complete
                out[k] = v if isinstance(v, WeightingConfig) else WeightingConfig.from_dict(v, complete=True)
                continue
            typ = types[k]
            if typ is float and isinstance(v, (int, str)) and not isinstance(v, bool):
                try:
                    v = float(v)  # YAML reads "1e-4" (no dot) as a string
                except ValueError:
                    raise ValueError(f"config key {k!r} must be a number, got {v!r}") from None
            elif typ in (int, float) and not isinstance(v, (int, float)) or isinstance(v, bool) and typ is not bool:
                raise ValueError(f"config key {k!r} must be a number, got {v!r}")
            out[k] = v
        return cls(**out)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None) -> "TrainConfig":
        """One complete YAML file (e.g. a run's ``config.yaml``) plus overrides."""
        return cls.from_dict(layers.compose([path], overrides))

    def to_dict(self) -> dict:
        """The resolved config as plain data (what the run folder's config.yaml holds)."""
        d = dataclasses.asdict(self)
        d["weighting"] = self.weighting.to_dict()
        return d


def load_cpu_config(task: str, method: str, overrides: dict | None = None) -> TrainConfig:
    """The CPU config of (task, method): ``repro/configs/cpu/base.yaml`` + ``tasks/<task>.yaml`` +
    ``methods/<method>.yaml`` + ``overrides`` (keys may be dotted: ``weighting.lambda.lr``)."""
    return TrainConfig.from_dict(layers.compose(layers.cpu_layers(task, method), overrides))


parse_overrides = layers.parse_overrides


# ----------------------------------------------------------------------------------------------
# log-probabilities of the response tokens
# ----------------------------------------------------------------------------------------------
def response_logp(model, ro, with_entropy: bool = False):
    """Per-token log-prob (and entropy) of the rollout's response tokens under ``model``."""
    ids = torch.cat([ro.prompt_ids, ro.response_ids], dim=1)
    att = torch.cat([ro.prompt_mask, ro.response_mask], dim=1)
    pos = (att.cumsum(-1) - 1).clamp_min(0)  # as generate() numbers left-padded prompts
    P = ro.prompt_ids.shape[1]
    logits = model(input_ids=ids, attention_mask=att, position_ids=pos).logits[:, P - 1:-1]
    logits = logits.float()
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, ro.response_ids.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return logp, None
    ent = -(logp_all.exp() * logp_all).sum(-1)
    return logp, ent


def optimizer_step(model, opt, ws: WeightingState, cfg: "TrainConfig", ro, old_logp, adv, info: GroupInfo,
                   denom: float, ref_logp=None):
    """One PPO optimizer step on a rollout (step 4 of the loop; also what ``repro.speed.step``
    times): forward, ``policy_loss`` with the method's f and λ, backward, clip, AdamW, λ's SGD.
    Returns (loss output, grad norm, the λ used, λ's applied gradient or None)."""
    logp, ent = response_logp(model, ro, with_entropy=True)
    out = ws.loss(  # repro.objective.policy_loss with the method's f and λ
        logp, old_logp, adv, ro.response_mask, info, denominator=denom, scope=cfg.scope,
        clip_low=cfg.clip_low, clip_high=cfg.clip_high, ref_logp=ref_logp,
        kl_coef=cfg.kl_coef, entropy=ent if cfg.entropy_coef else ent.detach(),
        entropy_coef=cfg.entropy_coef)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(
        model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf")))
    opt.step()
    lam_used = ws.value  # the λ this step's weights were computed with
    lam_grad = ws.step()  # λ's SGD step (None for a fixed-weight method)
    return out, grad_norm, lam_used, lam_grad


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
def save_checkpoint(run: Run, model, tok, opt, ws: WeightingState, step: int, rollout: int,
                    elapsed: float) -> Path:
    final = run.checkpoint_dir(step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_policy(model, tok, tmp)
    torch.save({"optimizer": opt.state_dict(), "lambda": ws.state_dict(), "step": step,
                "rollout": rollout, "elapsed": elapsed}, tmp / "trainer_state.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest = run.checkpoints_dir / "latest"
    tmp_link = run.checkpoints_dir / ".latest.tmp"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    os.symlink(final.name, tmp_link)
    os.replace(tmp_link, latest)
    return final


def latest_checkpoint(run: Run) -> Path | None:
    latest = run.checkpoints_dir / "latest"
    return latest.resolve() if latest.exists() else None


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
def _tensorboard_writer(run: Run, step: int):
    """TensorBoard event files in ``<run>/tensorboard/`` (torch's ``SummaryWriter``, which needs
    the ``tensorboard`` package). On a resume, events after ``step`` are purged."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # the package is in the CPU set; say what is missing
        raise ImportError(f"--tensorboard needs the 'tensorboard' package ({e})") from None
    return SummaryWriter(str(run.path / "tensorboard"), purge_step=step or None)


def _tb_scalars(tb, prefix: str, rec: dict, step: int) -> None:
    if tb is None:
        return
    for k, v in rec.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step",) and math.isfinite(v):
            tb.add_scalar(f"{prefix}/{k}", v, step)
    tb.flush()


def train(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False,
          progress: bool = True, tensorboard: bool = False) -> Run:
    """Train one run into ``out_dir``; returns the ``Run``. See the module docstring.
    ``tensorboard``: also write every metrics line, in-training and final evaluation as
    TensorBoard scalars under ``<run>/tensorboard/`` (``train/<key>``, ``eval/<key>``,
    ``final_eval/<key>``); the JSONL stays the record the package reads."""
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    run = Run(out_dir)
    model, tok = load_policy(cfg.checkpoint_path)
    ref = None
    if cfg.kl_coef > 0:
        ref = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ws = WeightingState(cfg.weighting)  # the method, λ and its SGD, the f statistics
    step = rollout = 0
    elapsed0 = 0.0
    ckpt = latest_checkpoint(run) if resume else None
    if resume and ckpt is None:
        raise FileNotFoundError(f"--resume: no checkpoint under {run.checkpoints_dir}")
    if ckpt is not None:
        from transformers import Qwen2ForCausalLM

        model = Qwen2ForCausalLM.from_pretrained(ckpt)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
        opt.load_state_dict(state["optimizer"])
        ws.load_state_dict(state["lambda"])
        step, rollout, elapsed0 = state["step"], state["rollout"], state["elapsed"]
        run.truncate_metrics(step)
    else:
        if run.metrics_path.exists():
            raise FileExistsError(f"{run.metrics_path} exists: use --resume or a new --out")
        run = Run.create(out_dir, cfg.to_dict(), seed=cfg.seed, method=cfg.method,
                         extra_meta={"task": cfg.task, "trainer": "repro.trainers.reference",
                                     "init_checkpoint": cfg.checkpoint_path})
    tb = _tensorboard_writer(run, step) if tensorboard else None
    model.train()
    P, G, B = cfg.prompts_per_rollout, cfg.group_size, cfg.prompts_per_rollout * cfg.group_size
    eval_set = sample_problems(max(cfg.eval_problems, cfg.eval_every_problems if cfg.eval_every else 0),
                               random.Random(cfg.eval_seed), "test")
    periodic_set = eval_set[:cfg.eval_every_problems] if cfg.eval_every else []
    periodic_name = f"{cfg.task}_heldout{cfg.eval_every_problems}"

    def periodic_eval(at_step: int) -> dict:
        # greedy decoding draws no random numbers, and every rollout reseeds torch and its own
        # RNG, so this evaluation leaves training exactly as it would be without it (tested)
        ev = evaluate(model, tok, periodic_set, max_new_tokens=cfg.budget)
        model.train()
        run.log_periodic_eval(step=at_step, benchmark=periodic_name, ev=ev)
        _tb_scalars(tb, "eval", {k: ev[k] for k in ("accuracy", "response_length_mean", "truncated_rate")},
                    at_step)
        return ev

    if cfg.eval_every and step == 0:
        periodic_eval(0)  # the starting checkpoint, so the curves start where training does
    t0 = time.time() - elapsed0
    bar = tqdm(total=cfg.steps, initial=step, desc=f"{cfg.task}/{cfg.method}/s{cfg.seed}",
               disable=not progress, dynamic_ncols=True)
    while step < cfg.steps:
        # 1. rollout -----------------------------------------------------------------------
        rollout += 1
        rng = random.Random(f"{cfg.seed}-{rollout}")
        torch.manual_seed(cfg.seed * 1_000_003 + rollout)
        problems = sample_problems(P, rng, "train")
        ro = generate(model, tok, problems, n=G, max_new_tokens=cfg.budget,
                      temperature=cfg.temperature)
        # 2. reward, 3. advantage ------------------------------------------------------------
        rewards = torch.tensor([reward(t, problems[i // G].answer, cfg.grader)
                                for i, t in enumerate(ro.texts)]).view(P, G)
        adv = eq3_group_advantages(rewards, scale=cfg.adv_scale)
        lengths = ro.lengths.view(P, G).float()
        info = GroupInfo.from_groups(lengths)  # each sample carries its group's lengths
        denom = step_denominator(cfg.scope, lengths)
        with torch.no_grad():
            old_logp, _ = response_logp(model, ro)
            ref_logp = response_logp(ref, ro)[0] if ref is not None else None
        stats = rollout_stats(rewards, lengths, adv, ro.truncated)
        styles = [classify_style(t) for t in ro.texts]
        # 4. PPO epochs: one optimizer step each -------------------------------------------
        for epoch in range(cfg.ppo_epochs):
            if step >= cfg.steps:
                break
            out, grad_norm, lam_used, lam_grad = optimizer_step(
                model, opt, ws, cfg, ro, old_logp, adv.reshape(-1), info, denom, ref_logp)
            step += 1
            L = out.surrogate_sums.view(P, G)
            for g in range(min(cfg.record_groups, P)):
                run.log_group(step=step, lam=lam_used, r=getattr(ws.weighting.params, "r", PAPER_R),
                              lengths=lengths[g].tolist(), L=L[g].tolist(), method=cfg.method,
                              sigma=getattr(ws.weighting.params, "sigma", "sample"))
            # 5. metrics -------------------------------------------------------------------
            rec = metrics_record(
                step=step, rollout=rollout, method=cfg.method, lam=ws.value, lam_grad=lam_grad,
                f=ws.pop_fstats(), stats=stats, time_s=time.time() - t0,
                entropy=out.entropy, kl=out.kl, clip_ratio=out.clip_fraction, grad_norm=grad_norm,
                # extras (allowed by the schema): the task's style mix and the epoch
                extras={"task": cfg.task, "ppo_epoch": epoch, "loss": float(out.loss.detach()),
                        **{f"style_{s}": styles.count(s) / B for s in ("direct", "terse", "verbose", "other")}})
            if cfg.eval_every and step % cfg.eval_every == 0:
                ev = periodic_eval(step)
                rec["eval_accuracy"] = ev["accuracy"]
                rec["eval_length"] = ev["response_length_mean"]
            run.log(rec)
            _tb_scalars(tb, "train", rec, step)
            bar.update(1)
            bar.set_postfix(acc=f"{rec['accuracy']:.2f}", len=f"{rec['response_length_mean']:.1f}",
                            lam=f"{rec['lambda']:.3f}")
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            save_checkpoint(run, model, tok, opt, ws, step, rollout, time.time() - t0)
    bar.close()
    save_checkpoint(run, model, tok, opt, ws, step, rollout, time.time() - t0)
    summary = {"steps": step, "rollouts": rollout, "lambda": ws.value,
               "wall_s": round(time.time() - t0, 1)}
    if cfg.eval_problems:
        ev = evaluate(model, tok, eval_set[:cfg.eval_problems], max_new_tokens=cfg.budget)
        write_eval(run, ev, cfg)
        summary["eval_accuracy"] = ev["accuracy"]
        _tb_scalars(tb, "final_eval", {k: ev[k] for k in ("accuracy", "response_length_mean",
                                                          "truncated_rate")}, step)
    if tb is not None:
        tb.close()
    run.mark_done(summary)
    return run


def write_eval(run: Run, ev: dict, cfg: TrainConfig) -> None:
    """``eval/scores.json`` (greedy, held-out) and a one-row ``eval/scores.csv``."""
    bench = f"{cfg.task}_heldout"
    scores = {"decoding": "greedy", "max_new_tokens": cfg.budget, "eval_seed": cfg.eval_seed,
              "benchmarks": {bench: ev}}
    write_json_atomic(run.eval_dir / "scores.json", scores)
    cols = ["benchmark", "n", "accuracy", "reward_mean", "response_length_mean", "truncated_rate"]
    row = [bench] + [str(ev[c]) for c in cols[1:]]
    write_text_atomic(run.eval_dir / "scores.csv", ",".join(cols) + "\n" + ",".join(row) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", help="CPU config: repro/configs/cpu/tasks/<task>.yaml (with --method)")
    ap.add_argument("--method", help="CPU config: repro/configs/cpu/methods/<method>.yaml (with --task)")
    ap.add_argument("--config", help="instead of --task/--method: one complete YAML file (keys of "
                                     "TrainConfig), e.g. a run's config.yaml")
    ap.add_argument("--out", required=True, help="run folder")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (repeatable)")
    ap.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--tensorboard", action="store_true",
                    help="also write TensorBoard event files to <out>/tensorboard/ "
                         "(view: tensorboard --logdir <out>)")
    a = ap.parse_args(argv)
    if (a.config is None) == (a.task is None or a.method is None) or (a.config and (a.task or a.method)):
        ap.error("give --task and --method, or --config")
    with layers.config_errors("python -m repro.trainers.reference"):  # one line, exit code 2
        overrides = parse_overrides(a.set)
        cfg = (TrainConfig.from_yaml(a.config, overrides) if a.config
               else load_cpu_config(a.task, a.method, overrides)).validate()
    try:
        run = train(cfg, a.out, resume=a.resume, progress=not a.no_progress, tensorboard=a.tensorboard)
    except FileExistsError as e:  # a finished or started run in --out: one line, exit code 2
        raise SystemExit(f"python -m repro.trainers.reference: {e}") from None
    print(f"done: {run.path} {(run.path / 'DONE').read_text().strip()}")


if __name__ == "__main__":
    main()
