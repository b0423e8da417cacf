"""The CPU reference trainer, the synthetic task and the pretraining script (a few steps each)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil

import pytest
import torch

from repro.runs import REQUIRED, Run, validate_record
from repro.tasks import arith
from repro.trainers import reference
from repro.trainers.reference import TrainConfig, train

# the tiny runs' sizes, as --set overrides on the composed CPU config (everything else as the demo
# trains it); no periodic evaluation unless a test asks for it
TINY = dict(steps=4, prompts_per_rollout=2, group_size=4, max_new_tokens=16, checkpoint_every=0,
            eval_problems=8, eval_every=0, r=0.3, threads=1)


def _tc(method: str = "lambda", task: str = "sum", **sets) -> TrainConfig:
    """The CPU config of (task, method) composed as the demo composes it (``load_cpu_config``:
    base + tasks/<task> + methods/<method>), with ``sets`` as --set overrides. Flat weighting
    keys go under ``weighting``: r, sigma, alpha where the method takes them (so TINY's r reaches
    only λ-GRPO)."""
    from repro import objective as obj

    own = {f.name for f in dataclasses.fields(obj.get_method(method).params)} if method in obj.METHODS else set()
    for k in ("r", "sigma", "alpha"):
        if k in sets:
            v = sets.pop(k)
            if k in own:
                sets[f"weighting.{k}"] = v
    return reference.load_cpu_config(task, method, sets)


def _cfg(**kw) -> TrainConfig:
    return _tc(**{**TINY, **kw})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for m in ("grpo", "dapo", "dr_grpo", "lambda", "delta_l"):
        out[m] = train(_cfg(method=m, lr=1e-3, adv_scale="none" if m == "dr_grpo" else "std"),
                       root / m, progress=False)
    return out


# ----------------------------------------------------------------------------------------------
# the task and tokenizer
# ----------------------------------------------------------------------------------------------
def test_solutions_are_correct_and_styles_differ_in_length():
    rng = random.Random(1)
    tok = arith.build_tokenizer()
    for p in arith.sample_problems(50, rng):
        lens = {}
        for style in arith.STYLES:
            text = arith.solution(p, style)
            # the answer in the box is the true sum, computed independently here
            assert text.endswith("\\boxed{" + str(sum(p.xs)) + "}")
            assert arith.classify_style(text) == style
            ids = arith.encode_response(tok, text)
            assert tok.decode(ids, skip_special_tokens=True) == text
            lens[style] = len(ids)
        assert lens["direct"] < lens["terse"] < lens["verbose"]
        # every intermediate running sum in a verbose chain is right
        for step in arith.solution(p, "verbose").split(";")[0].split(","):
            lhs, rhs = step.split("=")
            a, b = lhs.split("+")
            assert int(a) + int(b) == int(rhs)


def test_boxed_is_one_token_and_vocab_is_small():
    tok = arith.build_tokenizer()
    ids = tok.encode("\\boxed{12}", add_special_tokens=False)
    assert len(ids) == 4 and tok.convert_ids_to_tokens(ids[0]) == "\\boxed{"
    assert len(tok) == len(arith.VOCAB) < 32


def test_train_and_test_splits_are_disjoint():
    rng = random.Random(0)
    train_p = {p.prompt for p in arith.sample_problems(2000, rng, "train")}
    test_p = {p.prompt for p in arith.sample_problems(300, rng, "test")}
    assert not train_p & test_p
    assert all(arith.is_test(arith.Problem(tuple(map(int, q[1:-1].split("+"))))) for q in test_p)


def test_budget_variant_cuts_verbose_but_not_terse():
    tok = arith.build_tokenizer()
    budget = arith.get_variant("budget").max_new_tokens
    big = arith.Problem((99, 99, 99))
    assert len(arith.encode_response(tok, arith.solution(big, "verbose"))) > budget
    worst = arith.Problem((99, 99, 99, 99, 99))
    assert len(arith.encode_response(tok, arith.solution(worst, "terse"))) <= budget


# ----------------------------------------------------------------------------------------------
# the trainer
# ----------------------------------------------------------------------------------------------
def test_every_method_writes_schema_lines(runs):
    for m, run in runs.items():
        recs = run.metrics()
        assert [r["step"] for r in recs] == [1, 2, 3, 4]
        for r in recs:
            validate_record(r)
            assert set(REQUIRED) <= set(r)
            assert r["method"] == m
            assert 0 <= r["accuracy"] <= 1 and -1 <= r["reward_mean"] <= 1
            assert 1 <= r["response_length_mean"] <= r["response_length_max"] <= 16
            # mean f is 1 for every method whose weights sum to G (all but grpo, dr_grpo)
            if m in ("dapo", "lambda", "delta_l"):
                assert math.isclose(r["f_mean"], 1.0, rel_tol=1e-5)
        assert run.is_done()
        assert run.eval_scores()["benchmarks"]["sum_heldout"]["n"] == 8
        assert (run.checkpoints_dir / "latest" / "model.safetensors").is_file()


def test_lambda_moves_only_for_lambda(runs):
    lam = [r["lambda"] for r in runs["lambda"].metrics()]
    grads = [r["lambda_grad"] for r in runs["lambda"].metrics()]
    assert any(abs(v) > 1e-6 for v in lam)
    # SGD lr 0.1 on λ: each step moves λ by -0.1 * grad (independent bookkeeping)
    prev = 0.0
    for v, g in zip(lam, grads):
        assert math.isclose(v, prev - 0.1 * g, rel_tol=1e-5, abs_tol=1e-7)
        prev = v
    for m in ("grpo", "dapo", "dr_grpo", "delta_l"):
        assert all(r["lambda"] == 0.0 and r["lambda_grad"] is None for r in runs[m].metrics())


def test_recorded_groups_reproduce_the_lambda_gradient_through_eq20(tmp_path):
    """End to end: with every group recorded, minus the mean of Eq. 20 over the step's groups
    (closed form, on the lengths and surrogate sums the trainer saw) is the λ gradient the
    trainer applied (group scope; KL and entropy do not depend on λ)."""
    from repro.objective import eq20_lambda_grad

    run = train(_cfg(method="lambda", lr=1e-3, record_groups=2, kl_coef=0.01), tmp_path / "g",
                progress=False)
    groups = run.groups()
    assert [g["step"] for g in groups] == [1, 1, 2, 2, 3, 3, 4, 4]
    for rec in run.metrics():
        gs = [g for g in groups if g["step"] == rec["step"]]
        lens = torch.tensor([g["lengths"] for g in gs], dtype=torch.float64)
        L = torch.tensor([g["L"] for g in gs], dtype=torch.float64)
        closed = -float(eq20_lambda_grad(lens, L, gs[0]["lambda"], gs[0]["r"]).mean())
        assert math.isclose(closed, rec["lambda_grad"], rel_tol=1e-4, abs_tol=1e-7)


def test_f_spread_matches_length_rule(runs):
    # dapo: f = 1 exactly; grpo: f = mu/|o| varies unless all lengths are equal
    assert all(r["f_std"] == 0.0 for r in runs["dapo"].metrics())
    for r in runs["grpo"].metrics():
        assert r["f_min"] <= 1.0 + 1e-6 <= r["f_max"] + 2e-6


def test_resume_reproduces_next_steps(tmp_path):
    full = train(_cfg(method="lambda", checkpoint_every=2, lr=1e-3), tmp_path / "a", progress=False)
    # an interrupted copy: keep only the step-2 checkpoint, then resume
    b = tmp_path / "b"
    shutil.copytree(full.path, b, symlinks=True)
    shutil.rmtree(b / "checkpoints" / "step_000004")
    os.remove(b / "checkpoints" / "latest")
    os.symlink("step_000002", b / "checkpoints" / "latest")
    os.remove(b / "DONE")
    resumed = train(_cfg(method="lambda", checkpoint_every=2, lr=1e-3), b, resume=True,
                    progress=False)
    ra, rb = full.metrics(), resumed.metrics()
    assert [r["step"] for r in rb] == [1, 2, 3, 4]
    for x, y in zip(ra[2:], rb[2:]):
        x, y = dict(x), dict(y)
        x.pop("time_s"), y.pop("time_s")
        assert x == y
    wa = torch.load(full.checkpoints_dir / "step_000004" / "trainer_state.pt", weights_only=False)
    wb = torch.load(resumed.checkpoints_dir / "step_000004" / "trainer_state.pt", weights_only=False)
    assert wa["lambda"]["lambda"] == wb["lambda"]["lambda"]  # the contract's λ state: a float
    assert [g["step"] for g in resumed.groups()] == [g["step"] for g in full.groups()]


@pytest.mark.parametrize("kw, exc, words", [
    (dict(group_size=1), ValueError, "G >= 2"),
    (dict(r=0.0), ValueError, "r must be"),
    (dict(r=-0.1), ValueError, "r must be"),
    (dict(method="ppo"), ValueError, "no method 'ppo'"),
    (dict(task="nope"), ValueError, "no task 'nope'"),
    ({"weighting.method": "ppo"}, ValueError, "unknown method"),
    (dict(lr=0.0), ValueError, "lr and temperature must be > 0"),
    (dict(init_checkpoint="/nonexistent/ckpt"), FileNotFoundError, "no config.json"),
    (dict(group_size=8, r=0.5), ValueError, "can make h"),
    (dict(ppo_epochs=2, checkpoint_every=3), ValueError, "multiple of ppo_epochs"),
    (dict(device="cuda"), ValueError, "CPU only"),
])
def test_bad_configs_get_clear_errors(tmp_path, kw, exc, words):
    with pytest.raises(exc, match=words):
        train(_cfg(**kw), tmp_path / "x", progress=False)
    assert not (tmp_path / "x" / "metrics.jsonl").exists()


def _complete_yaml(path, **replace_text) -> None:
    """A complete config file (the composed sum/dapo config, as a run's config.yaml holds it),
    with some keys written as raw YAML text."""
    import yaml

    d = reference.load_cpu_config("sum", "dapo").to_dict()
    for k in replace_text:
        d.pop(k, None)
    path.write_text(yaml.safe_dump(d) + "".join(f"{k}: {v}\n" for k, v in replace_text.items()))


def test_unknown_yaml_key_is_rejected(tmp_path):
    p = tmp_path / "c.yaml"
    _complete_yaml(p, learning_rate="1e-3")
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_yaml(p)


def test_a_config_without_every_key_is_refused_with_the_missing_keys(tmp_path):
    """The YAML layers are the one source of values: TrainConfig fills in nothing."""
    p = tmp_path / "c.yaml"
    p.write_text("weighting: {method: dapo}\nlr: 1.0e-4\nsteps: 3\n")
    with pytest.raises(ValueError, match="missing") as e:
        TrainConfig.from_yaml(p)
    assert "'kl_coef'" in str(e.value) and "'lr'" not in str(e.value)
    with pytest.raises(TypeError):
        TrainConfig()  # no defaults of its own
    # nor for λ's SGD: a weighting block without lambda: {init, lr} is refused too
    for weighting in ("{method: lambda}", "{method: lambda, lambda: {lr: 0.1}}", "{lambda: {init: 0, lr: 0.1}}"):
        _complete_yaml(p, weighting=weighting)
        with pytest.raises(ValueError, match="must give method and lambda"):
            TrainConfig.from_yaml(p)
    _complete_yaml(p, weighting="{method: lambda, lambda: {init: 0.5, lr: 2}}")
    cfg = TrainConfig.from_yaml(p)
    assert (cfg.weighting.lambda_.init, cfg.weighting.lambda_.lr) == (0.5, 2.0)


def test_the_composed_cpu_config_is_base_yaml(tmp_path):
    """Every value of a composed config comes from the YAML files (read here with yaml alone):
    base.yaml, then the task's and the method's layers."""
    import yaml

    from repro import config as layers

    base = yaml.safe_load((layers.CPU_DIR / "base.yaml").read_text())
    task = yaml.safe_load((layers.CPU_DIR / "tasks" / "budget.yaml").read_text())
    method = yaml.safe_load((layers.CPU_DIR / "methods" / "dr_grpo.yaml").read_text())
    cfg = reference.load_cpu_config("budget", "dr_grpo").to_dict()
    for k, v in {**base, **task, **method}.items():
        if k != "weighting":
            assert cfg[k] == (float(v) if isinstance(cfg[k], float) else v), k
    assert cfg["weighting"] == {**base["weighting"], **method["weighting"]}
    assert set(cfg) == set(base) | {"task"}  # base.yaml names every key but the task's own
    assert (cfg["task"], cfg["adv_scale"], base["adv_scale"]) == ("budget", "none", "std")


def test_yaml_numbers_without_dot_are_numbers(tmp_path):
    p = tmp_path / "c.yaml"
    _complete_yaml(p, lr="1e-4", steps="3")  # YAML 1.1 reads 1e-4 as a string
    cfg = TrainConfig.from_yaml(p)
    assert cfg.lr == 1e-4 and isinstance(cfg.lr, float) and cfg.steps == 3
    _complete_yaml(p, lr="fast")
    with pytest.raises(ValueError, match="must be a number"):
        TrainConfig.from_yaml(p)


def test_each_resolved_cpu_config_computes_the_method_its_name_says():
    """base + tasks/<task> + methods/<method>: the resolved config trains that task with that
    method's weights (checked on one group against the formulas written out here)."""
    from repro import config as layers

    assert layers.cpu_tasks() == ["budget", "sum"]
    assert layers.cpu_methods() == sorted(["grpo", "dapo", "dr_grpo", "lambda", "delta_l"])
    lens = torch.tensor([[3.0, 5.0, 8.0, 12.0]], dtype=torch.float64)
    mu = float(lens.mean())
    z = (lens - mu) / lens.std()
    expect = {"grpo": mu / lens, "dapo": torch.ones_like(lens), "dr_grpo": torch.full_like(lens, mu),
              "delta_l": 4 * (1 / lens) / (1 / lens).sum(),
              "lambda": 4 * torch.softmax((1 + z / 9) ** 0.7, dim=-1)}
    for task in layers.cpu_tasks():
        for method in layers.cpu_methods():
            cfg = reference.load_cpu_config(task, method).validate()
            assert (cfg.task, cfg.method) == (task, method)
            assert cfg.adv_scale == ("none" if method == "dr_grpo" else "std")
            f = cfg.weighting.weighting.weights(lens, lam=0.7)
            assert torch.allclose(f, expect[method], rtol=1e-12), (task, method)
            assert cfg.weighting.learnable == (method == "lambda")
            assert (cfg.weighting.lambda_.init, cfg.weighting.lambda_.lr) == (0.0, 0.1)
    cfg = reference.load_cpu_config("sum", "lambda", {"weighting.lambda.lr": 10, "weighting.r": "1/3",
                                                      "steps": 6})
    assert cfg.weighting.lambda_.lr == 10.0 and cfg.weighting.params.r == 1 / 3 and cfg.steps == 6
    with pytest.raises(ValueError, match="takes parameters"):
        reference.load_cpu_config("sum", "dapo", {"weighting.r": 0.2})  # dapo has no r
    with pytest.raises(ValueError, match="no task"):
        reference.load_cpu_config("nope", "dapo")


def test_tiny_run_is_a_valid_run(tmp_path, tiny_run):
    run = tiny_run(tmp_path / "t", method="dapo", steps=2, seed=3)
    assert Run(run.path).meta()["seed"] == 3 and len(run.metrics()) == 2
    assert json.loads((run.path / "DONE").read_text())["steps"] == 2


def test_pretrain_script_runs(tmp_path):
    from repro.trainers import pretrain

    pretrain.main(["--out", str(tmp_path / "p"), "--steps", "2", "--batch-size", "8",
                   "--eval-problems", "4", "--threads", "1"])
    info = json.loads((tmp_path / "p" / "pretrain.json").read_text())
    assert info["steps"] == 2 and info["params"] > 100_000
    model, tok = reference.load_policy(tmp_path / "p")
    assert model.config.num_hidden_layers == 2 and len(tok) == len(arith.VOCAB)


# ----------------------------------------------------------------------------------------------
# in-training evaluation (eval_every) and the ablation's settings
# ----------------------------------------------------------------------------------------------
_WALL = {"time_s", "eval_accuracy", "eval_length"}


def test_periodic_eval_leaves_training_unchanged_and_scores_the_checkpoint(tmp_path):
    from repro.trainers.rollout import evaluate, load_policy

    kw = dict(method="lambda", lr=1e-3, checkpoint_every=2, ppo_epochs=2)
    plain = train(_cfg(**kw), tmp_path / "plain", progress=False)
    ev_run = train(_cfg(**kw, eval_every=2, eval_every_problems=6), tmp_path / "ev", progress=False)
    a, b = plain.metrics(), ev_run.metrics()
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):  # every training quantity identical, bit for bit
        assert {k: v for k, v in ra.items() if k not in _WALL} == {k: v for k, v in rb.items() if k not in _WALL}
    assert plain.eval_scores()["benchmarks"] == ev_run.eval_scores()["benchmarks"]
    per = ev_run.periodic_evals()
    assert [p["step"] for p in per] == [0, 2, 4] and {p["n"] for p in per} == {6}
    assert [r.get("eval_accuracy") for r in b] == [None, per[1]["accuracy"], None, per[2]["accuracy"]]
    assert plain.periodic_evals() == []
    # independent check: the logged score is a fresh greedy evaluation of the saved weights on
    # the first 6 held-out problems (step 0: the starting checkpoint, step 2: its checkpoint)
    cfg = _cfg(**kw)
    probs = arith.sample_problems(cfg.eval_problems, random.Random(cfg.eval_seed), "test")[:6]
    for step, where in ((0, cfg.checkpoint_path), (2, ev_run.checkpoint_dir(2))):
        model, tok = load_policy(where)
        again = evaluate(model, tok, probs, max_new_tokens=cfg.budget)
        assert again["accuracy"] == per[step // 2]["accuracy"]
        assert again["response_length_mean"] == per[step // 2]["response_length_mean"]


def test_resume_keeps_periodic_evals_consistent(tmp_path):
    kw = dict(method="dapo", lr=1e-3, checkpoint_every=2, eval_every=1, eval_every_problems=4)
    full = train(_cfg(**kw), tmp_path / "full", progress=False)
    b = tmp_path / "resumed"
    shutil.copytree(full.path, b, symlinks=True)
    (b / "DONE").unlink()
    shutil.rmtree(b / "checkpoints" / "step_000004")
    os.remove(b / "checkpoints" / "latest")
    os.symlink("step_000002", b / "checkpoints" / "latest")
    resumed = train(_cfg(**kw), b, resume=True, progress=False)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time_s"} for r in rs]  # noqa: E731
    assert [p["step"] for p in resumed.periodic_evals()] == [0, 1, 2, 3, 4]
    assert strip(resumed.periodic_evals()) == strip(full.periodic_evals())


def test_r_one_third_keeps_h_positive_for_g8():
    from repro import objective as obj

    G = 8
    _tc(method="lambda", r=1 / 3, group_size=G, prompts_per_rollout=16).validate()
    # the most extreme groups: one response far from seven equal ones (Samuelson's bound)
    for lengths, sign in (([1.0] * 7 + [500.0], +1), ([500.0] * 7 + [1.0], -1)):
        x = torch.tensor([lengths], dtype=torch.float64)
        z = (x - x.mean()) / x.std()  # sample std, computed here independently
        assert float(z.abs().max()) == pytest.approx((G - 1) / math.sqrt(G), rel=1e-12)
        h = obj.eq14_h(x, 1 / 3)
        # the outlier (last) sits at 1 ± r·(G−1)/√G; the short outlier gives the smallest h
        assert float(h[0, -1]) == pytest.approx(1 + sign * (G - 1) / math.sqrt(G) / 3, rel=1e-9)
        assert float(h.min()) > 0.17
        obj.eq16_lambda_weights(x, lam=10.0, r=1 / 3)  # defined for large λ too
    with pytest.raises(ValueError, match="h = 1 \\+ r\\*z <= 0"):
        obj.eq14_h(x, 0.41)  # the short outlier: 1 − 0.41 · 2.475 < 0
    with pytest.raises(ValueError, match="can make h"):
        _tc(method="lambda", r=0.41, group_size=G).validate()


def test_same_seed_gives_dapo_and_lambda_the_same_first_rollout(runs):
    a, b = runs["dapo"].metrics()[0], runs["lambda"].metrics()[0]
    # λ starts at 0, where f = 1 = DAPO's weight: step 1 is the same update on the same rollout
    for k in ("reward_mean", "accuracy", "response_length_mean", "len_adv_cov", "loss", "grad_norm",
              "f_min", "f_max"):
        assert a[k] == b[k], k
    assert runs["lambda"].metrics()[1]["lambda"] != 0.0


def test_tensorboard_events_hold_the_jsonl_values(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(_cfg(method="lambda", lr=1e-3, eval_every=2, eval_every_problems=4), tmp_path / "tb",
                progress=False, tensorboard=True)
    acc = EventAccumulator(str(run.path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/lambda", "train/reward_mean", "eval/accuracy", "final_eval/accuracy"} <= tags
    lam = [(e.step, e.value) for e in acc.Scalars("train/lambda")]
    assert lam == [(r["step"], pytest.approx(r["lambda"], rel=1e-6)) for r in run.metrics()]
    ev = [(e.step, e.value) for e in acc.Scalars("eval/accuracy")]
    assert ev == [(p["step"], pytest.approx(p["accuracy"], rel=1e-6)) for p in run.periodic_evals()]
