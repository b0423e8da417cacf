"""The whole OpenRLHF path through the real engines, on CPU (issue 20).

Each run is ``python -m repro.trainers.openrlhf.launch`` in a fresh process (``openrlhf_engines.py``):
a local Ray 2.55 cluster with logical GPUs, a vLLM 0.29 engine (the CPU build) generating inside a
Ray actor, the package's reward file loaded by OpenRLHF from its path, ``ppo_train`` on DeepSpeed
0.19.6 ZeRO-2 bf16 (CPU accelerator, gloo), the weights sent to vLLM after every rollout over a
gloo group, DeepSpeed checkpoints and the final HF save; the shims that make it run on CPU are
``repro/trainers/openrlhf/cpu_engines.py`` (its table gives the line each one answers).

What is asserted is what the runs produced: the log-prob gap between the engine and the trained
policy at every rollout (small: the weights arrived), the negative control whose engine receives
the weights and does not load them (the run stops with one line and exit code 3), each optimizer
step's λ gradient against Eq. 20 on the recorded groups, λ's trajectory against
``repro.objective``'s SGD, the versions read inside each kind of process, the files.

Runs only where the engine set is installed (``make engines``; ``make test`` runs this file in
``.venv-engines``); in ``.venv`` it is skipped. About 3-5 minutes on 2 cores (three runs).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from openrlhf_cpu import engines_missing


_MISSING = engines_missing()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")]

if _MISSING is None:
    import openrlhf_engines as E
    import torch

    from repro.runs import Run
    from repro.trainers.openrlhf.metrics import lambda_check


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("engines")
    res = {m: E.launch(out, m) for m in ("dapo", "lambda")}
    for m, (run_dir, p, _) in res.items():
        assert p.returncode == 0, f"{m}: rc {p.returncode}\n{p.stdout[-5000:]}"
    return {m: (Run(run_dir), p, wall) for m, (run_dir, p, wall) in res.items()}


def test_every_rollout_trained_and_the_engine_had_the_policys_weights(runs):
    for m, (run, p, wall) in runs.items():
        recs = run.metrics()
        assert [r["rollout"] for r in recs] == [1, 2, 3], m
        assert [r["step"] for r in recs] == [2, 4, 6], m  # 2 optimizer steps per rollout
        gaps = [r["lgrpo/logprob_gap"] for r in recs]
        print(f"{m}: log-prob gap per rollout {gaps}, wall {wall:.0f} s")
        # bf16 engine vs bf16 policy, same weights: rounding noise only, at every rollout (the
        # engine got the weights of rollouts 2 and 3 through the sync alone)
        assert all(0 <= g < 0.05 for g in gaps), (m, gaps)
        assert all(r["response_length_mean"] > 0 for r in recs)
        assert all(-1.0 <= r["reward_mean"] <= 1.0 for r in recs)


def test_a_run_whose_engine_does_not_load_the_weights_stops(tmp_path):
    run_dir, p, _ = E.launch(tmp_path, "lambda", fault="weights_not_loaded")
    assert p.returncode == 3, p.stdout[-5000:]
    # one line says why (Ray's own log lines of the shutdown may follow it), no traceback
    said = [ln for ln in p.stdout.splitlines() if ln.startswith("launch: ")]
    assert len(said) == 1 and said[0].startswith("launch: rollout ") and "did not reach the vLLM engines" in said[0]
    assert "Traceback" not in p.stdout
    print(said[0])
    recs = Run(run_dir).metrics()
    stopped_at = int(said[0].split()[2].rstrip(":"))
    assert stopped_at >= 2  # rollout 1 runs on the weights both sides loaded from disk
    assert [r["rollout"] for r in recs] == list(range(1, stopped_at))
    assert recs[0]["lgrpo/logprob_gap"] < 0.05  # same start weights: the check does not fire early


def test_lambda_gradient_is_eq20_on_the_recorded_groups_and_lambda_follows_its_sgd(runs):
    run = runs["lambda"][0]
    groups, recs = run.groups(), run.metrics()
    chk = lambda_check(groups, lam0=0.0, lr=E.LAMBDA_LR, scope="group")
    assert chk["steps"] == [1, 2, 3, 4, 5, 6]
    for k, closed, applied in zip(chk["steps"], chk["eq20"], chk["applied"]):
        assert math.isclose(closed, applied, rel_tol=1e-3, abs_tol=1e-6), (k, closed, applied)
    assert any(abs(a) > 1e-4 for a in chk["applied"])  # λ really had a gradient
    # λ used by each step = λ after the previous one; λ at the end = the SGD trajectory
    assert chk["lambda_used"][0] == 0.0
    for used, before in zip(chk["lambda_used"][1:], chk["trajectory"][:-1]):
        assert math.isclose(used, before, rel_tol=1e-6, abs_tol=1e-7)
    for rec in recs:
        assert math.isclose(rec["lambda"], chk["trajectory"][rec["step"] - 1], rel_tol=1e-6, abs_tol=1e-7)
        assert math.isclose(rec["lambda_grad"], chk["applied"][rec["step"] - 1], rel_tol=1e-6, abs_tol=1e-9)
    assert recs[-1]["lambda"] != 0.0


def test_dapo_weights_are_one_and_lambda_stays_zero(runs):
    run = runs["dapo"][0]
    for rec in run.metrics():
        assert rec["lambda"] == 0.0 and rec["f_min"] == rec["f_max"] == 1.0
    assert len(run.groups()) == 6 and all(g["lambda_grad"] is None for g in run.groups())


def test_versions_were_read_inside_each_process(runs):
    for m, (run, _, _) in runs.items():
        recs = json.loads((run.path / "engine_versions.json").read_text())
        roles = {r["role"]: r for r in recs}
        assert set(roles) == {"controller", "policy_actor", "vllm_engine"}
        assert len({r["pid"] for r in recs}) == 3
        assert roles["vllm_engine"]["modules"]["vllm"] == "0.29.0"
        assert roles["policy_actor"]["modules"]["deepspeed"] == "0.19.6"
        for r in recs:
            assert r["modules"]["torch"] == "2.13.0+cpu" and r["modules"]["ray"] == "2.55.0"
            assert r["distributions"]["openrlhf"] == "0.11.2"


def test_checkpoints_and_final_hf_model(runs):
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(E.MODEL).state_dict()
    for m, (run, _, _) in runs.items():
        ck = run.path / "checkpoints" / "_actor"
        assert (ck / "global_step2").is_dir(), sorted(p.name for p in ck.iterdir())
        final = AutoModelForCausalLM.from_pretrained(run.path / "final").state_dict()
        moved = max(float((final[k].float() - start[k].float()).abs().max()) for k in start)
        assert moved > 1e-3, m  # trained
        assert all(torch.isfinite(v).all() for v in final.values())
