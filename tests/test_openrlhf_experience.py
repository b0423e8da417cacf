"""The experience maker on the path the PPO trainer calls (``ppo_trainer.py:216``:
``experience_maker.make_experience_batch(rollout_samples)``), from canned vLLM responses.

    canned ``generate_responses`` dicts -> SamplesGenerator._process_response_into_experience
    -> LambdaExperienceMaker.make_experience_batch (stock split_rollout_samples, make_experience,
    compute_advantages_and_returns + the package's group info)

The actor's log-probs come from OpenRLHF's real ``Actor`` around a tiny Qwen2 made from a config.
Expected advantages, group lengths and positions are computed here from the canned responses
alone (rewards and response spans, with ``statistics``), not from OpenRLHF's tensors.

Stand-ins (no Ray cluster: a local ``ray.init`` costs ~20 s on this machine):

| what | where (openrlhf 0.11.2) | why |
|---|---|---|
| ``ray.put`` / ``ray.get`` -> identity, in ``experience_maker``'s namespace only | ``trainer/ppo_utils/experience_maker.py:104-110,121`` | the maker only moves values through the object store |
| actor group with ``async_run_method_batch`` / ``async_run_method`` | ``trainer/ray/launcher.py:319-373`` (same chunking over 2 ranks) | a RayActorGroup needs GPU placement groups; here each chunk runs ``Actor.forward`` in process |
| ``flash_attn``, ``vllm`` import stand-ins | see ``tests/openrlhf_stubs`` | GPU-only packages imported at module level |
"""
from __future__ import annotations

import statistics
import sys
import types
from pathlib import Path

import pytest
import torch



import openrlhf_engine_worker as W  # noqa: E402
from repro.trainers.openrlhf.local_actor import chunk_bounds  # noqa: E402
from repro.trainers.openrlhf.weighting import GROUP_LEN_KEY, GROUP_POS_KEY  # noqa: E402


class LocalActorGroup:
    """RayActorGroup's batch dispatch (launcher.py:319-373) over `world` in-process 'ranks'."""

    def __init__(self, actor, world=2):
        self.actor, self.world, self.calls = actor, world, []

    def async_run_method_batch(self, method_name, **kwargs):
        n = len(next(iter(kwargs.values())))
        out = []
        for rank in range(self.world):
            lo, hi = chunk_bounds(n, self.world, rank)
            self.calls.append((method_name, rank, lo, hi))
            fn = getattr(self, method_name)
            out.append([fn(**{k: v[i] for k, v in kwargs.items()}) for i in range(lo, hi)])
        return out

    def async_run_method(self, method_name, *a, **k):
        return [None] * self.world

    @torch.no_grad()
    def forward(self, sequences, action_mask, attention_mask, **_):
        return self.actor(sequences, action_mask, attention_mask)


@pytest.mark.parametrize("micro", [3, 4])
def test_make_experience_batch_from_canned_vllm_outputs(monkeypatch, tmp_path, micro):
    import openrlhf.trainer.ppo_utils.experience_maker as em_mod
    from openrlhf.models import Actor
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

    from repro.trainers.openrlhf import local_actor
    from repro.trainers.openrlhf.patches import LambdaExperienceMaker

    monkeypatch.setattr(em_mod, "ray", types.SimpleNamespace(put=lambda x: x, get=lambda x: x))
    args = local_actor.parse_args([
        "--rollout.batch_size", str(W.P), "--rollout.n_samples_per_prompt", str(W.G),
        "--rollout.micro_batch_size", str(micro), "--algo.advantage.estimator", "group_norm",
        "--algo.kl.init_coef", "0", "--actor.num_gpus_per_node", "2"])
    pretrain = local_actor.save_tiny_qwen2(tmp_path / "tiny-qwen2", layers=1)
    group = LocalActorGroup(Actor(pretrain, attn_implementation="eager", param_dtype="bf16"))
    em = LambdaExperienceMaker(group, None, None, None, types.SimpleNamespace(value=0.0),
                               types.SimpleNamespace(args=args), types.SimpleNamespace(pad_token_id=0))

    canned = local_actor.canned_responses(5, W.P, W.G)
    gen = SamplesGenerator.__new__(SamplesGenerator)
    samples = [gen._process_response_into_experience(r, max_len=W.MAX_LEN) for r in canned]
    exps = em.make_experience_batch(samples)

    # independent expectations from the canned responses only
    n = [end - start for (start, end), in (r["action_ranges"] for r in canned)]
    rew = [r["reward"] for r in canned]
    adv = []
    for g in range(W.P):
        rs = rew[g * W.G:(g + 1) * W.G]
        mu, sd = statistics.fmean(rs), statistics.stdev(rs)
        adv += [(x - mu) / (sd + 1e-9) for x in rs]
    assert [c[0] for c in group.calls] == ["forward", "forward"]  # dispatched over both ranks
    assert len(exps) == -(-W.P * W.G // micro)
    seen = []
    for e in exps:
        gl, pos = e.info[GROUP_LEN_KEY], e.info[GROUP_POS_KEY]
        for b, j in enumerate(e.index):
            seen.append(j)
            g = j // W.G
            assert gl[b].tolist() == [float(x) for x in n[g * W.G:(g + 1) * W.G]]
            assert int(pos[b]) == j % W.G
            m = e.action_mask[b].bool()
            assert int(m.sum()) == n[j]
            assert torch.allclose(e.advantages[b][m].double(), torch.full((n[j],), adv[j], dtype=torch.float64),
                                  atol=1e-5)
            last = int(m.nonzero().max())
            assert float(e.advantages[b][last + 1:].abs().sum()) == 0.0  # (the prompt part is masked out)
            assert float(e.info["group_reward_std"][b]) == pytest.approx(statistics.stdev(rew[g * W.G:(g + 1) * W.G]),
                                                                          rel=1e-6)
            # old log-probs: the actor's forward of exactly this row (finite on response tokens)
            assert torch.isfinite(e.action_log_probs[b][m]).all() and (e.action_log_probs[b][m] < 0).all()
    assert sorted(seen) == list(range(W.P * W.G))
    if micro % W.G:  # a group spread over two experiences (and so over two ranks)
        assert any(len({j // W.G for j in e.index}) > 1 for e in exps)
