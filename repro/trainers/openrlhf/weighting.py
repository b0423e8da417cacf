"""The λ-weighted loss at OpenRLHF's seams, in pure torch (no OpenRLHF import here).

The seams hand the trainer contract (``repro.trainers.contract``) what it needs and use its
pieces: ``GroupInfo`` (group lengths and position per sample), ``WeightingState`` (the method,
λ and its SGD, the optimizer-step count, the f statistics, the λ checkpoint format). Three
pieces, each used by a subclass in ``patches.py`` and tested on CPU with the real OpenRLHF
classes:

1. ``attach_group_info``: after OpenRLHF computed the group advantages, give every sample the
   response lengths of its whole group and its position in it (``Experience.info``). Each sample
   then carries what its weight f_i(λ) needs, so the weight is exact however the replay buffer
   shuffles samples into micro-batches and ranks.
2. ``WeightedPolicyLoss``: wraps the *stock* ``PolicyLoss``. It multiplies each sample's
   advantages by f_i(λ) from ``repro.objective.sample_weights`` and calls the stock loss. For
   f > 0 this is exact: min(ρ·fA, clip(ρ)·fA) = f·min(ρA, clip(ρ)A), dual-clip likewise, and the
   clip-ratio metric is unchanged. λ gets its gradient because PolicyLoss does not detach
   advantages.
3. ``LambdaTrainerMixin``: put before ``ActorPPOTrainer`` in the bases. It swaps the loss for the
   wrapper, takes the group info out of ``Experience.info`` before the stock ``training_step``
   (which would log every info entry as a scalar), and at each gradient-accumulation boundary
   averages λ's gradient over the data-parallel group and steps λ's own SGD
   (``WeightingState.step``), outside DeepSpeed: no ZeRO, Adam, scheduler or
   gradient clipping touches λ.

Normalisation (``scope``)
-------------------------
OpenRLHF 0.11.2's token-mean divides the per-token loss by the token count of the whole
optimizer-step window, summed over DP ranks (``aggregate_loss``). With the wrapper the step loss is

    batch scope:  -(1/T_step) Σ_i f_i L_i                        (λ = 0 is stock DAPO)

which is ``repro.objective.policy_loss(scope="batch", denominator=T_step)``. The paper's Eq. 7
divides each group by its own Σ|o|. ``scope="group"`` (the paper configs) gives exactly

    group scope:  -(G/N_step) Σ_i f_i L_i / Σ_{j in group(i)} |o_j|

(``policy_loss(scope="group", denominator=N_step/G)``) by scaling f_i with T_step·G /
(N_step·Σ_group|o|), from the window totals OpenRLHF already passes to the loss. N_step/G is the
number of groups in the step, and the loss is Eq. 7 averaged over them, because every optimizer
step holds whole groups: section 4 (``GroupShuffleSampler``, used by ``patches.py``) and the
launcher's layout check. See paper_artifacts/choices.md, "normaliser of the step".
"""
from __future__ import annotations

import itertools

import torch
import torch.nn as nn

from repro.objective import LearnableLambda, as_weighting, sample_weights, surrogate_from_log_ratio
from repro.trainers.contract import GroupInfo, WeightingState, check_positions, rows_as_groups

GROUP_LEN_KEY = "lgrpo_group_len"  # [B, G] float: the lengths of the sample's whole group
GROUP_POS_KEY = "lgrpo_group_pos"  # [B] long: the sample's position in its group
GROUP_ID_KEY = "lgrpo_group_id"  # [B] long: the sample's group in its rollout batch (rollout position // G)
GROUPS_STATUS_KEY = "lgrpo/groups/rank"  # + rank: the groups a rank recorded, in ppo_train's status


# ----------------------------------------------------------------------------------------------
# 1. the experience extension
# ----------------------------------------------------------------------------------------------
def rollout_positions(experiences, group_size: int) -> torch.Tensor:
    """Each row's position in rollout order (``experience.index``, concatenated over the
    batches), where the G samples of a prompt are consecutive (the layout OpenRLHF's group
    statistics use). Checked to be a permutation of 0..N-1 with N a multiple of G."""
    idx = torch.tensor(list(itertools.chain.from_iterable(e.index for e in experiences)), dtype=torch.long)
    return check_positions(idx, group_size)


def response_lengths(experiences) -> torch.Tensor:
    """Each row's number of action tokens, the count the loss normalises by (rows as given)."""
    return torch.cat([e.action_mask.reshape(e.action_mask.shape[0], -1).sum(-1)
                      for e in experiences]).to("cpu", torch.float32)


