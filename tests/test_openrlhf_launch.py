"""The OpenRLHF launcher around the loss: metrics JSONL, reward file, patches, DRY_RUN, flags."""
from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch



from repro import runs  # noqa: E402
from repro.trainers.openrlhf import reproduce  # noqa: E402
from repro.trainers.openrlhf.cli_check import OpenRLHFArgError, known_flags, parse_train_ppo_ray  # noqa: E402
from repro.trainers.openrlhf.metrics import record_from_status, rollout_stats  # noqa: E402
from repro.trainers.openrlhf.settings import LambdaSettings, split_argv, to_flags  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REWARD_FILE = REPO / "repro" / "trainers" / "openrlhf" / "reward_fn.py"


# ----------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------
def test_settings_flags_round_trip_and_errors():
    block = {"method": "lambda", "r": 0.2, "sigma": "population", "lambda": {"init": 0.5, "lr": 0.05}}
    s = LambdaSettings(weighting=block, scope="group", run_dir="/x/y")
    got, rest = split_argv(["--a", "1", *to_flags(s), "--b"])
    assert got == s and rest == ["--a", "1", "--b"]
    assert got.weighting.to_dict() == block  # the config's block, as it was written
    assert LambdaSettings.from_json(s.to_json()) == s
    assert json.loads(s.to_json())["weighting"] == block  # travels to the workers as that block
    assert split_argv(["--lgrpo.weighting.method=dapo"])[0].method == "dapo"
    assert split_argv(["--lgrpo.weighting.lambda.lr", "1e-3"])[0].weighting.lambda_.lr == 1e-3
    for bad, msg in ((["--lgrpo.nope", "1"], "unknown flag --lgrpo.nope"),
                     (["--lgrpo.lr", "0.1"], r"unknown flag --lgrpo.lr; known: --lgrpo.weighting.KEY"),
                     (["--lgrpo.weighting.method", "x"], "unknown method 'x'"),
                     (["--lgrpo.weighting.r", "-1"], "r must be"), (["--lgrpo.weighting.r"], "needs a value"),
                     (["--lgrpo.weighting.method", "dapo", "--lgrpo.weighting.r", "0.2"],
                      r"method 'dapo' takes parameters none, got \['r'\]"),
                     (["--lgrpo.weighting.lambda.momentum", "0.9"], r"weighting.lambda takes init and lr, got \['momentum'\]"),
                     (["--lgrpo.weighting.r", "1", "--lgrpo.weighting.r", "2"], "given twice"),
                     (["--lgrpo.scope", "token"], "scope")):
        with pytest.raises(ValueError, match=msg):
            split_argv(bad)


# ----------------------------------------------------------------------------------------------
# metrics: one schema line per rollout step
# ----------------------------------------------------------------------------------------------
def _status(**over):
    st = {  # the keys the stock train_step + the package's extensions produce
        "policy_loss": 0.12, "ppo_clip_ratio": 0.03, "ppo_kl": 0.001, "kl": 0.0004, "entropy_loss": 0.61,
        "actor_lr": 1e-6, "actor_grad_norm": 0.9, "reward": 0.1, "response_length": 700.0,
        "rollout/reward_mean": 0.1, "rollout/reward_std": 0.8, "rollout/response_length_mean": 700.0,
        "rollout/truncated_rate": 0.02, "rollout/num_samples": 1024.0, "timing/ppo_train": 12.0,
        "lgrpo/accuracy": 0.4, "lgrpo/response_length_max": 2048.0, "lgrpo/len_adv_cov": -3.5,
        "lgrpo/lambda": 0.07, "lgrpo/lambda_grad": -0.02, "lgrpo/f_mean": 1.0, "lgrpo/f_std": 0.01,
        "lgrpo/f_min": 0.97, "lgrpo/f_max": 1.03, "lgrpo/optimizer_steps": 8,
        "generated_samples": ["text", 1.0],
    }
    st.update(over)
    return st


