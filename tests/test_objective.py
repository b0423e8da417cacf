"""The paper's math against independent computations written out here, term by term.

Nothing below compares against numbers produced by repro.objective itself: every reference is
recomputed in plain Python/torch loops from the paper's equations.
"""
import math
import random

import pytest
import torch
from hypothesis import given, settings, strategies as st

from repro import objective as O



@pytest.fixture(autouse=True, scope="module")
def float64_default():
    """The tests of this module build float64 tensors by default; later modules get the dtype
    they had before."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


# ----------------------------------------------------------------------------------------------
# independent references (plain Python, one response at a time)
# ----------------------------------------------------------------------------------------------
def ref_mean(xs):
    return sum(xs) / len(xs)


def ref_sample_std(xs):
    m = ref_mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def ref_lambda_weights(lens, lam, r):
    G = len(lens)
    mu, sd = ref_mean(lens), ref_sample_std(lens)
    z = [(x - mu) / sd if sd > 0 else 0.0 for x in lens]
    g = [(1 + r * zi) ** lam for zi in z]
    e = [math.exp(gi) for gi in g]
    return [G * ei / sum(e) for ei in e]


def ref_token_surrogate(lp, olp, a, lo, hi):
    rho = math.exp(lp - olp)
    return min(rho * a, min(max(rho, 1 - lo), 1 + hi) * a)


def make_group_batch(n_groups, G, T, seed, min_len=1):
    """Random per-token tensors for n_groups groups of G responses (padded to T)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, T + 1, (n_groups, G), generator=g).double()
    N = n_groups * G
    mask = torch.zeros(N, T, dtype=torch.bool)
    for i, n in enumerate(lengths.flatten().long().tolist()):
        mask[i, :n] = True
    logp = -torch.rand(N, T, generator=g) * 3
    old = logp + 0.3 * torch.randn(N, T, generator=g)  # ratios well away from 1: clipping happens
    rewards = torch.randint(0, 3, (n_groups, G), generator=g).double() - 1
    group_lengths = lengths.repeat_interleave(G, dim=0)  # each sample carries its group's lengths
    index = torch.arange(G).repeat(n_groups)
    return dict(lengths=lengths, mask=mask, logp=logp, old=old, rewards=rewards,
                group_lengths=group_lengths, index=index)


# ----------------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    lens=st.lists(st.lists(st.integers(1, 4000), min_size=8, max_size=8), min_size=1, max_size=5),
    lam=st.floats(-6, 6),
    r=st.sampled_from([1 / 30, 1 / 15, 1 / 9, 0.2]),
    alpha=st.floats(0, 2),
)
def test_weights_sum_to_G(lens, lam, r, alpha):
    L = torch.tensor(lens, dtype=torch.float64)
    for method in ("lambda", "dapo", "delta_l"):
        f = O.token_weights(method, L, lam=lam, r=r, alpha=alpha)
        assert f.shape == L.shape
        assert torch.allclose(f.sum(-1), torch.full((L.shape[0],), 8.0), rtol=1e-12)
        assert (f > 0).all()


def test_lambda_weights_match_written_out_eq11_to_16():
    rng = random.Random(0)
    for _ in range(50):
        G = rng.choice([2, 4, 8, 16])
        lens = [rng.randint(1, 2048) for _ in range(G)]
        lam, r = rng.uniform(-5, 5), rng.choice([1 / 30, 1 / 15, 1 / 9])
        got = O.token_weights("lambda", torch.tensor([lens], dtype=torch.float64), lam=lam, r=r)[0]
        want = ref_lambda_weights(lens, lam, r)
        assert got.tolist() == pytest.approx(want, rel=1e-12)


def test_grpo_and_dr_grpo_closed_forms():
    lens = [[3, 5, 8, 100], [7, 7, 1, 9]]
    f_grpo = O.token_weights("grpo", torch.tensor(lens, dtype=torch.float64))
    f_dr = O.token_weights("dr_grpo", torch.tensor(lens, dtype=torch.float64))
    for row, fg, fd in zip(lens, f_grpo, f_dr):
        mu = sum(row) / len(row)
        assert fg.tolist() == pytest.approx([mu / x for x in row], rel=1e-14)
        assert fd.tolist() == pytest.approx([mu] * len(row), rel=1e-14)


def test_delta_l_closed_form():
    row, alpha = [10, 20, 40, 80], 0.75
    w = [x ** -alpha for x in row]
    want = [4 * wi / sum(w) for wi in w]
    got = O.token_weights("delta_l", torch.tensor([row], dtype=torch.float64), alpha=alpha)[0]
    assert got.tolist() == pytest.approx(want, rel=1e-13)


