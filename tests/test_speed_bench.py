"""The speed benchmarks of issue 23 (``make bench``): the pair statistics, the option refusals,
and both step benchmarks running the real steps. No timing is asserted (ratios are measured by
the benchmarks themselves, not tested)."""
import copy
import statistics

import pytest
import torch

from repro.speed import objective as speed_objective
from repro.speed import step as speed_step
from repro.speed.pairs import PairTimes, time_pairs


def test_pair_summary_is_the_statistics_of_the_given_times():
    a, b = [1.0, 2.0, 4.0, 3.0], [1.5, 2.0, 2.0, 6.0]
    s = PairTimes(a, b, (0.5, 0.7), "cpu").summary()
    ratios = [1.5, 1.0, 0.5, 2.0]
    q = statistics.quantiles(ratios, n=4)
    assert s["ratio_median"] == pytest.approx(statistics.median(ratios))
    assert (s["ratio_q1"], s["ratio_q3"]) == pytest.approx((q[0], q[2]))
    assert s["ratio_of_best"] == pytest.approx(1.5 / 1.0)
    assert s["ratio_of_medians"] == pytest.approx(2.0 / 2.5)
    assert s["clock"] == "cpu" and s["pairs"] == 4


def test_time_pairs_interleaves_and_refuses_bad_options():
    calls = []
    t = time_pairs(lambda: calls.append("a"), lambda: calls.append("b"), reps=3, inner=2, warmup=1)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] + ["b", "b", "a", "a"] + ["a", "a", "b", "b"]
    assert len(t.a) == len(t.b) == 3 and all(x >= 0 for x in t.a + t.b)
    with pytest.raises(ValueError, match="reps and inner"):
        time_pairs(lambda: None, lambda: None, reps=0)
    with pytest.raises(ValueError, match="clock must be"):
        time_pairs(lambda: None, lambda: None, reps=2, clock="gpu")


@pytest.mark.parametrize("main,argv", [(speed_objective.main, ["--reps", "1"]),
                                       (speed_objective.main, ["--threads", "-1"]),
                                       (speed_objective.main, ["--clock", "gpu"]),
                                       (speed_step.main, ["--reps", "1"]),
                                       (speed_step.main, ["--which", "verl"])])
def test_bench_options_refused_with_one_line(main, argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_objective_bench_runs_both_losses():
    out = speed_objective.main(["--reps", "2", "--inner", "1", "--clock", "cpu"])
    for key in ("cpu", "cpu_same_code"):
        assert out[key]["pairs"] == 2 and out[key]["a_best_s"] > 0 and out[key]["b_best_s"] > 0


def test_objective_profile_names_ops_of_each_loss(capsys):
    out = speed_objective.main(["--profile", "1"])
    assert set(out) == {"DAPO token mean", "DAPO policy_loss (f = 1)", "lambda-GRPO policy_loss"}
    # λ-GRPO dispatches more ops than DAPO through the same code (its weights): the profile sees them
    assert out["lambda-GRPO policy_loss"]["ops_per_call"] > out["DAPO policy_loss (f = 1)"]["ops_per_call"]
    assert "top ops" in capsys.readouterr().out


def test_reference_step_bench_steps_both_methods():
    run_dapo, run_lambda, desc = speed_step.reference_runners()
    before = {k: v.clone() for k, v in run_dapo.model.state_dict().items()}
    run_dapo()
    run_lambda()
    assert "reference trainer" in desc
    assert any(not torch.equal(before[k], v) for k, v in run_dapo.model.state_dict().items())
    ws = run_lambda.weighting_state
    assert ws.optimizer_steps == 1 and ws.value != 0.0  # λ took its SGD step
    assert run_dapo.weighting_state.lam is None


def test_openrlhf_step_bench_runs_ppo_train_of_both():
    run_dapo, run_lambda, desc = speed_step.openrlhf_runners(prompts=2, train_batch=8, micro_batch=4)
    theta0 = copy.deepcopy(run_dapo.trainer.actor.model.module.state_dict())
    status = run_dapo()
    assert "policy_loss" in status
    assert any(not torch.equal(theta0[k], v) for k, v in run_dapo.trainer.actor.model.module.state_dict().items())
    run_lambda()
    t = run_lambda.trainer
    assert t.lgrpo_lambda is not None and t.lgrpo_lambda.value != 0.0  # 2 optimizer steps of λ's SGD
    assert "stock DAPO" in desc
