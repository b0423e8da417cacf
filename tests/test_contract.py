"""repro.trainers.contract: what every trainer hands the shared layer (expected values computed
here, independently: Python's statistics module, hand-built groups, the formulas written out)."""
from __future__ import annotations

import math
import statistics

import pytest
import torch

from repro import objective as obj
from repro.runs import validate_record
from repro.trainers.contract import (FStats, GroupInfo, LambdaOptimConfig, WeightingConfig,
                                     WeightingState, f_stats, metrics_record, rollout_stats)


def test_group_info_from_groups_and_from_positions_agree():
    lengths = torch.tensor([[3.0, 5.0, 2.0], [7.0, 1.0, 4.0]])
    a = GroupInfo.from_groups(lengths)
    assert a.group_lengths.tolist() == [[3.0, 5.0, 2.0]] * 3 + [[7.0, 1.0, 4.0]] * 3
    assert a.index.tolist() == [0, 1, 2, 0, 1, 2] and a.group_id.tolist() == [0, 0, 0, 1, 1, 1]
    positions = [4, 0, 5, 2, 1, 3]  # shuffled rows and where each sat in the rollout
    rows = torch.tensor([lengths.reshape(-1)[p] for p in positions])
    b = GroupInfo.from_positions(rows, positions, 3)
    for k, p in enumerate(positions):
        assert b.group_lengths[k].tolist() == lengths[p // 3].tolist()
        assert int(b.index[k]) == p % 3 and int(b.group_id[k]) == p // 3
    assert [len(x.index) for x in b.split([4, 2])] == [4, 2]
    for bad, words in (([0, 1, 2, 3, 4, 4], "permutation"), ([0, 1, 2, 3], "whole groups")):
        with pytest.raises(ValueError, match=words):
            GroupInfo.from_positions(torch.ones(len(bad)), bad, 3)


def test_fstats_is_the_sample_std_however_the_values_are_split():
    g = torch.Generator().manual_seed(0)
    f = torch.rand(37, generator=g, dtype=torch.float64) * 3
    want = {"f_mean": statistics.fmean(f.tolist()), "f_std": statistics.stdev(f.tolist()),
            "f_min": min(f.tolist()), "f_max": max(f.tolist())}
    st = FStats()
    for part in f.split([5, 1, 20, 11]):
        st.add(part)
    st.add(torch.empty(0))
    for k, v in st.reduced().items():
        assert v == pytest.approx(want[k], rel=1e-12), k
    assert f_stats(f)["f_std"] == pytest.approx(want["f_std"], rel=1e-12)
    assert f_stats(torch.tensor([2.0]))["f_std"] == 0.0 and FStats().reduced() == {}
    assert f_stats(torch.ones(8))["f_std"] == 0.0


def test_weighting_config_one_spelling_and_clear_errors():
    cfg = WeightingConfig.from_dict({"method": "lambda", "r": "1/3", "lambda": {"lr": 10, "init": "1e-1"}})
    assert cfg.params == obj.LambdaParams(r=1 / 3) and cfg.lambda_ == LambdaOptimConfig(init=0.1, lr=10.0)
    assert WeightingConfig.from_dict(cfg.to_dict()) == cfg and cfg.learnable
    assert WeightingConfig.from_dict({"method": "dapo"}).params == obj.NoParams()
    assert WeightingConfig().params.r == obj.PAPER_R == 1 / 9
    for d, words in (({"method": "dapo", "r": 0.2}, "takes parameters"),
                     ({"method": "ppo"}, "unknown method"),
                     ({"method": "lambda", "lambda": {"rate": 1}}, "init and lr"),
                     ({"method": "lambda", "lambda": {"lr": -1}}, ">= 0"),
                     ({"method": "lambda", "r": "fast"}, "r must be")):
        with pytest.raises(ValueError, match=words):
            WeightingConfig.from_dict(d)


def test_weighting_state_loss_step_and_one_checkpoint_format(tmp_path):
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([[2.0, 4.0, 3.0, 5.0], [1.0, 5.0, 5.0, 2.0]])
    info = GroupInfo.from_groups(lengths)
    T = 5
    mask = (torch.arange(T)[None] < info.group_lengths.gather(1, info.index[:, None])).float()
    old = -torch.rand(8, T, generator=g)
    logp = old + 0.2 * torch.randn(8, T, generator=g)
    adv = torch.randn(8, generator=g)
    ws = WeightingState(WeightingConfig.from_dict({"method": "lambda", "r": 0.3, "lambda": {"init": 0.5}}))
    out = ws.loss(logp, old, adv, mask, info, denominator=2.0)
    direct = obj.policy_loss(logp, old, adv, mask, info.group_lengths, info.index, method="lambda",
                             r=0.3, lam=0.5, denominator=2.0)
    assert torch.allclose(out.loss, direct.loss) and torch.allclose(ws.weights(info), direct.weights)
    out.loss.backward()
    grad = ws.step()
    assert grad != 0 and ws.value == pytest.approx(0.5 - 0.1 * grad) and ws.optimizer_steps == 1
    assert ws.pop_fstats()["f_mean"] == pytest.approx(1.0) and ws.fstats.n == 0
    torch.save(ws.state_dict(), tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)  # plain types only
    ws2 = WeightingState(WeightingConfig.from_dict({"method": "lambda", "r": 0.3}))
    ws2.load_state_dict(state)
    assert (ws2.value, ws2.optimizer_steps) == (ws.value, 1)
    with pytest.raises(ValueError, match="method"):
        WeightingState(WeightingConfig(method="dapo")).load_state_dict(state)
    fixed = WeightingState(WeightingConfig(method="dapo"))
    assert fixed.lam is None and fixed.step() is None and fixed.value == 0.0 and fixed.loss_lambda == 0.0
    assert "lambda" not in fixed.state_dict() and fixed.state_dict()["optimizer_steps"] == 1


def test_rollout_stats_and_metrics_record():
    rewards = torch.tensor([[1.0, -0.5, -1.0], [1.0, 1.0, -0.5]])
    lengths = torch.tensor([[4.0, 1.0, 3.0], [2.0, 2.0, 5.0]])
    adv = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, -1.0]])
    st = rollout_stats(rewards, lengths, adv, torch.tensor([0, 0, 1, 0, 0, 0]))
    covs = [sum((L - sum(Ls) / 3) * (A - sum(As) / 3) for L, A in zip(Ls, As)) / 2
            for Ls, As in zip(lengths.tolist(), adv.tolist())]
    assert st == pytest.approx({"reward_mean": 1 / 6, "accuracy": 0.5, "response_length_mean": 17 / 6,
                                "response_length_max": 5.0, "truncated_rate": 1 / 6,
                                "len_adv_cov": sum(covs) / 2})
    rec = metrics_record(step=3, rollout=2, method="lambda", lam=0.1, lam_grad=torch.tensor(-0.2),
                         f=f_stats(torch.tensor([0.9, 1.1])), stats=st, time_s=1.0,
                         entropy=torch.tensor(0.5), kl=None, clip_ratio=torch.tensor(0.25),
                         grad_norm=1.5, extras={"task": "sum", "step": 99})
    validate_record(rec)
    assert rec["step"] == 3 and rec["task"] == "sum" and rec["kl"] is None
    assert rec["f_std"] == pytest.approx(math.sqrt(0.02)) and isinstance(rec["clip_ratio"], float)
    with pytest.raises(ValueError, match="f_mean"):
        metrics_record(step=1, rollout=1, method="x", lam=0.0, lam_grad=None, f={}, stats=st,
                       time_s=0.0, clip_ratio=0.0)