def test_lambda_zero_is_dapo_exactly():
    L = torch.tensor([[5.0, 17, 300, 2, 44, 9, 9, 1000]])
    assert torch.equal(O.token_weights("lambda", L, lam=0.0), torch.ones_like(L))


def test_lambda_sign_sets_direction():
    L = torch.tensor([[10.0, 20, 30, 40]])
    up = O.token_weights("lambda", L, lam=3.0)[0]
    down = O.token_weights("lambda", L, lam=-3.0)[0]
    assert all(a < b for a, b in zip(up, up[1:]))  # λ > 0 favours long responses
    assert all(a > b for a, b in zip(down, down[1:]))  # λ < 0 favours short ones


def test_population_sigma_option():
    lens = [10.0, 20, 30, 60]
    m = ref_mean(lens)
    sd_pop = math.sqrt(sum((x - m) ** 2 for x in lens) / 4)
    z = O.eq13_standardize(torch.tensor([lens]), sigma="population")[0]
    assert z.tolist() == pytest.approx([(x - m) / sd_pop for x in lens], rel=1e-14)


# ----------------------------------------------------------------------------------------------
# the unified objective equals Eq. 4, 5, 6 written out
# ----------------------------------------------------------------------------------------------
def written_out_objectives(b, lo, hi):
    """Eq. 4 (GRPO), Eq. 5 (DAPO), Eq. 6 (Dr.GRPO), averaged over groups, from per-token loops."""
    adv = O_adv_reference(b["rewards"])
    n_groups, G = b["lengths"].shape
    eq4 = eq5 = eq6 = 0.0
    for gi in range(n_groups):
        per_resp = []
        lens = []
        for j in range(G):
            i = gi * G + j
            n = int(b["lengths"][gi, j])
            s = sum(ref_token_surrogate(float(b["logp"][i, t]), float(b["old"][i, t]), adv[gi][j],
                                        lo, hi) for t in range(n))
            per_resp.append(s)
            lens.append(n)
        eq4 += sum(s / n for s, n in zip(per_resp, lens)) / G
        eq5 += sum(per_resp) / sum(lens)
        eq6 += sum(per_resp) / G
    return eq4 / n_groups, eq5 / n_groups, eq6 / n_groups


def O_adv_reference(rewards):
    out = []
    for row in rewards.tolist():
        m, sd = ref_mean(row), ref_sample_std(row)
        out.append([(x - m) / (sd + 1e-6) for x in row])
    return out


@pytest.mark.parametrize("lo,hi", [(0.2, 0.2), (0.2, 0.28)])
def test_unified_objective_reduces_to_eq4_eq5_eq6(lo, hi):
    b = make_group_batch(n_groups=3, G=4, T=12, seed=1)
    adv = O.eq3_group_advantages(b["rewards"]).flatten()
    want4, want5, want6 = written_out_objectives(b, lo, hi)
    denom = O.step_denominator("group", b["lengths"])
    got = {}
    for method in ("grpo", "dapo", "dr_grpo", "lambda"):
        out = O.policy_loss(b["logp"], b["old"], adv, b["mask"], b["group_lengths"], b["index"],
                            method=method, denominator=denom, lam=0.0, clip_low=lo, clip_high=hi)
        got[method] = -float(out.loss)
    assert got["grpo"] == pytest.approx(want4, rel=1e-12)
    assert got["dapo"] == pytest.approx(want5, rel=1e-12)
    assert got["dr_grpo"] == pytest.approx(want6, rel=1e-12)
    assert got["lambda"] == got["dapo"]  # λ = 0 is DAPO exactly


def test_eq7_per_group_from_sums_matches_policy_loss():
    b = make_group_batch(n_groups=2, G=8, T=10, seed=2)
    adv = O.eq3_group_advantages(b["rewards"])
    surr, _ = O.clipped_surrogate(b["logp"], b["old"], adv.flatten()[:, None].expand_as(b["logp"]))
    L = (surr * b["mask"]).sum(1).view(2, 8)
    J = O.eq7_unified_objective("lambda", b["lengths"], L, lam=1.3)
    out = O.policy_loss(b["logp"], b["old"], adv.flatten(), b["mask"], b["group_lengths"],
                        b["index"], method="lambda", lam=1.3, denominator=2.0)
    assert -float(out.loss) == pytest.approx(float(J.mean()), rel=1e-12)