as_groups = rows_as_groups  # per-row values -> [groups, G] in rollout order


def attach_group_info(experiences, group_size: int) -> None:
    """Attach group lengths and positions to each Experience's ``info`` (in place).

    ``experiences`` are OpenRLHF ``Experience`` batches after ``compute_advantages_and_returns``;
    ``experience.index`` lists each row's position in rollout order (``rollout_positions``).
    """
    info = GroupInfo.from_positions(response_lengths(experiences), rollout_positions(experiences, group_size),
                                    group_size)
    for e, part in zip(experiences, info.split([len(e.index) for e in experiences])):
        e.info[GROUP_LEN_KEY] = part.group_lengths
        e.info[GROUP_POS_KEY] = part.index
        e.info[GROUP_ID_KEY] = part.group_id


def pop_group_info(info: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Take the group info out of a (re-batched) ``Experience.info``.

    OpenRLHF's replay buffer splits an Experience into samples and re-batches non-scalar info
    values as Python lists of per-sample tensors; both forms are accepted."""
    if GROUP_LEN_KEY not in info or GROUP_POS_KEY not in info:
        raise KeyError(
            f"Experience.info lacks {GROUP_LEN_KEY!r}/{GROUP_POS_KEY!r}: the experience maker was "
            "not patched (start through repro.trainers.openrlhf.launch)")
    gl, pos = info.pop(GROUP_LEN_KEY), info.pop(GROUP_POS_KEY)
    info.pop(GROUP_ID_KEY, None)  # used only by the replay buffer's group shuffle
    if isinstance(gl, (list, tuple)):
        gl = torch.stack([torch.as_tensor(x) for x in gl])
    if isinstance(pos, (list, tuple)):
        pos = torch.stack([torch.as_tensor(x) for x in pos]).reshape(-1)
    return gl.to(torch.float32), pos.to(torch.long)


# ----------------------------------------------------------------------------------------------
# 2. the loss wrapper
# ----------------------------------------------------------------------------------------------
class WeightedPolicyLoss(nn.Module):
    """Multiplies each sample's advantages by f_i(λ) and calls the stock ``PolicyLoss``.

    Call ``set_group_info(group_lengths [B, G], positions [B])`` before each forward. The stock
    loss must aggregate per token (``token_level_loss=True``, OpenRLHF's ``token-mean``), since a
    per-sequence mean would not turn the weights into Eq. 7.
    """

    def __init__(self, stock: nn.Module, *, method, lam: LearnableLambda | None = None,
                 scope: str = "batch", **params):
        """``method``: a ``repro.objective.Weighting``, or a method name with its parameters as
        keywords (``repro.objective.as_weighting``); ``lam``: λ for a learnable method."""
        super().__init__()
        if not getattr(stock, "token_level_loss", True):
            raise ValueError("the λ weights need OpenRLHF's token-level loss "
                             "(--actor.loss_agg_mode token-mean, policy_loss_type ppo)")
        if scope not in ("batch", "group"):
            raise ValueError(f"scope must be 'batch' or 'group', got {scope!r}")
        self.weighting = as_weighting(method, **params)
        if self.weighting.learnable and lam is None:
            raise ValueError(f"method {self.weighting.name!r} learns λ: it needs a LearnableLambda")
        self.stock = stock
        self.lam, self.scope = lam, scope
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last_weights: torch.Tensor | None = None
        self.last_surrogate_sums: torch.Tensor | None = None  # L_i of the last micro-batch (float64, detached)

    def set_group_info(self, group_lengths: torch.Tensor, positions: torch.Tensor) -> None:
        self._pending = (group_lengths, positions)

    def clear(self) -> None:
        self._pending = None

    def surrogate_sums(self, log_probs, old_log_probs, advantages, action_mask) -> torch.Tensor:
        """L_i = Σ_t min(ρA, clip(ρ)A) per sample with the stock loss's clip settings and log-ratio
        clamp (``models/loss.py:185-207``), unweighted: what Eq. 20 and ``groups.jsonl`` take."""
        with torch.no_grad():
            log_ratio = (log_probs - old_log_probs).double().clamp(min=-20.0, max=20.0)
            surr, _ = surrogate_from_log_ratio(log_ratio, advantages.double(), clip_low=self.stock.clip_eps_low,
                                               clip_high=self.stock.clip_eps_high, dual_clip=self.stock.dual_clip)
            if action_mask is not None:
                surr = surr * action_mask.reshape(surr.shape).double()
            return surr.reshape(surr.shape[0], -1).sum(-1).cpu()

    def weights(self, group_lengths: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        lam = self.lam.param if self.lam is not None else 0.0
        return sample_weights(self.weighting, group_lengths, positions, lam=lam)

    def forward(self, log_probs, old_log_probs, advantages, action_mask=None, rollout_log_probs=None,
                dp_size: int = 1, batch_num_tokens=None, global_batch_size=None):
        if self._pending is None:
            raise RuntimeError("WeightedPolicyLoss: set_group_info() was not called for this micro-batch")
        gl, pos = self._pending
        self._pending = None
        gl = gl.to(advantages.device, torch.float64)  # weights in float64 (B x G values: cheap)
        pos = pos.to(advantages.device)
        if gl.shape[0] != advantages.shape[0]:
            raise ValueError(f"group info for {gl.shape[0]} samples, advantages for {advantages.shape[0]}")
        if action_mask is not None:
            own = gl.gather(1, pos.view(-1, 1)).squeeze(1)
            n_tok = action_mask.reshape(action_mask.shape[0], -1).sum(-1).to(own.dtype)
            if not torch.equal(own, n_tok):
                raise ValueError("a sample's own group length differs from its action-token count")
        f = self.weights(gl, pos)
        if not bool((f.detach() > 0).all()):
            raise ValueError("a token-preference weight is <= 0: multiplying advantages by it "
                             "would not equal weighting the clipped surrogate")
        w = f
        if self.scope == "group":
            if batch_num_tokens is None or global_batch_size is None:
                raise ValueError("scope 'group' needs the step's batch_num_tokens and global_batch_size")
            G = gl.shape[1]
            ratio = torch.as_tensor(batch_num_tokens, dtype=torch.float64, device=gl.device) / \
                torch.as_tensor(global_batch_size, dtype=torch.float64, device=gl.device)
            w = f * (ratio * G / gl.sum(dim=1))
        self.last_weights = f.detach()
        self.last_surrogate_sums = self.surrogate_sums(log_probs, old_log_probs, advantages, action_mask)
        adv = advantages * w.to(advantages.dtype).view(-1, *([1] * (advantages.dim() - 1)))
        return self.stock(log_probs, old_log_probs, adv, action_mask=action_mask,
                          rollout_log_probs=rollout_log_probs, dp_size=dp_size,
                          batch_num_tokens=batch_num_tokens, global_batch_size=global_batch_size)


# ----------------------------------------------------------------------------------------------
# 3. λ in the actor trainer
# ----------------------------------------------------------------------------------------------
class LambdaTrainerMixin:
    """Mixed in before OpenRLHF's ``ActorPPOTrainer``: ``class T(LambdaTrainerMixin, ActorPPOTrainer)``.

    Uses from the stock trainer only: ``self.actor_loss_fn`` (the stock PolicyLoss, replaced by
    the wrapper), ``self.actor.model`` (the DeepSpeed engine: ``is_gradient_accumulation_boundary``),
    ``self.strategy`` (``ds_device_mesh['dp']``), ``self.args`` and ``self.replay_buffer``.
    """

    STATE_KEY = "lgrpo"

    def setup_lambda(self, settings) -> None:
        """``settings``: ``repro.trainers.openrlhf.settings.LambdaSettings``."""
        args = self.args
        if args.actor.loss_agg_mode != "token-mean" or args.actor.policy_loss_type != "ppo":
            raise ValueError("λ weighting needs --actor.loss_agg_mode token-mean and --actor.policy_loss_type ppo")
        if settings.learnable and getattr(args.ds, "param_dtype", "bf16") != "bf16":
            raise ValueError("learnable λ needs --ds.param_dtype bf16: an fp16 loss scale would leak into λ's gradient")
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        self.lgrpo_settings = settings
        self.lgrpo = WeightingState(settings.weighting, device=device)  # method, λ, steps, f statistics
        self.actor_loss_fn = WeightedPolicyLoss(self.actor_loss_fn, method=self.lgrpo.weighting,
                                                lam=self.lgrpo.lam, scope=settings.scope)
        self.lgrpo_grads: list[float] = []
        self.lgrpo_pending: list[tuple] = []  # (group id, position, group lengths, L_i) of this optimizer step
        self.lgrpo_groups: list[dict] = []  # whole groups recorded in this ppo_train (groups.jsonl lines)

    @property
    def lgrpo_lambda(self) -> LearnableLambda | None:
        return self.lgrpo.lam

    @property
    def lgrpo_optimizer_steps(self) -> int:
        return self.lgrpo.optimizer_steps

    @lgrpo_optimizer_steps.setter
    def lgrpo_optimizer_steps(self, n: int) -> None:
        self.lgrpo.optimizer_steps = int(n)

    # the data-parallel group λ is averaged over (ring-attention / TP duplicates see the same data)
    def lgrpo_dp_group(self):
        mesh = getattr(self.strategy, "ds_device_mesh", None)
        return mesh["dp"].get_group() if mesh is not None else None

    def lgrpo_is_boundary(self, step: int) -> bool:
        if self.args.train.dynamic_batch_enable:
            return bool(self.replay_buffer.dynamic_optimizer_step[step])
        return bool(self.actor.model.is_gradient_accumulation_boundary())

    def training_step(self, experience, kl_ctl, step, loss_batch_info=None):
        gid = experience.info.get(GROUP_ID_KEY)
        gl, pos = pop_group_info(experience.info)
        boundary = self.lgrpo_is_boundary(step)  # asked before DeepSpeed's step() advances its counter
        self.actor_loss_fn.set_group_info(gl, pos)
        lam_used = self.lgrpo.value
        try:
            status = super().training_step(experience, kl_ctl, step, loss_batch_info)
        finally:
            self.actor_loss_fn.clear()
        if self.actor_loss_fn.last_weights is not None:
            self.lgrpo.fstats.add(self.actor_loss_fn.last_weights)
            self.actor_loss_fn.last_weights = None
        L, self.actor_loss_fn.last_surrogate_sums = self.actor_loss_fn.last_surrogate_sums, None
        if L is not None and gid is not None:
            if isinstance(gid, (list, tuple)):
                gid = torch.stack([torch.as_tensor(x) for x in gid])
            for g, p, row, li in zip(torch.as_tensor(gid).reshape(-1).tolist(), pos.tolist(), gl.tolist(), L.tolist()):
                self.lgrpo_pending.append((int(g), int(p), row, li))
        if boundary:
            grad = self.lgrpo.step(group=self.lgrpo_dp_group())  # counts the step; None: fixed weights
            if grad is not None:
                self.lgrpo_grads.append(grad)
            self.lgrpo_record_step(lam_used, grad)
        return status

    def lgrpo_record_step(self, lam_used: float, grad: float | None) -> None:
        """The whole groups of the optimizer step just taken (up to ``record_groups`` per rank),
        as ``repro.runs.Run.log_group`` lines: lengths, L_i, the λ they were weighted with and
        the λ gradient the step applied (data-parallel mean)."""
        pending, self.lgrpo_pending = self.lgrpo_pending, []
        keep = int(getattr(self.lgrpo_settings, "record_groups", 0))
        groups: dict[int, dict[int, tuple]] = {}
        for g, p, row, li in pending:
            groups.setdefault(g, {})[p] = (row, li)
        whole = [g for g in sorted(groups) if len(groups[g]) == len(next(iter(groups[g].values()))[0])]
        if keep <= 0 or not whole:
            return
        import torch.distributed as dist

        world = dist.get_world_size(self.lgrpo_dp_group()) if dist.is_initialized() else 1
        rank = dist.get_rank() if dist.is_initialized() else 0
        params = self.lgrpo.weighting.params
        for g in whole[:keep]:
            members = groups[g]
            self.lgrpo_groups.append(dict(
                step=self.lgrpo.optimizer_steps, lam=lam_used, r=float(getattr(params, "r", 0.0)),
                lengths=members[0][0], L=[members[p][1] for p in range(len(members))],
                method=self.lgrpo.weighting.name, sigma=str(getattr(params, "sigma", "sample")),
                lambda_grad=grad, groups_in_step=len(whole) * world, rank=rank, group=g))

    def ppo_train(self, *a, **k):
        self.lgrpo.fstats.reset()
        self.lgrpo_grads = []
        self.lgrpo_pending, self.lgrpo_groups = [], []
        status = super().ppo_train(*a, **k)
        status.update(self.lgrpo_status())
        if self.lgrpo_groups:
            import torch.distributed as dist

            rank = dist.get_rank() if dist.is_initialized() else 0
            status[f"{GROUPS_STATUS_KEY}{rank}"] = self.lgrpo_groups  # each rank's own key: the controller merges dicts
        return status

    def lgrpo_status(self) -> dict:
        out = {f"lgrpo/{k}": v for k, v in self.lgrpo.fstats.reduced(self.lgrpo_dp_group()).items()}
        out["lgrpo/optimizer_steps"] = self.lgrpo.optimizer_steps
        out["lgrpo/lambda"] = self.lgrpo.value
        if self.lgrpo_grads:
            out["lgrpo/lambda_grad"] = self.lgrpo_grads[-1]
            out["lgrpo/lambda_grad_mean"] = sum(self.lgrpo_grads) / len(self.lgrpo_grads)
        return out

    # checkpoints: the contract's λ state (λ, its SGD state, the optimizer-step count, the
    # method) travels in DeepSpeed's client_states
    def lgrpo_state(self) -> dict:
        return self.lgrpo.state_dict()

    def lgrpo_load_state(self, state: dict) -> None:
        self.lgrpo.load_state_dict(state)


# ----------------------------------------------------------------------------------------------
# 4. whole groups in every optimizer step (the replay buffer's order)
# ----------------------------------------------------------------------------------------------
def group_members(items) -> list[list[int]]:
    """The replay-buffer rows of each group, members in group-position order, groups in id order.

    ``items`` are the single-sample Experiences of one rank's replay buffer (``NaiveReplayBuffer.
    items``), whose ``info`` holds the keys ``attach_group_info`` wrote. Raises if a group is not
    whole on this rank: then no order of the buffer can keep groups inside optimizer steps."""
    groups: dict[int, dict[int, int]] = {}
    G = None
    for row, it in enumerate(items):
        info = it.info
        if GROUP_ID_KEY not in info or GROUP_POS_KEY not in info or GROUP_LEN_KEY not in info:
            raise KeyError(f"replay-buffer row {row} lacks the group info ({GROUP_ID_KEY!r}, {GROUP_POS_KEY!r}, "
                           f"{GROUP_LEN_KEY!r}): the experience maker was not patched")
        g = int(torch.as_tensor(info[GROUP_LEN_KEY]).numel())
        if G is None:
            G = g
        elif g != G:
            raise ValueError(f"replay buffer mixes group sizes {G} and {g}")
        gid, pos = int(info[GROUP_ID_KEY]), int(info[GROUP_POS_KEY])
        members = groups.setdefault(gid, {})
        if pos in members:
            raise ValueError(f"group {gid} has two samples at position {pos}")
        members[pos] = row
    partial = [gid for gid, m in groups.items() if len(m) != G]
    if partial:
        raise ValueError(f"this rank's replay buffer holds {len(partial)} partial group(s) (e.g. group {partial[0]} "
                         f"with {len(groups[partial[0]])} of {G} samples): the rollout was not split into whole "
                         "groups per rank (see repro.trainers.openrlhf.launch.layout_problems)")
    return [[groups[gid][p] for p in range(G)] for gid in sorted(groups)]


def check_step_layout(n_samples: int, micro_batch: int, gas: int, group_size: int) -> None:
    """One rank's replay buffer must fill whole optimizer steps (``micro_batch × gas`` samples)
    that hold whole groups; otherwise ranks run different numbers of steps (and collectives)
    or a group straddles two optimizer steps."""
    per_step = int(micro_batch) * int(gas)
    if per_step % group_size:
        raise ValueError(f"an optimizer step holds {micro_batch} x {gas} = {per_step} samples per rank, "
                         f"not a multiple of the group size {group_size}")
    if n_samples % per_step:
        raise ValueError(f"this rank holds {n_samples} samples, not a whole number of optimizer steps "
                         f"of {per_step}: ranks would run different numbers of steps")


class GroupShuffleSampler(torch.utils.data.Sampler):
    """Shuffles whole groups instead of samples: the replay buffer is read group after group
    (in a random group order, each group's members together), so with optimizer steps of a
    multiple of G samples per rank every step holds whole groups, as veRL's mini-batches do.

    Like ``torch.utils.data.RandomSampler`` without a generator, each pass draws its seed from
    torch's default generator (so ``train.seed`` makes it reproducible and each epoch differs)."""

    def __init__(self, groups: list[list[int]], generator: torch.Generator | None = None):
        self.groups = [list(g) for g in groups]
        self.generator = generator

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)

    def __iter__(self):
        gen = self.generator
        if gen is None:
            gen = torch.Generator()
            gen.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        for k in torch.randperm(len(self.groups), generator=gen).tolist():
            yield from self.groups[k]
