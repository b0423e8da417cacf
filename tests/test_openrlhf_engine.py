"""The real DeepSpeed engine through OpenRLHF 0.11.2's strategy, in 2 CPU processes (gloo).

``tests/openrlhf_engine_worker.py`` (one rank) builds the package's policy actor with the stock
``PolicyModelActor.init_model_from_pretrained``: ``DeepspeedStrategy`` -> ``deepspeed.initialize``
(ZeRO-2, bf16, DeepSpeed's CPU accelerator, gloo) around a tiny Qwen2 made from a config, and the
real ``LambdaActorPPOTrainer``; it runs the stock ``ppo_train`` on a replay buffer filled the way
the PPO trainer fills it, with uneven token counts on the two ranks. Expected values are computed
here, independently, from ``repro.objective`` over the micro-batches each rank's loss actually saw
(recorded in the worker), so the test holds whatever order the DataLoader shuffles into.

Shims (everything else is the installed OpenRLHF / DeepSpeed code; see
``repro/trainers/openrlhf/local_actor.py``):

| what | where (openrlhf 0.11.2 / deepspeed 0.19.6) | why |
|---|---|---|
| ``torch.cuda.set_device`` -> no-op | openrlhf ``utils/deepspeed/deepspeed.py:97`` (``setup_distributed``, when LOCAL_RANK is set) | CPU torch raises; DeepSpeed's CPU accelerator needs no device selection |
| ``torch.cuda.current_device`` -> ``"cpu"`` | ``trainer/ray/ppo_actor.py:171`` (``ppo_train``: ``experience.to_device``), ``:627`` (``PolicyModelActor.forward``), ``utils/deepspeed/deepspeed.py:614`` (``all_reduce``) | CPU torch raises; the tensors belong on the CPU |
| ``NaiveReplayBuffer.target_device`` -> cpu | ``trainer/ppo_utils/replay_buffer.py:40`` (``torch.device(f"cuda:{current_device()}")``) | built with index 0 then set to cpu; only ``sample()`` uses it, and ``ppo_train`` does not call ``sample()`` |
| ``torch.cuda.synchronize`` -> no-op | ``utils/distributed_util.py:10`` (``torch_dist_barrier_and_cuda_sync``, after the trainer init and in ``save_ckpt``), ``trainer/ray/ppo_actor.py:605`` (``fit``) | CPU torch raises; CPU ops are synchronous |
| ``init_device_mesh("cuda", ...)`` -> ``"cpu"`` | ``utils/deepspeed/deepspeed.py:106`` | the DP mesh must live on the gloo backend |
| DeepSpeed ``torch_adam: true`` in the optimizer config | config built at ``utils/deepspeed/deepspeed.py:359`` (AdamW) / ``deepspeed_utils.py:73``; switch read at deepspeed ``runtime/engine.py:2172`` | ``FusedAdam`` is a C++ op JIT-compiled at first use (``op_builder/cpu/fused_adam.py``), minutes on this machine; ``torch.optim.AdamW`` is the same update inside the same ZeRO-2 optimizer |
| ``flash_attn``, ``vllm`` import stand-ins | ``models/ring_attn_utils.py:3``, ``trainer/ray/vllm_engine.py:7``, ``samples_generator.py:7`` | GPU-only packages imported at module level (``tests/openrlhf_stubs``); never called here |

Not shims, but choices: ``--ds.attn_implementation eager`` (flash-attention is GPU-only),
``--vllm.sync_backend gloo`` (skips the ``import vllm`` version probe at ``ppo_actor.py:504-505``;
no vLLM engines exist), the env vars of ``BaseDistributedActor.__init__`` (``launcher.py:27-36``)
set by hand, and Ray's ``execute_batch`` called directly with ``async_run_method_batch``'s
chunking (``launcher.py:354-371``).
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch


import openrlhf_engine_worker as W  # noqa: E402
from repro.trainers.openrlhf.local_actor import expected_lambda_trajectory  # noqa: E402

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_workers(workdir: Path, stub_env: dict) -> dict:
    port = _free_port()
    env = dict(stub_env)
    env["DS_ACCELERATOR"] = "cpu"
    env["OMP_NUM_THREADS"] = "1"
    procs = [subprocess.Popen([sys.executable, str(HERE / "openrlhf_engine_worker.py"), str(rank), "2", str(port),
                               str(workdir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for rank in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    return {ph: [json.loads((workdir / f"{ph}.rank{r}.json").read_text()) for r in range(2)]
            for ph in ("train", "resume")}


@pytest.fixture(scope="module")
def engine_runs(tmp_path_factory, openrlhf_stub_env):
    from repro.trainers.openrlhf.local_actor import save_tiny_qwen2

    work = tmp_path_factory.mktemp("engine")
    save_tiny_qwen2(work / "tiny-qwen2")
    res = _run_workers(work, openrlhf_stub_env)
    train, resume = res["train"], res["resume"]
    recs = {(ph, r): torch.load(work / f"{ph}.rank{r}.records.pt", weights_only=False)
            for ph in ("train", "resume") for r in range(2)}
    return work, train, resume, recs


def test_real_engine_is_deepspeed_zero2_bf16_on_gloo(engine_runs):
    work, train, _, _ = engine_runs
    for r in range(2):  # exactly the shims listed in the table above, no more
        assert json.loads((work / f"shims.rank{r}.json").read_text()) == [
            "torch.cuda.set_device", "torch.cuda.current_device", "torch.cuda.synchronize",
            "init_device_mesh('cuda')", "NaiveReplayBuffer.target_device"]
    for r in train:
        assert r["engine"] == "DeepSpeedEngine" and r["zero_stage"] == 2 and r["bf16"]
        assert r["accelerator"] == "cpu" and r["backend"] == "gloo" and r["world"] == 2
        assert r["gas"] == W.TRAIN_BATCH // W.MICRO_TRAIN // 2
        assert "ZeroOptimizer" in r["optimizer"]
    # the ranks got uneven token counts (and the same number of samples)
    t0, t1 = train
    assert any(a["tokens"] != b["tokens"] for a, b in zip(t0["rollouts"], t1["rollouts"]))


def test_lambda_identical_on_ranks_and_equal_to_objective(engine_runs):
    _, train, _, recs = engine_runs
    l0 = [ro["lam"] for ro in train[0]["rollouts"]]
    l1 = [ro["lam"] for ro in train[1]["rollouts"]]
    assert l0 == l1  # bit for bit: λ's gradient is averaged over the DP group before each step
    steps, lams, grads = expected_lambda_trajectory(  # also checks the normalisers and the λ each loss used
        [recs[("train", 0)], recs[("train", 1)]], lam0=W.WEIGHTING["lambda"]["init"], lr=W.WEIGHTING["lambda"]["lr"],
        r=W.WEIGHTING["r"], scope=W.SCOPE, G=W.G)
    assert steps == list(range(W.ROLLOUTS * W.EPOCHS))  # one optimizer step per epoch here
    assert train[0]["optimizer_steps"] == len(steps)
    got_grads = [g for ro in train[0]["rollouts"] for g in ro["grads"]]
    assert got_grads == pytest.approx(grads, rel=1e-4, abs=1e-8)
    assert abs(lams[-1] - W.WEIGHTING["lambda"]["init"]) > 1e-3  # λ moved: the comparison says something
    per_rollout_expected = [lams[(k + 1) * W.EPOCHS - 1] for k in range(W.ROLLOUTS)]
    assert l0 == pytest.approx(per_rollout_expected, rel=1e-5, abs=1e-6)


def test_checkpoint_resume_continues_the_lambda_trajectory(engine_runs):
    _, train, resume, recs = engine_runs
    for tr, re_ in zip(train, resume):
        assert re_["checkpoint_steps"] == W.SAVE_AFTER
        assert re_["lam_start"] == tr["rollouts"][W.SAVE_AFTER - 1]["lam"]  # λ restored exactly
        cont = tr["rollouts"][W.SAVE_AFTER:]
        assert [ro["rollout"] for ro in re_["rollouts"]] == [ro["rollout"] for ro in cont]
        assert [ro["lam"] for ro in re_["rollouts"]] == pytest.approx([ro["lam"] for ro in cont], rel=1e-6, abs=1e-7)
        assert re_["optimizer_steps"] == tr["optimizer_steps"]
    # the policy was restored too: the resumed run's log-probs are the continuous run's
    for r in range(2):
        a = [x for x in recs[("train", r)] if x["step"] >= W.SAVE_AFTER * W.EPOCHS]
        b = recs[("resume", r)]
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert x["step"] == y["step"]
            assert torch.allclose(x["logp"], y["logp"], atol=1e-6)