def test_batch_scope_is_one_token_mean_over_the_step():
    b = make_group_batch(n_groups=3, G=4, T=9, seed=3)
    adv = O.eq3_group_advantages(b["rewards"]).flatten()
    a = O_adv_reference(b["rewards"])
    tot = n = 0.0
    for i in range(12):
        for t in range(int(b["mask"][i].sum())):
            tot += ref_token_surrogate(float(b["logp"][i, t]), float(b["old"][i, t]),
                                       a[i // 4][i % 4], 0.2, 0.2)
            n += 1
    out = O.policy_loss(b["logp"], b["old"], adv, b["mask"], b["group_lengths"], b["index"],
                        method="dapo", scope="batch",
                        denominator=O.step_denominator("batch", b["lengths"]))
    assert -float(out.loss) == pytest.approx(tot / n, rel=1e-12)


def test_dual_clip_bounds_negative_advantages():
    logp = torch.tensor([[2.0]])  # ratio e^2 ≈ 7.4: far beyond 1 + ε
    old = torch.tensor([[0.0]])
    surr, clipped = O.clipped_surrogate(logp, old, torch.tensor([[-1.0]]), dual_clip=3.0)
    assert float(surr) == pytest.approx(-3.0)  # max(min(-7.39, -1.2), -3) = -3
    surr2, _ = O.clipped_surrogate(logp, old, torch.tensor([[-1.0]]))
    assert float(surr2) == pytest.approx(-math.exp(2.0))
    assert bool(clipped.all())


def test_kl_and_entropy_are_outside_f():
    b = make_group_batch(n_groups=2, G=4, T=6, seed=4)
    adv = O.eq3_group_advantages(b["rewards"]).flatten()
    ref = b["logp"] + 0.1
    ent = torch.rand_like(b["logp"])
    kw = dict(method="lambda", lam=2.5, r=1 / 9, denominator=2.0)
    base = O.policy_loss(b["logp"], b["old"], adv, b["mask"], b["group_lengths"], b["index"], **kw)
    full = O.policy_loss(b["logp"], b["old"], adv, b["mask"], b["group_lengths"], b["index"],
                         ref_logp=ref, kl_coef=0.05, entropy=ent, entropy_coef=0.01, **kw)
    # written out: per group, token sums of KL (k3) and entropy over Σ|o|, averaged over groups
    kl_term = ent_term = 0.0
    for gi in range(2):
        tok = float(b["lengths"][gi].sum())
        for j in range(4):
            i = gi * 4 + j
            for t in range(int(b["lengths"][gi, j])):
                d = float(ref[i, t] - b["logp"][i, t])
                kl_term += (math.exp(d) - d - 1) / tok / 2
                ent_term += float(ent[i, t]) / tok / 2
    assert float(full.loss - base.loss) == pytest.approx(0.05 * kl_term - 0.01 * ent_term, rel=1e-10)


# ----------------------------------------------------------------------------------------------
# Eq. 20 against autograd
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lam", [-3.0, -0.5, 0.0, 0.7, 4.0])
@pytest.mark.parametrize("r", [1 / 30, 1 / 9])
def test_eq20_matches_autograd(lam, r):
    g = torch.Generator().manual_seed(int(1000 * lam) + int(1 / r))
    for G in (2, 4, 8, 16):
        lengths = torch.randint(1, 3000, (6, G), generator=g).double()
        L = torch.randn(6, G, generator=g) * lengths  # L_i scales like |o_i|·A_i
        lam_t = torch.tensor(lam, requires_grad=True)
        J = O.eq7_unified_objective("lambda", lengths, L, lam=lam_t, r=r)
        auto = torch.stack([torch.autograd.grad(J[k], lam_t, retain_graph=True)[0]
                            for k in range(6)])
        closed = O.eq20_lambda_grad(lengths, L, lam, r)
        assert closed.shape == (6,)
        assert torch.allclose(closed, auto, rtol=1e-9, atol=1e-15)


def test_eq20_by_finite_differences():
    """A third, derivative-free check: central differences of the written-out objective."""
    lens, L = [100, 250, 400, 900], [30.0, -12.0, 55.0, -80.0]
    r, lam, eps = 1 / 9, 1.7, 1e-6

    def J(l):
        f = ref_lambda_weights(lens, l, r)
        return sum(fi * Li for fi, Li in zip(f, L)) / sum(lens)

    fd = (J(lam + eps) - J(lam - eps)) / (2 * eps)
    got = float(O.eq20_lambda_grad(torch.tensor([lens], dtype=torch.float64),
                                   torch.tensor([L]), lam, r)[0])
    assert got == pytest.approx(fd, rel=1e-6)


def test_lambda_grad_sign_at_zero_is_sign_of_length_advantage_covariance():
    """At λ = 0 and on-policy (ratio 1, L_i = |o_i|·A_i), ∂J/∂λ has the sign of the
    within-group covariance of length and L_i (the first-order argument of the paper's Sec. 2.4)."""
    rng = random.Random(5)
    checked = 0
    for _ in range(300):
        G = 8
        lens = [rng.randint(20, 2000) for _ in range(G)]
        A = [rng.gauss(0, 1) for _ in range(G)]
        L = [n * a for n, a in zip(lens, A)]
        mL, ml = ref_mean(L), ref_mean(lens)
        cov = sum((x - ml) * (y - mL) for x, y in zip(lens, L)) / (G - 1)
        sx = ref_sample_std(lens)
        sy = ref_sample_std(L)
        if abs(cov) < 0.2 * sx * sy:
            continue  # near-zero correlation: the first-order sign argument does not decide
        lam = torch.tensor(0.0, requires_grad=True)
        J = O.eq7_unified_objective("lambda", torch.tensor([lens], dtype=torch.float64),
                                    torch.tensor([L]), lam=lam)
        (grad,) = torch.autograd.grad(J.sum(), lam)
        assert math.copysign(1, float(grad)) == math.copysign(1, cov)
        checked += 1
    assert checked > 100


# ----------------------------------------------------------------------------------------------
# exact under any batching
# ----------------------------------------------------------------------------------------------
def full_and_split(b, method, scope, lam0, splits, perm):
    adv = O.eq3_group_advantages(b["rewards"]).flatten()
    denom = O.step_denominator(scope, b["lengths"])
    kw = dict(method=method, scope=scope, denominator=denom, r=1 / 9, alpha=0.8,
              clip_low=0.2, clip_high=0.28, dual_clip=3.0)

    def run(order, chunks):
        logp = b["logp"].clone().requires_grad_()
        lam = torch.tensor(lam0, requires_grad=True)
        total = 0.0
        start = 0
        for size in chunks:
            idx = order[start:start + size]
            start += size
            out = O.policy_loss(logp[idx], b["old"][idx], adv[idx], b["mask"][idx],
                                b["group_lengths"][idx], b["index"][idx], lam=lam, **kw)
            out.loss.backward()  # gradient accumulation
            total += float(out.loss.detach())
        return total, logp.grad, lam.grad

    N = b["logp"].shape[0]
    full = run(torch.arange(N), [N])
    part = run(perm, splits)
    return full, part


@settings(max_examples=25, deadline=None)
@given(data=st.data(), method=st.sampled_from(sorted(O.METHODS)),
       scope=st.sampled_from(O.SCOPES), lam0=st.floats(-4, 4))
def test_batching_invariance(data, method, scope, lam0):
    n_groups = data.draw(st.integers(1, 4))
    G = data.draw(st.sampled_from([2, 4, 8]))
    b = make_group_batch(n_groups, G, T=7, seed=data.draw(st.integers(0, 10_000)))
    N = n_groups * G
    perm = torch.tensor(data.draw(st.permutations(range(N))))
    splits, left = [], N
    while left:
        s = data.draw(st.integers(1, left))
        splits.append(s)
        left -= s
    (lf, gf, lgf), (lp, gp, lgp) = full_and_split(b, method, scope, lam0, splits, perm)
    assert lp == pytest.approx(lf, rel=1e-9, abs=1e-15)
    assert torch.allclose(gp, gf, rtol=1e-9, atol=1e-15)
    if method == "lambda":
        assert float(lgp) == pytest.approx(float(lgf), rel=1e-9, abs=1e-15)


def test_lambda_gradient_batched_equals_eq20_mean():
    """The λ gradient of a whole step through policy_loss equals the mean over groups of
    Eq. 20 evaluated on the same per-response surrogate sums (group scope)."""
    b = make_group_batch(n_groups=5, G=8, T=11, seed=7)
    adv = O.eq3_group_advantages(b["rewards"]).flatten()
    lam = torch.tensor(0.9, requires_grad=True)
    out = O.policy_loss(b["logp"], b["old"], adv, b["mask"], b["group_lengths"], b["index"],
                        method="lambda", lam=lam, denominator=5.0)
    out.loss.backward()
    surr, _ = O.clipped_surrogate(b["logp"], b["old"], adv[:, None].expand_as(b["logp"]))
    L = (surr * b["mask"]).sum(1).view(5, 8)
    want = -float(O.eq20_lambda_grad(b["lengths"], L, 0.9, 1 / 9).mean())  # loss = -J
    assert float(lam.grad) == pytest.approx(want, rel=1e-10)


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------
def test_sigma_zero_gives_f_one():
    L = torch.tensor([[2048.0] * 8])
    for lam in (-4.0, 0.0, 3.0):
        assert torch.equal(O.token_weights("lambda", L, lam=lam), torch.ones(1, 8))
    assert torch.equal(O.eq20_lambda_grad(L, torch.randn(1, 8), 2.0), torch.zeros(1))


def test_group_of_one_is_an_error():
    with pytest.raises(ValueError, match="G >= 2"):
        O.token_weights("lambda", torch.tensor([[5.0]]))
    with pytest.raises(ValueError, match="G >= 2"):
        O.eq3_group_advantages(torch.tensor([[1.0]]))


def test_h_nonpositive_names_r_and_G():
    lens = torch.tensor([[1000.0] * 15 + [1.0]])  # z of the short one = -3.75 (sample sigma)
    with pytest.raises(ValueError, match=r"r = 0\.5.*G = 16"):
        O.token_weights("lambda", lens, lam=1.0, r=0.5)  # h = 1 - 0.5*3.75 < 0
    # r = 1/9 is safe for G = 16 whatever the lengths (Samuelson bound: |z| <= 15/4)
    f = O.token_weights("lambda", lens, lam=1.0, r=1 / 9)
    assert float(f.sum()) == pytest.approx(16.0)
    for bad_r in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="r must be"):
            O.token_weights("lambda", lens, lam=1.0, r=bad_r)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -3.0])