def test_jsonl_lines_match_the_run_schema(tmp_path):
    run = runs.Run.create(tmp_path / "r", {"trainer": "openrlhf"}, seed=1, method="lambda")
    for k in (1, 2):
        run.log(record_from_status(_status(**{"lgrpo/optimizer_steps": 4 * k}), rollout=k, method="lambda",
                                   time_s=10.0 * k))
    rows = run.metrics()  # validated by repro.runs on read
    assert [r["step"] for r in rows] == [4, 8] and [r["rollout"] for r in rows] == [1, 2]
    r = rows[0]
    assert r["lambda"] == 0.07 and r["lambda_grad"] == -0.02 and r["entropy"] == 0.61 and r["kl"] == 0.0004
    assert r["clip_ratio"] == 0.03 and r["grad_norm"] == 0.9 and r["accuracy"] == 0.4
    assert r["openrlhf/timing/ppo_train"] == 12.0 and "generated_samples" not in r
    # a fixed-weight method without KL: nullable fields are null, not invented
    st = _status()
    for k in ("kl", "lgrpo/lambda_grad"):
        st.pop(k)
    rec = runs.validate_record(record_from_status(st, rollout=3, method="dapo", time_s=1.0))
    assert rec["kl"] is None and rec["lambda_grad"] is None
    st.pop("lgrpo/accuracy")
    with pytest.raises(KeyError, match="accuracy"):
        record_from_status(st, rollout=3, method="dapo", time_s=1.0)
    with pytest.raises(ValueError, match="finite"):
        record_from_status(_status(**{"lgrpo/f_mean": float("nan")}), rollout=1, method="x", time_s=0.0)


def test_rollout_stats_against_direct_computation():
    from openrlhf.trainer.ppo_utils.experience import Experience

    G = 3
    lengths = torch.tensor([4, 1, 3, 2, 2, 5])
    rewards = torch.tensor([1.0, -0.5, -1.0, 1.0, 1.0, -0.5])
    adv = torch.tensor([1.0, 0.0, -1.0, 0.5, 0.5, -1.0])
    order = [3, 0, 5, 1, 4, 2]  # rows of the two experiences in rollout positions
    exps = []
    for rows in (order[:4], order[4:]):
        A = 6
        am = torch.arange(A)[None, :] < lengths[rows, None]
        exps.append(Experience(action_mask=am, advantages=adv[rows, None].expand(-1, A) * am,
                               index=list(rows), info={"reward": rewards[rows]}))
    st = rollout_stats(exps, G)
    assert st["lgrpo/accuracy"] == pytest.approx(3 / 6)
    assert st["lgrpo/response_length_max"] == 5
    covs = []
    for g in range(2):
        L, A_ = lengths[g * 3:(g + 1) * 3].float(), adv[g * 3:(g + 1) * 3]
        covs.append(float(((L - L.mean()) * (A_ - A_.mean())).sum()) / (3 - 1))  # sample cov
    assert st["lgrpo/len_adv_cov"] == pytest.approx(sum(covs) / 2)


def test_controller_writes_one_line_per_rollout(tmp_path, monkeypatch):
    from repro.trainers.openrlhf.patches import _LambdaPPOTrainerBase

    run = runs.Run.create(tmp_path / "r", {}, seed=0, method="lambda")
    t = _LambdaPPOTrainerBase.__new__(_LambdaPPOTrainerBase)
    t.args = types.SimpleNamespace(logger=types.SimpleNamespace(logging_steps=1),
                                   ckpt=types.SimpleNamespace(save_steps=float("inf")))
    t.wandb_logger = t.tensorboard_logger = None
    t.lgrpo_settings, t.lgrpo_run, t.lgrpo_t0 = LambdaSettings(run_dir=str(run.path)), run, time.time()
    t.save_logs_and_checkpoints(1, _status(), {"global_step": 1})
    t.save_logs_and_checkpoints(2, _status(**{"lgrpo/optimizer_steps": 16}), {"global_step": 2})
    assert [r["step"] for r in run.metrics()] == [8, 16]
    # resuming from the checkpoint taken after optimizer step 8 drops the later line
    t.lgrpo_prepare_resume({"global_step": 1, "lgrpo": {"optimizer_steps": 8, "method": "lambda"}})
    assert [r["step"] for r in run.metrics()] == [8]
    t.lgrpo_prepare_resume({"global_step": 0})  # a fresh start keeps everything
    assert [r["step"] for r in run.metrics()] == [8]
    with pytest.raises(RuntimeError, match="λ state"):
        t.lgrpo_prepare_resume({"global_step": 3})


