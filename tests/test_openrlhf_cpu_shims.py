"""The pieces of the CPU engine path that run without the engines (in .venv too): the gloo weight
channel, vLLM's live-weight GEMM dispatch, the import hook, the log-prob gap check, the Eq. 20 /
λ-trajectory check on recorded groups, and the flags the CPU engines refuse. The whole path, with
the real engines, is ``test_openrlhf_cpu_engines.py``."""
from __future__ import annotations

import importlib.util
import math
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import openrlhf_cpu  # noqa: F401  (stand-ins for the absent GPU packages, before OpenRLHF imports)
from repro.trainers.openrlhf import cpu_engines
from repro.trainers.openrlhf.metrics import WeightSyncError, check_logprob_gap, lambda_check, logprob_gap

REPO = Path(__file__).resolve().parents[1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_rank(rank, port, default_port, q):
    import datetime

    import torch.distributed as dist

    # each side already has a default group of its own (DeepSpeed's, vLLM's), as in a real run
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{default_port + rank}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=60))
    grp = cpu_engines.stateless_init_process_group("127.0.0.1", port, rank, 2)
    t = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4) / 7 if rank == 0 else torch.empty(3, 4, dtype=torch.bfloat16)
    grp.broadcast(t, src=0, stream=None)
    q.put((rank, t.float().tolist()))
    dist.destroy_process_group()


