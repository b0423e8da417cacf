"""The λ-weighted loss at OpenRLHF 0.11.2's seams, with OpenRLHF's real classes on CPU.

Expected values are computed here, independently: from the written-out clipped surrogate, from
``repro.objective`` (the paper's math, tested on its own), and from the closed-form Eq. 20.
"""
from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch



from openrlhf.models.loss import PolicyLoss  # noqa: E402
from openrlhf.trainer.ppo_utils.experience import (  # noqa: E402
    Experience,
    make_experience_batch,
    split_experience_batch,
)

from repro import objective as obj  # noqa: E402
from repro.trainers.openrlhf.settings import LambdaSettings  # noqa: E402
from repro.trainers.openrlhf.weighting import (  # noqa: E402
    GROUP_LEN_KEY,
    GROUP_POS_KEY,
    WeightedPolicyLoss,
    attach_group_info,
    pop_group_info,
)

HERE = Path(__file__).resolve().parent
R = 1 / 9


# ----------------------------------------------------------------------------------------------
# synthetic micro-batches
# ----------------------------------------------------------------------------------------------
def make_groups(P=3, G=4, T=9, seed=0, off_policy=0.3):
    """P groups of G responses: lengths, a padded mask, log-probs, per-sample advantages."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, T + 1, (P, G), generator=g)
    N = P * G
    lens = lengths.reshape(-1)
    mask = (torch.arange(T)[None, :] < lens[:, None])
    old = -torch.rand(N, T, generator=g, dtype=torch.float64) * 2
    logp = old + off_policy * torch.randn(N, T, generator=g, dtype=torch.float64)
    rewards = torch.randint(0, 2, (P, G), generator=g).to(torch.float64) * 1.5 - 0.5
    adv = obj.eq3_group_advantages(rewards).reshape(-1)
    group_len = lengths.to(torch.float64).repeat_interleave(G, dim=0)  # [N, G]
    pos = torch.arange(N) % G
    return dict(lengths=lengths, mask=mask, old=old, logp=logp, adv=adv, group_len=group_len, pos=pos,
                P=P, G=G, N=N, T=T)


def surrogate_token_mean(logp, old, adv_tok, mask, lo=0.2, hi=0.2):
    """Written out: -Σ min(ρA, clip(ρ)A) / Σ mask (the stock token mean of one micro-batch)."""
    ratio = torch.exp(logp - old)
    s = torch.minimum(ratio * adv_tok, ratio.clamp(1 - lo, 1 + hi) * adv_tok)
    m = mask.to(s.dtype)
    return -(s * m).sum() / m.sum()


def wrapped(method, lam=None, scope="batch", **stock_kw):
    return WeightedPolicyLoss(PolicyLoss(**stock_kw), method=method, lam=lam, r=R, scope=scope)


def call(loss_fn, d, rows=None, **kw):
    rows = slice(None) if rows is None else rows
    loss_fn.set_group_info(d["group_len"][rows], d["pos"][rows])
    adv_tok = d["adv"][rows, None].expand(-1, d["T"]).clone()
    return loss_fn(d["logp"][rows], d["old"][rows], adv_tok, action_mask=d["mask"][rows], **kw)


# ----------------------------------------------------------------------------------------------
# 1. the wrapper around the real PolicyLoss
# ----------------------------------------------------------------------------------------------
def test_lambda_zero_equals_stock_token_mean():
    d = make_groups()
    lam = obj.LearnableLambda(init=0.0)
    lam.param.data = lam.param.data.double()
    stock = PolicyLoss()
    adv_tok = d["adv"][:, None].expand(-1, d["T"])
    ref = stock(d["logp"], d["old"], adv_tok, action_mask=d["mask"])[0]
    mine = call(wrapped("lambda", lam), d)[0]
    written = surrogate_token_mean(d["logp"], d["old"], adv_tok, d["mask"])
    assert torch.allclose(mine, ref, rtol=0, atol=1e-12)
    assert torch.allclose(ref, written, rtol=1e-12)
    # and with OpenRLHF's window normaliser (batch_num_tokens, dp_size)
    T = d["mask"].sum().double()
    ref2 = stock(d["logp"], d["old"], adv_tok, action_mask=d["mask"], dp_size=1, batch_num_tokens=T,
                 global_batch_size=torch.tensor(float(d["N"])))[0]
    mine2 = call(wrapped("lambda", lam), d, dp_size=1, batch_num_tokens=T,
                 global_batch_size=torch.tensor(float(d["N"])))[0]
    assert torch.allclose(mine2, ref2, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["grpo", "dapo", "dr_grpo", "lambda", "delta_l"])
@pytest.mark.parametrize("scope", ["batch", "group"])
def test_each_method_equals_objective_over_a_split_step(method, scope):
    """Two micro-batches of one optimizer step (gas = 2), OpenRLHF's window normalisers, and
    DeepSpeed's 1/gas: the summed loss equals repro.objective.policy_loss on the whole step."""
    d = make_groups(P=3, G=4, seed=1)
    lam = obj.LearnableLambda(init=0.8) if method == "lambda" else None
    clip = dict(clip_eps_low=0.2, clip_eps_high=0.28, dual_clip=3.0)
    fn = wrapped(method, lam, scope=scope, **clip)
    perm = torch.randperm(d["N"], generator=torch.Generator().manual_seed(3))
    parts = [perm[:5], perm[5:]]
    gas = 2
    T_step = float(d["mask"].sum())
    info = dict(dp_size=1, batch_num_tokens=torch.tensor(T_step / gas), global_batch_size=torch.tensor(d["N"] / gas))
    total = sum(call(fn, d, rows=p, **info)[0] / gas for p in parts)
    denom = obj.step_denominator(scope, d["lengths"])
    if scope == "group":
        denom = d["N"] / d["G"]  # the wrapper's group scope: N_step/G (= groups here)
        assert denom == obj.step_denominator("group", d["lengths"])
    lam_v = float(lam.value) if lam is not None else 0.0
    ref = obj.policy_loss(d["logp"], d["old"], d["adv"], d["mask"], d["group_len"], d["pos"], method=method,
                          denominator=denom, scope=scope, lam=lam_v, r=R, clip_low=0.2, clip_high=0.28,
                          dual_clip=3.0).loss
    assert torch.allclose(total.double(), ref.double(), rtol=1e-10, atol=1e-12), (float(total), float(ref))