# ----------------------------------------------------------------------------------------------
# the patches and the launcher
# ----------------------------------------------------------------------------------------------
def test_install_puts_the_subclasses_where_the_stock_cli_looks(monkeypatch):
    import runpy

    import openrlhf.trainer.ppo_trainer as pt
    import openrlhf.trainer.ray.ppo_actor as pa

    from repro.trainers.openrlhf import patches
    from repro.trainers.openrlhf.weighting import LambdaTrainerMixin

    for mod, name in ((pa, "PolicyModelActor"), (pa, "ActorPPOTrainer"), (pt, "PPOTrainer")):
        monkeypatch.setattr(mod, name, getattr(mod, name))  # restored after the test
    stock_actor = pa.PolicyModelActor.__ray_actor_class__
    patches.install()
    assert issubclass(pa.PolicyModelActor.__ray_actor_class__, stock_actor)
    assert issubclass(pt.PPOTrainer.__ray_actor_class__, patches.STOCK_PPO_TRAINER.__ray_actor_class__)
    mro = patches.LambdaActorPPOTrainer.__mro__
    assert mro.index(LambdaTrainerMixin) < mro.index(patches.ActorPPOTrainer)  # the mixin wraps the stock steps
    assert pa.ActorPPOTrainer is patches.LambdaActorPPOTrainer
    # the CLI module, executed as the launcher does (but not as __main__), binds the patched actor
    ns = runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="not_main")
    assert ns["PolicyModelActor"] is patches.LambdaPolicyModelActor


@pytest.mark.parametrize("extra,msg", [
    (["--train.async_enable"], "async"),
    (["--actor.loss_agg_mode", "seq-mean-token-mean"], "token-mean"),
    (["--ds.param_dtype", "fp16"], "bf16"),
    (["--rollout.n_samples_per_prompt", "1", "--algo.advantage.estimator", "reinforce"], "n_samples_per_prompt"),
    (["--algo.dynamic_filtering_enable", "--reward.remote_url", "r.py"], "dynamic_filtering"),
    (["--train.dynamic_batch_enable", "--vllm.num_engines", "1"], "dynamic_batch"),
    # the batch layout (launch.layout_problems): whole rollout batches, equal work, whole groups
    (["--rollout.batch_size", "3"], "not a multiple of rollout.batch_size 3"),
    (["--rollout.micro_batch_size", "12"], "rollout.micro_batch_size 12"),
    (["--actor.num_gpus_per_node", "3", "--vllm.num_engines", "0"], "split evenly over 3 actors"),
    (["--train.micro_batch_size", "3"], "train.micro_batch_size 3"),
    (["--train.batch_size", "16", "--train.micro_batch_size", "4", "--actor.num_gpus_per_node", "4"],
     "4 samples per actor, not whole groups of 8"),
    (["--train.batch_size", "128"], "partial optimizer step"),
])
def test_launcher_refuses_what_the_patches_do_not_cover(extra, msg, tmp_path):
    from repro.trainers.openrlhf.launch import check_args

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(f'{{"prompt": "q{i}", "label": "1"}}\n' for i in range(16)))
    base = ["--actor.model_name_or_path", "m", "--rollout.n_samples_per_prompt", "8", "--actor.num_gpus_per_node", "1",
            "--rollout.batch_size", "8", "--rollout.micro_batch_size", "8", "--algo.advantage.estimator", "group_norm",
            "--train.batch_size", "64", "--train.micro_batch_size", "8", "--data.prompt_dataset", str(prompts)]
    group = LambdaSettings(scope="group")
    check_args(base, group)  # the base is fine
    with pytest.raises(SystemExit, match=msg):
        check_args(base + extra, group)
    with pytest.raises(SystemExit, match="prompt_dataset is not set"):
        check_args(base[:-2], group)