def test_bad_lengths_rejected(bad):
    with pytest.raises(ValueError):
        O.token_weights("dapo", torch.tensor([[3.0, bad, 4.0]]))


def test_zero_length_responses():
    L = torch.tensor([[0.0, 4.0, 8.0, 12.0]])
    # defined for dapo, dr_grpo, lambda
    assert O.token_weights("dapo", L).tolist() == [[1.0] * 4]
    assert O.token_weights("lambda", L, lam=1.0).sum().item() == pytest.approx(4.0)
    for m in ("grpo", "delta_l"):
        with pytest.raises(ValueError, match="zero-length"):
            O.token_weights(m, L)
    with pytest.raises(ValueError, match="no response tokens"):
        O.eq7_unified_objective("dapo", torch.zeros(1, 4), torch.zeros(1, 4))


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method"):
        O.token_weights("ppo", torch.tensor([[1.0, 2.0]]))


def _loss_args(seed=0):
    b = make_group_batch(2, 4, 5, seed)
    adv = O.eq3_group_advantages(b["rewards"]).flatten()
    return b, adv


@pytest.mark.parametrize("which", ["logp", "old", "adv"])
def test_nan_on_response_tokens_named(which):
    b, adv = _loss_args()
    logp, old = b["logp"].clone(), b["old"].clone()
    if which == "logp":
        logp[0, 0] = float("nan")
    elif which == "old":
        old[0, 0] = float("inf")
    else:
        adv = adv.clone()
        adv[0] = float("nan")
    name = {"logp": "logp", "old": "old_logp", "adv": "advantages"}[which]
    with pytest.raises(ValueError, match=f"{name} contains NaN or inf on response tokens"):
        O.policy_loss(logp, old, adv, b["mask"], b["group_lengths"], b["index"], method="dapo",
                      denominator=2.0)