def test_lambda_gradient_equals_objective_and_eq20():
    d = make_groups(P=4, G=5, seed=2, off_policy=0.0)  # on-policy: ratio 1, no clipping
    lam = obj.LearnableLambda(init=0.6)
    fn = wrapped("lambda", lam)
    T = float(d["mask"].sum())
    loss = call(fn, d, dp_size=1, batch_num_tokens=torch.tensor(T), global_batch_size=torch.tensor(float(d["N"])))[0]
    loss.backward()
    g_wrapper = float(lam.param.grad)
    # autograd through the objective
    lt = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    ref = obj.policy_loss(d["logp"], d["old"], d["adv"], d["mask"], d["group_len"], d["pos"], method="lambda",
                          denominator=T, scope="batch", lam=lt, r=R).loss
    (g_obj,) = torch.autograd.grad(ref, lt)
    # closed form: batch loss = -(1/T) Σ_g S_g J_g  =>  dloss/dλ = -(1/T) Σ_g S_g ∂J_g/∂λ (Eq. 20)
    L = (d["adv"][:, None] * d["mask"]).sum(1).reshape(d["P"], d["G"])  # on-policy L_i = |o_i| A_i
    S = d["lengths"].sum(1).double()
    g_eq20 = -(S * obj.eq20_lambda_grad(d["lengths"], L, 0.6, r=R)).sum() / T
    assert g_wrapper != 0
    assert math.isclose(g_wrapper, float(g_obj), rel_tol=1e-5, abs_tol=1e-9)
    assert math.isclose(g_wrapper, float(g_eq20), rel_tol=1e-5, abs_tol=1e-9)