def test_layout_problems_by_hand():
    from repro.trainers.openrlhf.launch import layout_problems

    paper = dict(rollout_batch=128, group_size=8, rollout_micro=16, train_batch=256, train_micro=8)
    for actors in (1, 2, 4, 8):
        assert layout_problems(prompts=8448, actors=actors, **paper) == []
    assert layout_problems(prompts=8523, actors=4, **paper) == [
        "8523 prompts are not a multiple of rollout.batch_size 128: OpenRLHF trains on the last partial batch "
        "(75 prompts), which its split gives the ranks unequal work (a hang); cut the prompt set to 8448 "
        "(reproduce.py prepare-prompts does)"]
    # 32 actors: 1024 / 16 = 64 experiences, 2 each (32 samples = 4 groups); a step holds 256 / 32 = 8 = 1 group
    assert layout_problems(prompts=8448, actors=32, **paper) == []
    three = layout_problems(prompts=8448, actors=3, **paper)
    assert any("64 experiences of rollout.micro_batch_size 16 do not split evenly over 3 actors" in p for p in three)
    assert any("train.batch_size 256 is not a multiple of train.micro_batch_size 8 x 3 actors" in p for p in three)
    assert layout_problems(prompts=8448, actors=64, **paper) == [
        "train.batch_size 256 is not a multiple of train.micro_batch_size 8 x 64 actors"]


def test_cli_check_rejects_unknown_flags_and_failed_asserts():
    with pytest.raises(OpenRLHFArgError, match="unrecognized arguments: --nope"):
        parse_train_ppo_ray(["--nope", "1"])
    with pytest.raises(OpenRLHFArgError, match="requires n_samples_per_prompt > 1"):
        parse_train_ppo_ray(["--algo.advantage.estimator", "group_norm"])


# ----------------------------------------------------------------------------------------------
# DRY_RUN for every target, every flag checked against the installed openrlhf 0.11.2 parser
# ----------------------------------------------------------------------------------------------
def test_installed_openrlhf_is_the_pinned_one():
    from importlib import metadata

    assert metadata.version("openrlhf") == "0.11.2"
    assert metadata.version("deepspeed") == "0.19.6"


@pytest.mark.parametrize("size", reproduce.SIZES)
def test_dry_run_every_target(size, tmp_path):
    flags = known_flags()
    assert len(flags) > 150  # the real parser, not an empty stand-in
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = reproduce.main(["--size", size, "--method", "grpo,dapo,lambda,dr_grpo", "--dry-run",
                             "--runs", str(tmp_path), "--data-src", str(tmp_path / "data")])
    text = out.getvalue()
    assert rc == 0
    assert text.count("accepted by the installed openrlhf 0.11.2 parser") == 4
    assert "machine check:" in text and "### resolved config" in text
    for method in reproduce.ALL_METHODS:
        cfg = reproduce.resolve(reproduce.load_config(size, method), tmp_path, tmp_path / "data")
        cmd = reproduce.commands(cfg, tmp_path / "data")["train"]
        assert reproduce.shlex.join(cmd) in text  # the exact command is printed
        stock = reproduce.settings_and_stock(cmd)
        used = {a for a in stock if a.startswith("--")}
        assert used <= flags, used - flags
        args, _ = parse_train_ppo_ray(stock)
        o = cfg["openrlhf"]
        # the parsed values are the config's (the paper's settings)
        assert args.rollout.n_samples_per_prompt * args.rollout.batch_size == 1024
        assert args.train.batch_size == 256 and args.train.micro_batch_size == 8
        assert args.rollout.max_new_tokens == 2048 and args.train.num_episodes == 2
        assert args.actor.num_gpus_per_node == (8 if size == "7b" else 4) == cfg["machine"]["gpus"]
        assert args.algo.advantage.estimator == ("dr_grpo" if method == "dr_grpo" else "group_norm")
        assert args.actor.model_name_or_path == o["actor.model_name_or_path"]
        assert args.reward.remote_url == [str(REWARD_FILE)]
        s, _ = split_argv(cmd[cmd.index("repro.trainers.openrlhf.launch") + 1:])
        assert s.weighting.to_dict() == {"method": method, **({"r": 1 / 9, "sigma": "sample"} if method == "lambda" else {}),
                                         "lambda": {"init": 0.0, "lr": 0.1}}