def test_nan_in_padding_named():
    b, adv = _loss_args()
    pad = (~b["mask"]).nonzero()[0].tolist()
    logp = b["logp"].clone()
    logp[pad[0], pad[1]] = float("nan")
    with pytest.raises(ValueError, match="logp contains NaN or inf in padding"):
        O.policy_loss(logp, b["old"], adv, b["mask"], b["group_lengths"], b["index"],
                      method="dapo", denominator=2.0)


def test_mask_shape_and_values_and_length_mismatch():
    b, adv = _loss_args()
    kw = dict(method="dapo", denominator=2.0)
    with pytest.raises(ValueError, match="mask has shape"):
        O.policy_loss(b["logp"], b["old"], adv, b["mask"][:, :-1], b["group_lengths"], b["index"], **kw)
    with pytest.raises(ValueError, match="only 0 and 1"):
        O.policy_loss(b["logp"], b["old"], adv, b["mask"].double() * 2, b["group_lengths"],
                      b["index"], **kw)
    gl = b["group_lengths"].clone()
    gl[0, 0] += 1
    with pytest.raises(ValueError, match="mask lengths disagree"):
        O.policy_loss(b["logp"], b["old"], adv, b["mask"], gl, b["index"], **kw)
    with pytest.raises(ValueError, match="index out of range"):
        O.policy_loss(b["logp"], b["old"], adv, b["mask"], b["group_lengths"], b["index"] + 4, **kw)
    with pytest.raises(ValueError, match="advantages must be"):
        O.policy_loss(b["logp"], b["old"], adv[:3], b["mask"], b["group_lengths"], b["index"], **kw)
    for bad in (0.0, float("nan")):
        with pytest.raises(ValueError, match="denominator"):
            O.policy_loss(b["logp"], b["old"], adv, b["mask"], b["group_lengths"], b["index"],
                          method="dapo", denominator=bad)