def test_wrapper_refuses_bad_inputs():
    d = make_groups()
    with pytest.raises(ValueError, match="token-level"):
        WeightedPolicyLoss(PolicyLoss(token_level_loss=False), method="dapo")
    fn = wrapped("dapo")
    with pytest.raises(RuntimeError, match="set_group_info"):
        fn(d["logp"], d["old"], d["adv"][:, None].expand(-1, d["T"]), action_mask=d["mask"])
    bad = dict(d, group_len=d["group_len"] + 1)  # own length no longer matches the mask
    with pytest.raises(ValueError, match="action-token count"):
        call(fn, bad)
    with pytest.raises(ValueError, match="needs a LearnableLambda"):
        wrapped("lambda", None)


# ----------------------------------------------------------------------------------------------
# 2. the experience extension, through the real experience maker and replay-buffer batching
# ----------------------------------------------------------------------------------------------
def _rollout_experiences(P, G, micro, seed):
    """What OpenRLHF's experience maker holds before advantages: micro-batches of consecutive
    rollout samples (the G samples of a prompt are consecutive), with rewards and masks."""
    g = torch.Generator().manual_seed(seed)
    N = P * G
    lengths = torch.randint(1, 12, (N,), generator=g)
    rewards = torch.tensor([random.Random(seed + i).choice([1.0, -0.5, -1.0]) for i in range(N)])
    exps = []
    for s in range(0, N, micro):
        idx = list(range(s, min(s + micro, N)))
        A = int(lengths[idx].max())
        am = torch.arange(A)[None, :] < lengths[idx, None]
        exps.append(Experience(
            sequences=torch.ones(len(idx), A + 3, dtype=torch.long),
            attention_mask=torch.ones(len(idx), A + 3, dtype=torch.long),
            action_mask=am, action_log_probs=torch.zeros(len(idx), A), kl=torch.zeros(len(idx), A),
            rewards=rewards[idx].clone(), response_length=lengths[idx].float(),
            total_length=lengths[idx].float() + 3, index=idx, info={"reward": rewards[idx].clone()}))
    return exps, lengths.reshape(P, G), rewards.reshape(P, G)


def _experience_maker(G, estimator="group_norm"):
    from repro.trainers.openrlhf.patches import LambdaExperienceMaker

    args = types.SimpleNamespace(
        rollout=types.SimpleNamespace(n_samples_per_prompt=G, max_new_tokens=16),
        algo=types.SimpleNamespace(advantage=types.SimpleNamespace(estimator=estimator, gamma=1.0, no_std_norm=False)),
        reward=types.SimpleNamespace(clip_range=None, overlong_buffer_len=None, stop_properly_penalty_coef=None),
        data=types.SimpleNamespace(max_len=32))
    em = LambdaExperienceMaker.__new__(LambdaExperienceMaker)
    em.strategy = types.SimpleNamespace(args=args)
    em.args = args
    em.advantage_estimator = estimator
    em.kl_ctl = types.SimpleNamespace(value=0.0)
    return em