def test_each_resolved_paper_config_computes_the_method_its_name_says():
    """base + sizes/<size> + methods/<method>: the flags the launcher gets train that model with
    that method's weights (checked on one group against the formulas written out here)."""
    lens = torch.tensor([[3.0, 5.0, 8.0, 12.0]], dtype=torch.float64)
    mu = float(lens.mean())
    z = (lens - mu) / lens.std()
    expect = {"grpo": mu / lens, "dapo": torch.ones_like(lens), "dr_grpo": torch.full_like(lens, mu),
              "lambda": 4 * torch.softmax((1 + z / 9) ** 0.7, dim=-1)}
    assert reproduce.SIZES == ("1.5b", "3b", "7b") and set(reproduce.ALL_METHODS) == set(expect)
    for size in reproduce.SIZES:
        for method in reproduce.ALL_METHODS:
            cfg = reproduce.load_config(size, method)
            assert (cfg["name"], cfg["size"], cfg["method"]) == (f"qwen2.5-{size}-{method}", size, method)
            cmd = reproduce.commands(reproduce.resolve(cfg, Path("/r"), Path("/d")), Path("/d"))["train"]
            s, stock = split_argv(cmd[cmd.index("repro.trainers.openrlhf.launch") + 1:])
            assert s.method == method and s.scope == "group" and s.learnable == (method == "lambda")
            f = s.weighting.weighting.weights(lens, lam=0.7)
            assert torch.allclose(f, expect[method], rtol=1e-12), (size, method)
            args, _ = parse_train_ppo_ray(stock)
            assert args.algo.advantage.estimator == ("dr_grpo" if method == "dr_grpo" else "group_norm")
            assert args.actor.model_name_or_path == cfg["model"] == f"Qwen/Qwen2.5-{size.upper()}"
            gpus = cfg["machine"]["gpus"]
            assert args.actor.num_gpus_per_node == args.ref.num_gpus_per_node == args.vllm.num_engines == gpus
            assert args.train.seed == cfg["seed"] == 42