def test_gloo_group_broadcasts_bf16_between_processes_that_have_default_groups():
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port, dport = _free_port(), _free_port()
    procs = [ctx.Process(target=_gloo_rank, args=(r, port, dport + 10 * r, q)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    want = (torch.arange(12, dtype=torch.bfloat16).reshape(3, 4) / 7).float().tolist()
    assert got[0] == want and got[1] == want


def test_live_weight_gemm_reads_the_current_weight():
    calls = []
    dispatch = cpu_engines._live_weight_gemm(lambda layer, remove_weight: calls.append(remove_weight))
    lin = torch.nn.Linear(4, 3, bias=False)
    dispatch(lin, remove_weight=True)
    assert calls == [] and isinstance(lin.weight, torch.nn.Parameter)  # not removed, not packed
    x = torch.randn(2, 4)
    with torch.no_grad():
        lin.weight.mul_(2.0)  # an update after loading, as load_weights does
    assert torch.equal(lin.cpu_linear(x, lin.weight, None), x @ lin.weight.T)
    conv = types.SimpleNamespace(weight=torch.zeros(3, 1, 4))  # non-2-D weights: vLLM's own dispatch
    dispatch(conv, remove_weight=True)
    assert calls == [True]


def test_import_hook_patches_openrlhf_and_refuses_unknown_faults(tmp_path):
    code = ("import sys; from repro.trainers.openrlhf import cpu_engines as c; c.install_hook();"
            "import openrlhf.utils.distributed_util as du, openrlhf.trainer.ray.vllm_worker_wrap as ww;"
            "import openrlhf.models.ring_attn_utils, flash_attn;"
            "assert du.stateless_init_process_group is c.stateless_init_process_group;"
            "assert ww.WorkerWrap.update_weight is c.update_weight;"
            "import importlib.util as u; assert u.find_spec('flash_attn.ops') is None;"
            "print(sorted(c.applied))")
    env = dict(openrlhf_cpu.stub_env())
    path = [str(REPO)]  # not the test stubs' flash_attn: the hook's own stand-in must do
    spec = importlib.util.find_spec("vllm")
    if spec is None or "openrlhf_stubs" in str(spec.origin):
        (tmp_path / "vllm").symlink_to(openrlhf_cpu.STUBS / "vllm")  # only where vLLM is absent (.venv)
        path.append(str(tmp_path))
    env["PYTHONPATH"] = os.pathsep.join(path)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "openrlhf.utils.distributed_util" in r.stdout and "openrlhf.trainer.ray.vllm_worker_wrap" in r.stdout
    env[cpu_engines.FAULT_VAR] = "nope"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "LGRPO_CPU_ENGINES_FAULT" in r.stderr


def _exp(rollout_lp, actor_lp, mask):
    return types.SimpleNamespace(rollout_log_probs=torch.tensor(rollout_lp), action_log_probs=torch.tensor(actor_lp),
                                 action_mask=torch.tensor(mask))


def test_logprob_gap_by_hand_and_the_stop():
    e1 = _exp([[-1.0, -2.0, 0.0]], [[-1.5, -2.0, -9.0]], [[1, 1, 0]])  # |d| = 0.5, 0 (masked token ignored)
    e2 = _exp([[-0.1, -0.2, -0.3], [-1.0, -1.0, -1.0]], [[-0.1, -0.4, -0.3], [-1.0, -1.0, -1.0]], [[1, 1, 1], [1, 0, 0]])
    g = logprob_gap([e1, e2])
    assert g["lgrpo/logprob_gap"] == pytest.approx((0.5 + 0.2) / 6)
    assert g["lgrpo/logprob_gap_max"] == pytest.approx(0.25)
    assert g["lgrpo/logprob_gap_signed"] == pytest.approx((0.5 + 0.2) / 6)
    check_logprob_gap(g, 0.2, 1)
    check_logprob_gap(g, 0.0, 1)  # 0: logged, never checked
    with pytest.raises(WeightSyncError, match="rollout 4: .* did not reach the vLLM engines"):
        check_logprob_gap(g, 0.1, 4)
    with pytest.raises(WeightSyncError):
        check_logprob_gap({"lgrpo/logprob_gap": float("nan")}, 0.1, 1)
    with pytest.raises(WeightSyncError, match="no log-probs"):
        logprob_gap([types.SimpleNamespace(rollout_log_probs=None)])


def test_lambda_check_against_autograd_of_eq7():
    """Recorded groups -> Eq. 20's closed form, compared with autograd through Eq. 7 (an
    independent computation), and λ's SGD trajectory by hand."""
    from repro.objective import eq7_unified_objective

    gen = torch.Generator().manual_seed(0)
    lr, lam, groups, want_grads = 0.5, 0.0, [], []
    for step in (1, 2, 3):
        lengths = torch.randint(1, 30, (2, 4), generator=gen).double()
        L = torch.randn(2, 4, generator=gen, dtype=torch.float64)
        lt = torch.tensor(lam, dtype=torch.float64, requires_grad=True)
        loss = -eq7_unified_objective("lambda", lengths, L, lam=lt, r=1 / 9).mean()  # group scope
        (g,) = torch.autograd.grad(loss, lt)
        for i in range(2):
            groups.append(dict(step=step, **{"lambda": lam}, r=1 / 9, lengths=lengths[i].tolist(), L=L[i].tolist(),
                               lambda_grad=float(g), groups_in_step=2, sigma="sample"))
        want_grads.append(float(g))
        lam -= lr * float(g)
    chk = lambda_check(groups, lam0=0.0, lr=lr, scope="group")
    assert chk["steps"] == [1, 2, 3]
    for a, b in zip(chk["eq20"], want_grads):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(chk["trajectory"][-1], lam, rel_tol=1e-5, abs_tol=1e-7)  # λ is float32 in the trainer
    with pytest.raises(ValueError, match="not all of the step's groups"):
        lambda_check(groups[1:], lam0=0.0, lr=lr, scope="group")


@pytest.mark.parametrize("extra,msg", [
    (["--vllm.enable_sleep", "--train.colocate_all"], "no sleep mode"),
    (["--vllm.sync_with_ray"], "sync_with_ray"),
    (["--ds.attn_implementation", "flash_attention_2"], "flash attention is GPU-only"),
])
def test_cpu_engines_refuse_what_cannot_run_on_cpu(extra, msg, tmp_path, monkeypatch):
    from repro.trainers.openrlhf.launch import check_args
    from repro.trainers.openrlhf.settings import LambdaSettings

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(f'{{"prompt": "q{i}", "label": "1"}}\n' for i in range(4)))
    base = ["--actor.model_name_or_path", "m", "--rollout.n_samples_per_prompt", "4", "--rollout.batch_size", "2",
            "--rollout.micro_batch_size", "4", "--algo.advantage.estimator", "group_norm", "--train.batch_size", "4",
            "--train.micro_batch_size", "2", "--data.prompt_dataset", str(prompts), "--vllm.num_engines", "1",
            "--vllm.sync_backend", "gloo", "--ds.attn_implementation", "eager", "--actor.num_gpus_per_node", "1"]
    monkeypatch.setenv(cpu_engines.ENV_VAR, "1")
    s = LambdaSettings(scope="group")
    check_args(base, s)
    with pytest.raises(SystemExit, match=msg):
        check_args(base + extra, s)
    with pytest.raises(SystemExit, match="need gloo"):
        check_args([a for a in base if a not in ("--vllm.sync_backend", "gloo")], s)
    monkeypatch.delenv(cpu_engines.ENV_VAR)
    check_args(base + extra, s)  # on GPUs these are fine