@pytest.mark.parametrize("micro", [3, 8])
def test_experience_extension_on_shuffled_groups(micro):
    P, G = 5, 4
    exps, lengths, rewards = _rollout_experiences(P, G, micro, seed=micro)
    exps = _experience_maker(G).compute_advantages_and_returns(exps)
    # the stock advantage is untouched and still the group-normalised reward (Eq. 3, eps 1e-9)
    adv = torch.cat([e.advantages[:, 0] for e in exps]).reshape(P, G)
    expect_adv = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-9)
    assert torch.allclose(adv, expect_adv, atol=1e-6)
    # the replay buffer: split to samples, shuffle, re-batch into micro-batches of 3
    items = [it for e in exps for it in split_experience_batch(e)]
    random.Random(7).shuffle(items)
    got = {}
    fn = WeightedPolicyLoss(PolicyLoss(), method="lambda", lam=obj.LearnableLambda(init=1.7), r=R)
    for s in range(0, len(items), 3):
        batch = make_experience_batch(items[s:s + 3])
        assert isinstance(batch.info[GROUP_LEN_KEY], list)  # how OpenRLHF re-batches vectors
        gl, pos = pop_group_info(batch.info)
        assert GROUP_LEN_KEY not in batch.info and GROUP_POS_KEY not in batch.info
        f = fn.weights(gl, pos).detach()
        own = gl.gather(1, pos[:, None]).squeeze(1)
        assert torch.equal(own, batch.action_mask.sum(-1).float())
        for row in range(len(pos)):
            # identify the sample by its group lengths row and position
            got[(tuple(gl[row].tolist()), int(pos[row]))] = float(f[row])
    expect = obj.token_weights("lambda", lengths.float(), lam=1.7, r=R)
    assert len(got) == P * G
    for p in range(P):
        for i in range(G):
            assert math.isclose(got[(tuple(lengths[p].float().tolist()), i)], float(expect[p, i]), rel_tol=1e-6)


def test_experience_extension_refuses_partial_groups():
    exps, _, _ = _rollout_experiences(2, 4, 8, seed=0)
    exps[0].index = exps[0].index[:-1]
    exps[0].action_mask = exps[0].action_mask[:-1]
    with pytest.raises(ValueError, match="whole groups"):
        attach_group_info(exps, 4)


