"""The whole paper path through the real engines, on CPU (issue 20): ``make reproduce-tiny``.

The module's one fixture runs the pipeline as ``make reproduce-tiny`` does (``python -m
repro.trainers.openrlhf.reproduce --size tiny --method dapo,lambda``, ``LGRPO_CPU_ENGINES=1``),
shortened by ``--set`` (``openrlhf_engines.TINY_SETS``: 2 rollout steps of 2 optimizer steps per
method, 16 held-out problems): the prompt file; per method, training with the stock
``train_ppo_ray`` through the package's launcher on a local Ray 2.55 cluster with logical GPUs, a
vLLM 0.29 engine (the CPU build) generating inside a Ray actor, the package's reward file loaded by
OpenRLHF from its path, ``ppo_train`` on DeepSpeed 0.19.6 ZeRO-2 bf16 (CPU accelerator, gloo), the
weights sent to vLLM after every rollout over a gloo group, DeepSpeed checkpoints and the final HF
save; ``repro.eval`` with the vLLM backend on each final model and on the start model; the
comparison table. The shims that make it run on CPU are ``repro/trainers/openrlhf/cpu_engines.py``
(its table gives the line each one answers).

What is asserted is what the pipeline produced: the log-prob gap between the engine and the trained
policy at every rollout (small: the weights arrived), each optimizer step's λ gradient against
Eq. 20 on the recorded groups, λ's trajectory against ``repro.objective``'s SGD (λ moves for
lambda, stays 0 with f = 1 for dapo), the versions read inside each kind of process, the
checkpoints and final models, each evaluation's scores against its own records, and the comparison
table's rows against those scores. One more run (``openrlhf_engines.launch``, not the pipeline) is
the negative control: its engine receives the weights and does not load them, and the run stops
with one line and exit code 3.

Runs only where the engine set is installed (``make engines``; ``make test`` runs this file in
``.venv-engines``); in ``.venv`` it is skipped. About 6-8 minutes on 2 cores (the pipeline: two
trainings and three evaluations, each starting its own engines; then the negative control).
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

METHODS = ("dapo", "lambda")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """One ``make reproduce-tiny`` pipeline run (dapo, lambda), shortened by ``E.TINY_SETS``."""
    root = tmp_path_factory.mktemp("reproduce")
    p, wall, new_prompts = E.reproduce_tiny(root)
    assert p.returncode == 0, f"rc {p.returncode}\n{p.stdout[-6000:]}"
    print(f"reproduce-tiny pipeline (dapo, lambda): wall {wall:.0f} s")
    return root / "reproduce-tiny", p, new_prompts


@pytest.fixture(scope="module")
def runs(pipeline):
    out, p, _ = pipeline
    return {m: (Run(out / f"tiny-{m}-seed42"), p) for m in METHODS}


def _layout(run):
    """Rollout and optimizer steps of a run, from its own config.yaml (prompts, rollout batch,
    G, train batch): each rollout step trains on its prompts x G responses in optimizer steps of
    train.batch_size responses."""
    cfg = run.config()
    o = cfg["openrlhf"]
    rollouts = cfg["data"]["prompt_set"]["kept"] // o["rollout.batch_size"]
    per_rollout = o["rollout.batch_size"] * o["rollout.n_samples_per_prompt"] // o["train.batch_size"]
    groups_per_step = o["train.batch_size"] // o["rollout.n_samples_per_prompt"]
    return cfg, rollouts, per_rollout, groups_per_step


def _setting(cfg: dict, key: str):
    """A ``--set`` key's value in a run's config.yaml (``openrlhf.<flag>``: one stock flag)."""
    if key.startswith("openrlhf."):
        return cfg["openrlhf"][key[len("openrlhf."):]]
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def test_the_pipeline_ran_every_step_with_the_overrides(pipeline, runs):
    out, p, new_prompts = pipeline
    cmds = [ln.split() for ln in p.stdout.splitlines() if ln.startswith("+ ")]  # "+ PYTHON -m MODULE ..."
    steps = [c[3] + (" " + c[4] if c[3].endswith(".reproduce") else "") for c in cmds]
    # the prompt file is written when it is not there yet (it is kept by its settings otherwise)
    assert steps == ["repro.trainers.openrlhf.reproduce prepare-prompts"] * new_prompts + [
        "repro.trainers.openrlhf.launch", "repro.eval", "repro.eval",  # dapo, its evaluation, the Base row
        "repro.trainers.openrlhf.launch", "repro.eval"], steps  # lambda, its evaluation
    for m, (run, _) in runs.items():
        cfg, rollouts, per_rollout, _ = _layout(run)
        assert run.is_done() and run.meta()["method"] == m == cfg["weighting"]["method"]
        assert (rollouts, per_rollout) == (2, 2)  # >= 2 rollouts: the second one ran on synced weights
        for key, v in E.TINY_SETS.items():  # the --set values are in the run's record
            assert _setting(cfg, key) == v, key
        assert cfg["weighting"]["lambda"]["lr"] == E.LAMBDA_LR and cfg["eval"]["heldout_problems"] == 16


def test_every_rollout_trained_and_the_engine_had_the_policys_weights(runs):
    for m, (run, _) in runs.items():
        recs = run.metrics()
        cfg, rollouts, per_rollout, _ = _layout(run)
        assert [r["rollout"] for r in recs] == list(range(1, rollouts + 1)), m
        assert [r["step"] for r in recs] == [per_rollout * k for k in range(1, rollouts + 1)], m
        gaps = [r["lgrpo/logprob_gap"] for r in recs]
        print(f"{m}: log-prob gap per rollout {gaps}")
        assert cfg["lgrpo"]["max_logprob_gap"] == 0.1  # the run's own stop threshold, checked at every rollout
        # bf16 engine vs bf16 policy, same weights: rounding noise only, at every rollout (the
        # engine got the weights of rollout 2 on through the sync alone)
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
    cfg, rollouts, per_rollout, _ = _layout(run)
    lam = cfg["weighting"]["lambda"]
    chk = lambda_check(groups, lam0=lam["init"], lr=lam["lr"], scope=cfg["scope"])
    assert chk["steps"] == list(range(1, rollouts * per_rollout + 1))
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
    _, rollouts, per_rollout, groups_per_step = _layout(run)
    for rec in run.metrics():
        assert rec["lambda"] == 0.0 and rec["f_min"] == rec["f_max"] == 1.0
    assert len(run.groups()) == rollouts * per_rollout * groups_per_step  # every group of every step
    assert all(g["lambda_grad"] is None for g in run.groups())


def test_versions_were_read_inside_each_process(runs):
    for m, (run, _) in runs.items():
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
    for m, (run, _) in runs.items():
        ck = run.path / "checkpoints" / "_actor"
        assert (ck / "global_step2").is_dir(), sorted(p.name for p in ck.iterdir())  # ckpt.save_steps 2
        final = AutoModelForCausalLM.from_pretrained(run.path / "final").state_dict()
        moved = max(float((final[k].float() - start[k].float()).abs().max()) for k in start)
        assert moved > 1e-3, m  # trained
        assert all(torch.isfinite(v).all() for v in final.values())


def _eval_dirs(out: Path, runs) -> dict[str, Path]:
    """Each evaluation the pipeline ran: the start model (Table 1's Base row) and each final model."""
    return {"base": out / "base" / "eval", **{m: run.path / "eval" for m, (run, _) in runs.items()}}


def test_each_checkpoint_was_evaluated_with_the_vllm_backend(pipeline, runs):
    out = pipeline[0]
    for who, d in _eval_dirs(out, runs).items():
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["backend"] == "vllm" and cfg["heldout_problems"] == 16, who
        model = str(E.MODEL) if who == "base" else str(runs[who][0].path / "final")
        assert Path(cfg["model"]).resolve() == Path(model).resolve(), who
        scores = json.loads((d / "scores.json").read_text())
        g = scores["primary_grader"]
        bench = scores["graders"][g]["benchmarks"]
        assert list(bench) == ["sum_heldout"]
        acc = bench["sum_heldout"]["accuracy"]
        assert 0.0 <= acc <= 100.0, (who, acc)
        # the score from the evaluation's own records: per item the share of correct samples, averaged
        per_item: dict[str, list[bool]] = {}
        for line in (d / "records.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec["grader"] == g and rec["benchmark"] == "sum_heldout":
                per_item.setdefault(str(rec["id"]), []).append(bool(rec["correct"]))
        assert len(per_item) == 16, who
        assert all(rec_out for rec_out in per_item.values())
        want = 100.0 * sum(sum(v) / len(v) for v in per_item.values()) / len(per_item)
        assert math.isclose(acc, want, rel_tol=1e-9, abs_tol=1e-9), (who, acc, want)
        print(f"{who}: held-out accuracy {acc:.2f} % ({g} grader, 16 problems, vLLM backend)")


def test_the_comparison_table_has_a_row_per_checkpoint_with_its_scores(pipeline, runs):
    import csv

    out, p, _ = pipeline
    table = out / "comparison-tiny.csv"
    assert f"written: {table}" in p.stdout
    rows = {r["method"]: r for r in csv.DictReader(table.open())}
    assert set(rows) == {"base", *METHODS}
    for who, d in _eval_dirs(out, runs).items():
        scores = json.loads((d / "scores.json").read_text())
        g = scores["primary_grader"]
        assert rows[who]["row"] == f"this run ({g})"
        assert float(rows[who]["sum_heldout"]) == pytest.approx(scores["graders"][g]["benchmarks"]["sum_heldout"]["accuracy"])
        assert "sum_heldout 16" in rows[who]["note"]