def test_equal_rewards_give_zero_advantage():
    A = O.eq3_group_advantages(torch.tensor([[1.0, 1.0, 1.0, 1.0], [-1.0, 1.0, 1.0, 1.0]]))
    assert torch.equal(A[0], torch.zeros(4))
    row = [-1.0, 1.0, 1.0, 1.0]
    m, sd = ref_mean(row), ref_sample_std(row)
    assert A[1].tolist() == pytest.approx([(x - m) / (sd + 1e-6) for x in row], rel=1e-12)
    assert O.eq3_group_advantages(torch.tensor([row]), scale="none")[0].tolist() == \
        pytest.approx([x - m for x in row])


# ----------------------------------------------------------------------------------------------
# λ and its optimizer
# ----------------------------------------------------------------------------------------------
def test_learnable_lambda_sgd_step_and_state():
    lam = O.LearnableLambda(dtype=torch.float64)
    assert lam.value == 0.0
    assert lam.optimizer.param_groups[0]["lr"] == 0.1
    assert lam.optimizer.param_groups[0]["weight_decay"] == 0.0
    (lam.param * 2.5).backward()  # d/dλ = 2.5
    applied = lam.step()
    assert applied == 2.5
    assert lam.value == pytest.approx(-0.25)  # SGD: λ - lr·grad
    assert lam.param.grad is None
    state = lam.state_dict()
    other = O.LearnableLambda(dtype=torch.float64)
    other.load_state_dict(state)
    assert other.value == lam.value


def test_nan_lambda_gradient_refused():
    lam = O.LearnableLambda()
    lam.param.grad = torch.tensor(float("nan"), dtype=torch.float32)
    with pytest.raises(ValueError, match="lambda gradient"):
        lam.step()
    assert lam.value == 0.0