# ----------------------------------------------------------------------------------------------
# 3. λ's optimizer and DP reduction through the trainer's training_step (2 gloo processes)
# ----------------------------------------------------------------------------------------------
def test_lambda_step_and_dp_reduction_two_gloo_ranks(tmp_path, openrlhf_stub_env):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(openrlhf_stub_env)
    procs = [subprocess.Popen([sys.executable, str(HERE / "openrlhf_gloo_worker.py"), str(rank), "2", str(port),
                               str(tmp_path / f"rank{rank}.json")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # expected, computed here from the whole step of both ranks with repro.objective
    import openrlhf_gloo_worker as w

    expect = w.expected_lambda_trajectory()
    for r in res:
        assert r["optimizer_steps"] == w.STEPS
        assert len(r["lambdas"]) == w.STEPS
        for got, want in zip(r["lambdas"], expect["lambdas"]):
            assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9), (r["lambdas"], expect["lambdas"])
        for got, want in zip(r["grads"], expect["grads"]):
            assert math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-9)
        assert math.isclose(r["status"]["lgrpo/f_mean"], expect["f_mean_all"], rel_tol=1e-6)
    assert res[0]["lambdas"] == res[1]["lambdas"]  # the ranks agree bit for bit
    assert expect["grads"][0] != 0


# ----------------------------------------------------------------------------------------------
# 4. λ in checkpoints
# ----------------------------------------------------------------------------------------------
def _bare_trainer(method="lambda", lr=0.1, init=0.0, settings=None):
    """A LambdaActorPPOTrainer as its __init__ leaves it after the stock init and ``setup_lambda``
    (``settings``, or a weighting block of ``method``, ``lr``, ``init``)."""
    from repro.trainers.openrlhf.patches import LambdaActorPPOTrainer

    t = LambdaActorPPOTrainer.__new__(LambdaActorPPOTrainer)
    t.args = types.SimpleNamespace(actor=types.SimpleNamespace(loss_agg_mode="token-mean", policy_loss_type="ppo"),
                                   ds=types.SimpleNamespace(param_dtype="bf16"),
                                   train=types.SimpleNamespace(dynamic_batch_enable=False))
    t.actor_loss_fn = PolicyLoss()
    t.strategy = types.SimpleNamespace()
    t.setup_lambda(settings or LambdaSettings(weighting={"method": method, "lambda": {"init": init, "lr": lr}}))
    return t


def test_lambda_checkpoint_round_trip(tmp_path, monkeypatch):
    import openrlhf.trainer.ray.ppo_actor as pa

    from repro.trainers.openrlhf.patches import _LambdaPolicyModelActorBase

    a = _bare_trainer()
    d = make_groups(seed=4)
    for _ in range(3):  # three λ steps on the same data
        call(a.actor_loss_fn, d)[0].backward()
        a.lgrpo_lambda.step()
        a.lgrpo_optimizer_steps += 1
    # the actor's save_checkpoint puts the state into DeepSpeed's client_states
    saved = {}
    actor = _LambdaPolicyModelActorBase.__new__(_LambdaPolicyModelActorBase)
    actor.trainer, actor.disable_ds_ckpt, actor.save_hf_ckpt = a, False, False
    actor.strategy = types.SimpleNamespace(
        args=types.SimpleNamespace(ckpt=types.SimpleNamespace(path=str(tmp_path), max_num=1, max_mem=1)),
        save_ckpt=lambda model, path, tag, max_num, max_mem, client_states, **kw: saved.update(client_states))
    actor.actor = types.SimpleNamespace(model=None)
    monkeypatch.setattr(pa, "torch_dist_barrier_and_cuda_sync", lambda: None)
    actor.save_checkpoint("global_step3", {"global_step": 3})
    assert saved["global_step"] == 3
    torch.save(saved, tmp_path / "client_states.pt")
    loaded = torch.load(tmp_path / "client_states.pt", weights_only=True)  # plain types only
    b = _bare_trainer()
    b.lgrpo_load_state(loaded["lgrpo"])
    assert b.lgrpo_lambda.value == a.lgrpo_lambda.value != 0.0
    assert b.lgrpo_optimizer_steps == 3
    # the resumed run continues the same trajectory
    for t in (a, b):
        call(t.actor_loss_fn, d)[0].backward()
        t.lgrpo_lambda.step()
    assert a.lgrpo_lambda.value == b.lgrpo_lambda.value
    with pytest.raises(ValueError, match="method"):
        _bare_trainer("dapo").lgrpo_load_state(loaded["lgrpo"])


def test_fixed_methods_have_no_lambda_and_fp16_is_refused():
    t = _bare_trainer("dapo")
    assert t.lgrpo_lambda is None and t.lgrpo_status()["lgrpo/lambda"] == 0.0
    t2 = _bare_trainer("dapo")
    t2.args.ds.param_dtype = "fp16"
    t2.actor_loss_fn = PolicyLoss()
    t2.setup_lambda(LambdaSettings(weighting={"method": "dapo"}))  # fixed weights: fp16 is fine
    t2.actor_loss_fn = PolicyLoss()
    with pytest.raises(ValueError, match="bf16"):
        t2.setup_lambda(LambdaSettings(weighting={"method": "lambda"}))


def test_gpu_check_script_runs_on_cpu():
    """The prepared one-GPU check (repro.trainers.openrlhf.gpu_check), run on CPU with a bf16
    tiny Qwen2: λ's gradient through OpenRLHF's PolicyLoss matches the float64 objective."""
    from repro.trainers.openrlhf.gpu_check import lambda_grad_check

    res = lambda_grad_check("cpu", "bf16", P=2, G=4, micro=3)
    assert res["ok"] and res["relative_difference"] < 1e-4 and res["lambda_grad_device"] != 0
    assert res["lambda_after_step"] == pytest.approx(res["lambda_init"] - 0.1 * res["lambda_grad_device"], rel=1e-5)


# ----------------------------------------------------------------------------------------------
# 5. a method with a parameter of its own rides the whole OpenRLHF path
# ----------------------------------------------------------------------------------------------
def eq7_softmax_beta(d, beta, lo=0.2, hi=0.2):
    """Eq. 7 written out, element by element, with f_i = G exp(β z_i) / Σ_j exp(β z_j) (the
    ``softmax_beta`` fixture's method, conftest.py):
    -(1/P) Σ_g (1/Σ_i |o_i|) Σ_i f_i Σ_t min(ρ A_i, clip(ρ, 1-lo, 1+hi) A_i)."""
    P, G, total = d["P"], d["G"], 0.0
    for g in range(P):
        lens = [float(x) for x in d["lengths"][g]]
        mu = sum(lens) / G
        sd = max(math.sqrt(sum((x - mu) ** 2 for x in lens) / (G - 1)), 1e-6)
        e = [math.exp(beta * (x - mu) / sd) for x in lens]
        group = 0.0
        for i in range(G):
            k = g * G + i
            f = G * e[i] / sum(e)
            a = float(d["adv"][k])
            for t in range(int(lens[i])):
                rho = math.exp(float(d["logp"][k, t]) - float(d["old"][k, t]))
                group += f * min(rho * a, min(max(rho, 1 - lo), 1 + hi) * a)
        total += group / sum(lens)
    return -total / P


def test_a_method_with_a_parameter_of_its_own_rides_the_openrlhf_path(softmax_beta, monkeypatch):
    from repro.trainers.openrlhf import reproduce
    from repro.trainers.openrlhf.launch import runtime_env
    from repro.trainers.openrlhf.settings import ENV_VAR, split_argv, to_flags

    block = {"method": "softmax_beta", "beta": 2.5, "lambda": {"init": 0.0, "lr": 0.1}}
    # the pipeline's command builder writes the config's block as the launcher's flags ...
    flags = to_flags(reproduce.settings_of({"weighting": block, "scope": "group"}))
    assert flags[:4] == ["--lgrpo.weighting.method", "softmax_beta", "--lgrpo.weighting.beta", "2.5"]
    # ... the launcher takes them off the command line and puts the block in every worker's env
    settings, stock = split_argv(["--actor.model_name_or_path", "m", *flags])
    assert stock == ["--actor.model_name_or_path", "m"] and settings.weighting.params.beta == 2.5
    env = runtime_env(settings)["env_vars"]
    assert json.loads(env[ENV_VAR])["weighting"] == block  # the config's own block
    monkeypatch.setenv(ENV_VAR, env[ENV_VAR])
    # a worker: what LambdaActorPPOTrainer.__init__ does after the stock init
    t = _bare_trainer(settings=LambdaSettings.from_env())
    assert t.lgrpo.method == "softmax_beta" and t.lgrpo_lambda is None and t.lgrpo_settings.scope == "group"
    # the loss of one optimizer step (OpenRLHF's window normalisers) is Eq. 7 with that f
    d = make_groups(P=3, G=4, seed=5)
    T = float(d["mask"].sum())
    got = call(t.actor_loss_fn, d, dp_size=1, batch_num_tokens=torch.tensor(T),
               global_batch_size=torch.tensor(float(d["N"])))[0]
    want = eq7_softmax_beta(d, 2.5)
    assert math.isclose(float(got), want, rel_tol=1e-10, abs_tol=1e-12), (float(got), want)
    assert not math.isclose(want, eq7_softmax_beta(d, 0.0), rel_tol=1e-3)  # β matters here


@pytest.mark.parametrize("flags,msg", [
    (["--lgrpo.weighting.method", "nope"], "unknown method 'nope'; known: ["),
    (["--lgrpo.weighting.method", "softmax_beta", "--lgrpo.weighting.gamma", "1"],
     r"method 'softmax_beta' takes parameters ['beta'], got ['gamma']"),
    (["--lgrpo.weighting.method", "dapo", "--lgrpo.weighting.beta", "1"],
     r"method 'dapo' takes parameters none, got ['beta']"),
    (["--lgrpo.lr", "0.1"], "unknown flag --lgrpo.lr; known: --lgrpo.weighting.KEY"),
])
def test_bad_weighting_flags_are_one_line(softmax_beta, flags, msg, capsys):
    from repro.trainers.openrlhf import launch

    with pytest.raises(SystemExit) as e:
        launch.main([*flags, "--actor.model_name_or_path", "m"])
    assert e.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("launch: bad config: ") and msg in err[0], err