@pytest.mark.parametrize("target", ["reproduce-1.5b", "reproduce-3b", "reproduce-7b"])
def test_make_target_passes_dry_run(target):
    res = subprocess.run(["make", "-n", target, "DRY_RUN=1", "METHOD=lambda"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    line = [ln for ln in res.stdout.splitlines() if "repro.trainers.openrlhf.reproduce" in ln]
    assert line and f"--size {target.split('-')[1]}" in line[0] and "--dry-run" in line[0] and "--method lambda" in line[0]


def test_machine_check_says_what_is_missing(tmp_path):
    cfg = reproduce.resolve(reproduce.load_config("7b", "lambda"), tmp_path, tmp_path / "nodata")
    problems = reproduce.machine_problems(cfg)
    assert any("needs 8 GPUs" in p for p in problems)
    assert any("training data" in p for p in problems)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = reproduce.main(["--size", "7b", "--method", "lambda", "--runs", str(tmp_path),
                             "--data-src", str(tmp_path / "nodata")])
    assert rc == 2 and "cannot run on this machine" in out.getvalue() and "Nothing was started" in out.getvalue()
    assert not (tmp_path / "openrlhf").exists()


def test_prepare_prompts(tmp_path):
    import pandas as pd

    pq = tmp_path / "t.parquet"
    pd.DataFrame({"question": ["What is $1+1$?", "Solve x"], "gt_answer": ["2", "\\frac{1}{2}"]}).to_parquet(pq)
    n = reproduce.prepare_prompts(pq, tmp_path / "p.jsonl", "qwen-boxed", "question", "gt_answer")
    rows = [runs.json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert n == 2 and rows[1]["label"] == "\\frac{1}{2}"
    p = rows[0]["prompt"]
    assert p.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is $1+1$?")
    assert "\\boxed{}" in p and "\\boxed{{}}" not in p and p.endswith("<|im_start|>assistant\n")
    # the cut to whole rollout batches: 7 rows, multiple of 3 -> 6 kept, one row drawn with the seed
    pd.DataFrame({"question": [f"q{i}" for i in range(7)], "gt_answer": [str(i) for i in range(7)]}).to_parquet(pq)
    for seed in (0, 1):
        out = tmp_path / f"cut{seed}.jsonl"
        assert reproduce.prepare_prompts(pq, out, "qwen-boxed", "question", "gt_answer", multiple_of=3, seed=seed) == 6
        m = runs.json.loads(reproduce.prompt_manifest_path(out).read_text())
        assert (m["source_rows"], m["kept"], m["dropped"]) == (7, 6, 1)
        labels = [runs.json.loads(x)["label"] for x in out.read_text().splitlines()]
        assert labels == [str(i) for i in range(7) if i not in m["dropped_rows"]]  # order kept
        again = tmp_path / f"again{seed}.jsonl"
        reproduce.prepare_prompts(pq, again, "qwen-boxed", "question", "gt_answer", multiple_of=3, seed=seed)
        assert again.read_text() == out.read_text()  # the seed fixes the cut
    with pytest.raises(ValueError, match="fewer than one rollout batch"):
        reproduce.prepare_prompts(pq, tmp_path / "x.jsonl", "qwen-boxed", "question", "gt_answer", multiple_of=8)


def test_reproduce_runs_train_eval_table_in_order(tmp_path, monkeypatch):
    """The orchestration without a GPU: the machine check passes (patched), each step's command
    is recorded instead of run, and a fake evaluation leaves scores.json in the run folder."""
    import pandas as pd

    from repro.paper import BENCHMARK_NAMES

    src = tmp_path / "data"
    (src / "train" / "simplelr_qwen_level3to5").mkdir(parents=True)
    pd.DataFrame({"question": [f"q{i}" for i in range(130)], "gt_answer": ["1"] * 130}).to_parquet(
        src / "train" / "simplelr_qwen_level3to5" / "train.parquet")  # 130 = one rollout batch of 128 + 2
    calls = []

    def fake_run(cmd, env=None):
        calls.append((cmd[2], env))
        if cmd[2] == "repro.trainers.openrlhf.reproduce":  # prepare-prompts: run it for real
            assert reproduce.main(cmd[3:]) == 0
        if cmd[2] == "repro.eval":
            out = Path(cmd[cmd.index("--out") + 1])
            accs = {b: {"accuracy": 50.0} for b in BENCHMARK_NAMES}
            runs.write_json_atomic(out / "scores.json", {"primary_grader": "qwen", "graders": {
                "qwen": {"benchmarks": accs, "average": 50.0}}})

    monkeypatch.setattr(reproduce, "machine_problems", lambda cfg: [])
    monkeypatch.setattr(reproduce.pipeline, "run_cmd", fake_run)
    monkeypatch.setattr(reproduce, "PROMPTS_FILE", str(tmp_path / "prompts.{template}.jsonl"))
    monkeypatch.setattr(reproduce, "REPO", tmp_path)  # paper_artifacts/ output goes here
    (tmp_path / "paper_artifacts").mkdir()
    (tmp_path / "paper_artifacts" / "table1_paper.csv").write_text(
        (REPO / "paper_artifacts" / "table1_paper.csv").read_text())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = reproduce.main(["--size", "3b", "--method", "dapo,lambda", "--runs", str(tmp_path / "runs"),
                             "--data-src", str(src)])
    assert rc == 0
    assert [c[0] for c in calls] == ["repro.trainers.openrlhf.reproduce", "repro.trainers.openrlhf.launch",
                                     "repro.eval", "repro.trainers.openrlhf.launch", "repro.eval"]
    assert calls[1][1] == {"LGRPO_GRADER": "qwen", "LGRPO_GRADER_TIMEOUT": "10", "HF_HUB_OFFLINE": "1"}
    for m in ("dapo", "lambda"):
        rd = runs.Run(tmp_path / "runs" / "openrlhf" / f"qwen2.5-3b-{m}-seed42")
        assert rd.is_done() and rd.meta()["method"] == m and rd.config()["weighting"]["method"] == m
        ps = rd.config()["data"]["prompt_set"]  # the cut to whole rollout batches, in the run's config
        assert (ps["source_rows"], ps["kept"], ps["dropped"], ps["multiple_of"]) == (130, 128, 2, 128)
        assert len(ps["dropped_rows"]) == 2 and ps["seed"] == 42
    assert "training on 128 of 130 prompts (2 dropped" in out.getvalue()
    assert sum(1 for _ in open(tmp_path / "prompts.qwen-boxed.jsonl")) == 128
    table = pd.read_csv(tmp_path / "paper_artifacts" / "reproduce-3b.csv")
    diff = table[(table["method"] == "lambda") & (table["row"] == "this run - paper")].iloc[0]
    assert diff["math500"] == pytest.approx(50.0 - 67.4) and diff["avg"] == pytest.approx(50.0 - 43.8)
    # a second call finds everything done and runs nothing again
    calls.clear()
    with contextlib.redirect_stdout(io.StringIO()):
        assert reproduce.main(["--size", "3b", "--method", "dapo,lambda", "--runs", str(tmp_path / "runs"),
                               "--data-src", str(src)]) == 0
    assert calls == []


def test_set_overrides_reach_the_commands_and_bad_ones_are_refused(tmp_path, monkeypatch):
    """``--set``: a config setting (dotted path) and a stock flag (``openrlhf.<flag>``) reach the
    resolved config and the commands; a bad one is one line and a non-zero exit; a run folder
    started with other overrides is not resumed (the run is recorded instead of started)."""
    sets = ["--set", "data.prompts=8", "--set", "eval.heldout_problems=16", "--set", "openrlhf.ckpt.save_steps=2",
            "--set", "weighting.lambda.lr=1"]
    cfg = reproduce.resolve(reproduce.load_config("tiny", "lambda", overrides=reproduce.overrides_of(sets[1::2])),
                            tmp_path, tmp_path / "data")
    assert cfg["data"]["prompts"] == 8 and cfg["eval"]["heldout_problems"] == 16
    assert cfg["openrlhf"]["ckpt.save_steps"] == 2 and cfg["weighting"]["lambda"]["lr"] == 1
    assert cfg["openrlhf"]["rollout.batch_size"] == 4  # the rest is the layers'
    cmds = reproduce.commands(cfg, tmp_path / "data")
    train = cmds["train"]
    assert train[train.index("--ckpt.save_steps") + 1] == "2" and train[train.index("--lgrpo.weighting.lambda.lr") + 1] == "1.0"
    assert cmds["prepare_prompts"][-2:] == ["--n", "8"] and "--heldout-problems" in cmds["eval"]
    assert cmds["eval"][cmds["eval"].index("--heldout-problems") + 1] == "16"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert reproduce.main(["--size", "tiny", "--method", "lambda", "--dry-run", "--runs", str(tmp_path), *sets]) == 0
    assert "--ckpt.save_steps 2 " in out.getvalue() and "heldout_problems: 16" in out.getvalue()

    bad = {"data.prompt=8": "has no such setting",
           "openrlhf.--ckpt.save_steps=2": "without its dashes",
           "eval.heldout_problems=many": "expected an integer",
           "openrlhf.ckpt.save_steps=often": "expected the type of 4",
           "openrlhf.train.seed=3": "derived from model / seed",
           "data.prompts": "expects KEY=VALUE"}
    for item, msg in bad.items():
        r = subprocess.run([sys.executable, "-m", "repro.trainers.openrlhf.reproduce", "--size", "tiny",
                            "--method", "lambda", "--dry-run", "--runs", str(tmp_path), "--set", item],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
        said = [ln for ln in r.stderr.splitlines() if ln.startswith("reproduce-tiny: ")]  # (not a library's warnings)
        assert r.returncode != 0 and len(said) == 1 and msg in said[0], (item, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.strip().splitlines()[-1] == said[0], r.stderr

    calls = []
    monkeypatch.setattr(reproduce, "machine_problems", lambda cfg: [])
    monkeypatch.setattr(reproduce.pipeline, "run_cmd", lambda cmd, env=None: calls.append(cmd[2]))
    monkeypatch.setattr(reproduce, "TASK_PROMPTS_FILE", str(tmp_path / "p.{task}.{n}.{batch}.{seed}.jsonl"))
    args = ["--size", "tiny", "--method", "lambda", "--runs", str(tmp_path / "runs"), "--skip-eval"]
    reproduce.prepare_task_prompts("sum", 8, tmp_path / "p.sum.8.4.42.jsonl", 4, 42)
    with contextlib.redirect_stdout(io.StringIO()):
        assert reproduce.main([*args, "--set", "data.prompts=8"]) == 0
    assert calls == ["repro.trainers.openrlhf.launch"]
    rd = runs.Run(tmp_path / "runs" / "reproduce-tiny" / "tiny-lambda-seed42")
    assert rd.config()["data"]["prompts"] == 8 and rd.is_done()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert reproduce.main([*args, "--set", "data.prompts=8", "--set", "weighting.lambda.lr=1"]) == 2
    assert "started with another config (weighting.lambda.lr)" in out.getvalue()  # one spelling: one key
    assert calls == ["repro.trainers.openrlhf.launch"]  # nothing more was run