def test_surrogate_sums_are_the_written_out_L():
    b = make_group_batch(n_groups=2, G=4, T=7, seed=11)
    adv = O.eq3_group_advantages(b["rewards"]).flatten()
    a = O_adv_reference(b["rewards"])
    out = O.policy_loss(b["logp"], b["old"], adv, b["mask"], b["group_lengths"], b["index"],
                        method="dapo", denominator=2.0)
    for i in range(8):
        want = sum(ref_token_surrogate(float(b["logp"][i, t]), float(b["old"][i, t]),
                                       a[i // 4][i % 4], 0.2, 0.2)
                   for t in range(int(b["mask"][i].sum())))
        assert float(out.surrogate_sums[i]) == pytest.approx(want, rel=1e-12)


def test_within_group_cov_is_the_sample_covariance():
    x, y = [3.0, 8.0, 1.0, 4.0], [0.5, -1.0, 2.0, 0.0]
    mx, my = ref_mean(x), ref_mean(y)
    want = sum((a - mx) * (b - my) for a, b in zip(x, y)) / 3
    assert float(O.within_group_cov(torch.tensor([x]), torch.tensor([y]))[0]) == pytest.approx(want)
    with pytest.raises(ValueError, match="G >= 2"):
        O.within_group_cov(torch.tensor([[1.0]]), torch.tensor([[2.0]]))


# ----------------------------------------------------------------------------------------------
# issue 23: λ's weights at DAPO's cost. The closed-form λ gradient (Eq. 17-18 in _Eq16) against
# autograd through plain torch ops; the value checks of policy_loss, each run once and read back
# in one sync; no MKL-vector-math ops on the O(samples) path. (Tensors carry their own dtype.)
# ----------------------------------------------------------------------------------------------
def _autograd_lambda_weights(lengths, lam, r):
    """f = G·softmax((1 + r·z)^λ) with torch.std (ddof 1) and torch.softmax: autograd's λ gradient."""
    sd = lengths.std(dim=-1, keepdim=True)
    z = torch.where(sd > 0, (lengths - lengths.mean(dim=-1, keepdim=True)) / sd, torch.zeros_like(sd))
    return lengths.shape[-1] * torch.softmax(torch.pow(1 + r * z, lam), dim=-1)


@pytest.mark.parametrize("lam0", [0.0, 0.7, -3.0, 25.0])
def test_closed_form_lambda_gradient_matches_autograd(lam0):
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(1, 2000, (6, 8), generator=g, dtype=torch.float64)
    lengths[2] = 17.0  # σ = 0: z = 0, f = 1, ∂f/∂λ = 0
    w = torch.randn(6, 8, generator=g, dtype=torch.float64)
    lam = torch.tensor(lam0, dtype=torch.float64, requires_grad=True)
    f = O.token_weights("lambda", lengths, lam=lam, r=1 / 9)
    (f * w).sum().backward()
    lam_ref = torch.tensor(lam0, dtype=torch.float64, requires_grad=True)
    f_ref = _autograd_lambda_weights(lengths, lam_ref, 1 / 9)
    (f_ref * w).sum().backward()
    assert torch.allclose(f, f_ref, rtol=1e-13, atol=0)
    assert float(lam.grad) == pytest.approx(float(lam_ref.grad), rel=1e-11, abs=1e-14)
    assert torch.equal(f[2], torch.ones(8, dtype=torch.float64))


def test_closed_form_lambda_gradient_broadcast_grid():
    g = torch.Generator().manual_seed(4)
    lengths = torch.randint(1, 500, (3, 4), generator=g, dtype=torch.float64)
    grid = torch.tensor([-2.0, 0.5, 4.0], dtype=torch.float64).view(3, 1, 1).requires_grad_()
    w = torch.randn(3, 3, 4, generator=g, dtype=torch.float64)
    (O.eq16_lambda_weights(lengths, grid, 0.2) * w).sum().backward()
    ref = grid.detach().clone().requires_grad_()
    (_autograd_lambda_weights(lengths, ref, 0.2) * w).sum().backward()
    assert grid.grad.shape == (3, 1, 1)
    assert torch.allclose(grid.grad, ref.grad, rtol=1e-11, atol=1e-14)


def _lambda_loss_inputs(dtype=torch.float64):
    b = make_group_batch(3, 4, 6, seed=21)
    adv = torch.linspace(-1, 1, 12, dtype=dtype)
    return dict(logp=b["logp"].to(dtype), old_logp=b["old"].to(dtype), advantages=adv, mask=b["mask"],
                group_lengths=b["group_lengths"].to(dtype), index=b["index"].clone())


@pytest.mark.parametrize("bad,match", [
    ("negative_other", "lengths must be >= 0"),
    ("nan_other", "lengths contains NaN or inf"),
    ("inf_other", "lengths contains NaN or inf"),
    ("index", "index out of range"),
    ("own_length", "mask lengths disagree"),
    ("empty_group", "no response tokens"),
    ("nan_lambda", "token-preference weights f contains NaN"),
    ("nan_old", "old_logp contains NaN or inf on response tokens"),
    ("inf_logp_padding", "logp contains NaN or inf in padding"),
    ("nan_ref", "ref_logp contains NaN or inf on response tokens"),
])
def test_lambda_policy_loss_names_each_bad_value(bad, match):
    """Every value check of policy_loss, on the λ path, where the checks are read back once."""
    x = _lambda_loss_inputs()
    kw = dict(method="lambda", r=1 / 9, denominator=3.0, lam=torch.tensor(0.5, dtype=torch.float64))
    gl, mask = x["group_lengths"], x["mask"]
    if bad == "negative_other":  # a member of sample 0's group that is not sample 0
        gl[0, 1] = -3.0
    elif bad == "nan_other":
        gl[0, 1] = float("nan")
    elif bad == "inf_other":
        gl[0, 1] = float("inf")
    elif bad == "index":
        x["index"][5] = -1
    elif bad == "own_length":
        gl[0, 0] += 1
    elif bad == "empty_group":
        gl[4:8] = 0.0
        mask[4:8] = False
    elif bad == "nan_lambda":
        kw["lam"] = torch.tensor(float("nan"), dtype=torch.float64)
    elif bad == "nan_old":
        x["old_logp"][1, 0] = float("nan")
    elif bad == "inf_logp_padding":
        i, t = (~mask).nonzero()[0].tolist()
        x["logp"][i, t] = -float("inf")
    elif bad == "nan_ref":
        kw.update(ref_logp=x["logp"].clone(), kl_coef=0.1)
        kw["ref_logp"][2, 0] = float("nan")
    with pytest.raises(ValueError, match=match):
        O.policy_loss(**x, **kw)


from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_lambda_policy_loss_reads_values_back_once_and_avoids_vector_math_ops():
    """One host read-back (all value checks together) per call, and on the O(samples) λ path no
    exp/log/sqrt/softmax, which on CPU open an OpenMP region even for a few hundred values."""
    x = _lambda_loss_inputs()
    logp = x.pop("logp").requires_grad_()
    lam = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    with _Ops() as ops:
        out = O.policy_loss(logp, **x, method="lambda", r=1 / 9, denominator=3.0, lam=lam)
        out.loss.backward()
    assert ops.names.count("_local_scalar_dense") == 1
    assert lam.grad is not None and logp.grad is not None
    with _Ops() as w_ops:
        f = O.token_weights("lambda", x["group_lengths"], lam=lam, r=1 / 9)
        f.sum().backward()
    assert not {"exp", "log", "sqrt", "_softmax", "_softmax_backward_data"} & set(w_ops.names)


def test_the_math_imports_no_framework_and_each_module_stays_small():
    """repro.objective is pure PyTorch: its modules import the standard library, torch and each
    other, nothing else of the package or a training framework; one idea per module (<= 500 lines)."""
    import ast
    import pathlib
    import sys

    pkg = pathlib.Path(O.__file__).parent
    files = sorted(pkg.glob("*.py"))
    assert {p.stem for p in files} == {"__init__", "weights", "methods", "surrogate", "loss"}
    for p in files:
        text = p.read_text()
        assert len(text.splitlines()) <= 500, p
        tree = ast.parse(text)
        mods = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        mods += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        for m in mods:
            top = m.split(".")[0]
            assert (m.startswith("repro.objective") or top == "torch" or top == "__future__"
                    or top in sys.stdlib_module_names), (p.name, m)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dual_clip", [None, 3.0])
def test_surrogate_sums_gradient_equals_autograd_through_exp_clamp_minimum(dual_clip, dtype):
    """The closed-form backward of ``surrogate_sums`` (m·ρA where unclipped, 0 where clipped)
    against autograd through the written-out chain exp → clamp → minimum (→ dual clip), bit for bit, with
    tokens in every case: inside the clip range (ρA = clip(ρ)A: minimum's tie), clipped above and
    below, A < 0 past the dual clip, A = 0, ρ exactly at 1 ± ε, and padding."""
    g = torch.Generator().manual_seed(3)
    N, T = 6, 40
    log_ratio = 0.6 * torch.randn(N, T, generator=g, dtype=dtype)
    log_ratio[0, :4] = torch.log(torch.tensor([0.8, 1.2, 1.0, 1.0], dtype=dtype))  # at the clip edges, ρ = 1
    adv = torch.randn(N, 1, generator=g, dtype=dtype)
    adv[1] = 0.0
    adv[2] = -2.0
    log_ratio[2, :5] = 2.5  # ρ ≈ 12: with A < 0 past a dual clip of 3
    mask = (torch.rand(N, T, generator=g) < 0.8).to(log_ratio.dtype)
    w = torch.randn(N, generator=g, dtype=dtype)  # an arbitrary upstream gradient per sample

    lr_a = log_ratio.clone().requires_grad_()
    ratio = torch.exp(lr_a)
    s = torch.minimum(ratio * adv, torch.clamp(ratio, 0.8, 1.2) * adv)
    if dual_clip is not None:
        s = torch.where(adv < 0, torch.maximum(s, dual_clip * adv), s)
    L_ref = (s * mask).sum(dim=1)
    (w * L_ref).sum().backward()

    lr_b = log_ratio.clone().requires_grad_()
    L, clipped = O.surrogate_sums(lr_b, adv, mask, clip_low=0.2, clip_high=0.2, dual_clip=dual_clip)
    (w * L).sum().backward()
    torch.testing.assert_close(L, L_ref.detach(), rtol=0, atol=0)
    assert torch.equal(lr_b.grad, lr_a.grad)  # bit for bit: the same roundings in the same order
    assert bool(clipped.any()) and bool((~clipped).any())
    # without a gradient it is the same sums, through the plain path
    L2, clipped2 = O.surrogate_sums(log_ratio, adv, mask, dual_clip=dual_clip)
    assert torch.equal(L2, L.detach()) and torch.equal(clipped2, clipped)
    # a gradient wanted for A too: autograd's chain, both gradients as the written-out one
    lr_c, adv_c = log_ratio.clone().requires_grad_(), adv.clone().requires_grad_()
    L3, _ = O.surrogate_sums(lr_c, adv_c, mask, dual_clip=dual_clip)
    (w * L3).sum().backward()
    lr_d, adv_d = log_ratio.clone().requires_grad_(), adv.clone().requires_grad_()
    ratio = torch.exp(lr_d)
    s = torch.minimum(ratio * adv_d, torch.clamp(ratio, 0.8, 1.2) * adv_d)
    if dual_clip is not None:
        s = torch.where(adv_d < 0, torch.maximum(s, dual_clip * adv_d), s)
    (w * (s * mask).sum(dim=1)).sum().backward()
    assert torch.equal(lr_c.grad, lr_d.grad) and torch.equal(adv_c.grad, adv_d.grad)