def _two_rank_worker(rank: int, init: str, out: str) -> None:
    import json

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    g = torch.Generator().manual_seed(rank)
    st = FStats()
    for part in (torch.rand(3 + 4 * rank, generator=g, dtype=torch.float64),
                 torch.rand(2, generator=g, dtype=torch.float64) + rank):
        st.add(part)
    ws = WeightingState(WeightingConfig.from_dict({"method": "lambda", "lambda": {"init": 0.2, "lr": 0.5}}),
                        dtype=torch.float64)
    ws.lam.param.grad = torch.tensor(1.0 + 2.0 * rank, dtype=torch.float64)  # ranks see different data
    grad = ws.step()
    with open(out, "w") as fh:
        json.dump({"f": st.reduced(), "grad": grad, "lambda": ws.value}, fh)
    dist.barrier()  # no rank tears gloo down while the other still talks to it
    dist.destroy_process_group()


def test_fstats_and_lambda_over_two_gloo_ranks(tmp_path):
    import json

    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'store'}"
    mp.spawn(_run_rank, args=(init, str(tmp_path)), nprocs=2, join=True)
    res = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(2)]
    values = []
    for rank in range(2):
        g = torch.Generator().manual_seed(rank)
        values += torch.rand(3 + 4 * rank, generator=g, dtype=torch.float64).tolist()
        values += (torch.rand(2, generator=g, dtype=torch.float64) + rank).tolist()
    want = {"f_mean": statistics.fmean(values), "f_std": statistics.stdev(values),
            "f_min": min(values), "f_max": max(values)}
    for r in res:
        for k, v in want.items():
            assert r["f"][k] == pytest.approx(v, rel=1e-12), k
        assert r["grad"] == 2.0 and r["lambda"] == pytest.approx(0.2 - 0.5 * 2.0)  # mean of 1 and 3


def _run_rank(rank: int, init: str, folder: str) -> None:
    _two_rank_worker(rank, init, f"{folder}/r{rank}.json")
