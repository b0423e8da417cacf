"""The one-GPU check (issue 9): offline, in well under 8 minutes on one H200.

    make gpu-check                  # = scripts/gpu_check.sh: carried wheels, then this module
    python -m repro.trainers.openrlhf.gpu_check [--device cuda] [--small] [--out FILE.json] [--md FILE.md]

Four parts, each a dict in the JSON result:

1. ``lambda_grad``: a tiny Qwen2 (random weights) computes response log-probs in bf16 on the
   device; the λ-weighted loss goes through ``WeightedPolicyLoss`` around OpenRLHF 0.11.2's *stock*
   ``PolicyLoss`` in micro-batches with OpenRLHF's window normalisers and DeepSpeed's 1/gas; λ's
   gradient on the device is compared with ``repro.objective`` in float64 on CPU.
2. ``engine``: the real DeepSpeed engine (ZeRO-2, bf16) built by OpenRLHF's stock
   ``PolicyModelActor.init_model_from_pretrained`` around a tiny Qwen2 made from a config, and the
   package's ``LambdaActorPPOTrainer`` running the stock ``ppo_train`` (training steps) on the
   device over two rollouts; λ after each optimizer step must equal the float64 objective over the
   micro-batches the trainer saw (``local_actor.expected_lambda_trajectory``).
3. ``loss_timing`` (CUDA only): forward + backward of the wrapped loss vs the stock ``PolicyLoss``
   at one paper micro-batch (8 x 3,072 log-probs, fp32), timed with CUDA events (medians); also
   relative to one 1.5B micro-batch forward + backward from part 4.
4. ``memory_1p5b`` (CUDA only): Qwen2.5-1.5B's architecture from its config values (written
   below; random init, nothing downloaded) in bf16 with gradient checkpointing, one micro-batch of
   8 x 3,072 tokens through OpenRLHF's ``Actor.forward`` (logits cast to fp32, entropy computed as
   with ``--actor.entropy_coef 0``) and the wrapped loss, backward: the measured peak, plus the
   ZeRO-2 optimizer state per GPU computed for the config's GPU count, against 80 GB.

Without CUDA (the test suite) parts 3 and 4 print "skipped: no CUDA" and part 2 runs on the CPU
(DeepSpeed's CPU accelerator, gloo, with ``local_actor.cpu_shims``). On a CUDA device the results
are also written, atomically, to ``paper_artifacts/gpu_check.md`` (``--md`` to change).

Imports: OpenRLHF's ``models/loss.py``/``utils.py`` are loaded by file location for part 1. Parts
2-4 import OpenRLHF's actor path; where ray / vllm / flash_attn / datasets / aiohttp / PIL are not
installed (the GPU machine has none of them) ``local_actor.import_stand_ins`` makes them
importable (nothing on this path calls them), and DeepSpeed runs with its ``torch_adam`` switch
(no op is compiled: the machine has no nvcc).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import sys
import time
import types
from pathlib import Path

import torch

from repro import objective as obj
from repro.objective import PAPER_R
from repro.trainers.openrlhf.weighting import WeightedPolicyLoss


def load_stock_policy_loss():
    """OpenRLHF's PolicyLoss without importing ``openrlhf.models`` (whose __init__ needs
    flash-attn): a synthetic package holding ``utils.py`` and ``loss.py`` from the install."""
    spec = importlib.util.find_spec("openrlhf")
    if spec is None:
        raise ModuleNotFoundError("openrlhf is not installed (pip install --no-deps openrlhf==0.11.2 deepspeed==0.19.6)")
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    pkg = types.ModuleType("_openrlhf_models")
    pkg.__path__ = [str(models)]
    sys.modules["_openrlhf_models"] = pkg
    for name in ("utils", "loss"):
        s = importlib.util.spec_from_file_location(f"_openrlhf_models.{name}", models / f"{name}.py")
        m = importlib.util.module_from_spec(s)
        sys.modules[s.name] = m
        s.loader.exec_module(m)
    return sys.modules["_openrlhf_models.loss"].PolicyLoss


def tiny_qwen2(device, dtype, seed=0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return Qwen2ForCausalLM(cfg).to(device=device, dtype=dtype)


def response_logprobs(model, seqs, prompt_len):
    logits = model(seqs).logits[:, prompt_len - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, seqs[:, prompt_len:, None]).squeeze(-1)


def lambda_grad_check(device: str = "cuda", dtype: str = "bf16", P: int = 4, G: int = 8,
                      micro: int = 8, lam0: float = 0.7, seed: int = 0) -> dict:
    t0 = time.time()
    dt = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    PolicyLoss = load_stock_policy_loss()
    g = torch.Generator().manual_seed(seed)
    N, prompt_len, T = P * G, 8, 48
    lengths = torch.randint(4, T + 1, (P, G), generator=g)
    mask = (torch.arange(T)[None, :] < lengths.reshape(-1)[:, None])
    seqs = torch.randint(0, 512, (N, prompt_len + T), generator=g)
    rewards = torch.randint(0, 3, (P, G), generator=g).to(torch.float64) - 1.0
    rewards[0] = torch.tensor([1.0, -1.0] * (G // 2))
    adv = obj.eq3_group_advantages(rewards).reshape(-1)
    group_len = lengths.to(torch.float64).repeat_interleave(G, dim=0)
    pos = torch.arange(N) % G

    model = tiny_qwen2(device, dt, seed)
    with torch.no_grad():
        old = response_logprobs(model, seqs.to(device), prompt_len)
        old = old + 0.05 * torch.randn(old.shape, generator=g).to(device)  # a little off-policy
    lam = obj.LearnableLambda(init=lam0, device=device)
    fn = WeightedPolicyLoss(PolicyLoss(), method="lambda", lam=lam, r=PAPER_R)
    gas = math.ceil(N / micro)
    T_step = float(mask.sum())
    info = dict(dp_size=1, batch_num_tokens=torch.tensor(T_step / gas, device=device),
                global_batch_size=torch.tensor(N / gas, device=device))
    perm = torch.randperm(N, generator=g)
    logp_all = torch.zeros(N, T, dtype=torch.float32)
    for k in range(gas):
        rows = perm[k * micro:(k + 1) * micro]
        lp = response_logprobs(model, seqs[rows].to(device), prompt_len)
        logp_all[rows] = lp.detach().cpu()
        fn.set_group_info(group_len[rows], pos[rows])
        adv_tok = adv[rows, None].expand(-1, T).to(device=device, dtype=torch.float32)
        loss = fn(lp, old[rows], adv_tok, action_mask=mask[rows].to(device), **info)[0]
        (loss / gas).backward()
    grad_device = float(lam.param.grad)
    pgrad = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])

    lt = torch.tensor(lam0, dtype=torch.float64, requires_grad=True)
    ref = obj.policy_loss(logp_all.double(), old.cpu().double(), adv, mask, group_len, pos, method="lambda",
                          denominator=T_step, scope="batch", lam=lt, r=PAPER_R).loss
    (grad_ref,) = torch.autograd.grad(ref, lt)
    lam_before = lam.value
    lam.step()
    rel = abs(grad_device - float(grad_ref)) / max(abs(float(grad_ref)), 1e-12)
    return {
        "device": torch.cuda.get_device_name(0) if str(device).startswith("cuda") else platform.processor() or "cpu",
        "dtype": dtype, "groups": P, "G": G, "micro_batch": micro, "gas": gas, "tokens": int(T_step),
        "lambda_init": lam_before, "lambda_after_step": lam.value,
        "lambda_grad_device": grad_device, "lambda_grad_cpu_objective_fp64": float(grad_ref),
        "relative_difference": rel, "policy_grad_finite": bool(torch.isfinite(pgrad).all()),
        "policy_grad_norm": float(pgrad.norm()), "seconds": round(time.time() - t0, 2),
        "versions": {"torch": torch.__version__, "python": platform.python_version(),
                     "openrlhf": _version("openrlhf"), "deepspeed": _version("deepspeed"),
                     "transformers": _version("transformers")},
        "ok": bool(rel < 1e-4 and torch.isfinite(pgrad).all()),
    }


def _version(name):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------------------------
# 2. the real DeepSpeed engine and the trainer's training steps on the device
# ----------------------------------------------------------------------------------------------
ENGINE = dict(P=2, G=4, rollouts=2, micro_rollout=4, micro_train=2, train_batch=8, epochs=1, max_len=64)
ENGINE_WEIGHTING = {"method": "lambda", "r": PAPER_R, "lambda": {"init": 0.3, "lr": 2.0}}
ENGINE_SCOPE = "group"  # the paper configs' scope


def engine_check(workdir: Path, port: int = 29731) -> dict:
    """One process (world 1): stock init_model_from_pretrained -> DeepSpeed ZeRO-2 bf16 engine ->
    LambdaActorPPOTrainer; two rollouts of canned responses through the stock experience path and
    ``fit`` (ppo_train). λ per optimizer step vs the float64 objective over the recorded inputs."""
    t0 = time.time()
    from repro.trainers.openrlhf import local_actor

    local_actor.import_stand_ins()
    shims = local_actor.cpu_shims()
    local_actor.torch_adam()
    local_actor.set_rank_env(0, 1, port)
    from repro.trainers.openrlhf.settings import LambdaSettings

    E = ENGINE
    pretrain = local_actor.save_tiny_qwen2(Path(workdir) / "tiny-qwen2")
    argv = ["--actor.model_name_or_path", pretrain, "--ds.attn_implementation", "sdpa" if torch.cuda.is_available() else "eager",
            "--ds.zero_stage", "2", "--ds.param_dtype", "bf16", "--actor.num_nodes", "1", "--actor.num_gpus_per_node", "1",
            "--train.micro_batch_size", str(E["micro_train"]), "--train.batch_size", str(E["train_batch"]),
            "--train.max_epochs", str(E["epochs"]), "--rollout.batch_size", str(E["P"]),
            "--rollout.n_samples_per_prompt", str(E["G"]), "--rollout.micro_batch_size", str(E["micro_rollout"]),
            "--algo.advantage.estimator", "group_norm", "--algo.kl.init_coef", "0", "--actor.loss_agg_mode", "token-mean",
            "--actor.adam.lr", "3e-3", "--actor.lr_scheduler", "constant", "--actor.lr_warmup_ratio", "0",
            "--vllm.num_engines", "0", "--vllm.sync_backend", "gloo", "--ckpt.path", str(Path(workdir) / "ckpt")]
    args = local_actor.parse_args(argv)
    actor = local_actor.policy_actor(args, pretrain, max_steps=E["rollouts"] * E["epochs"],
                                     lambda_settings=LambdaSettings(weighting=ENGINE_WEIGHTING, scope=ENGINE_SCOPE))
    trainer, engine = actor.trainer, actor.actor.model
    em = local_actor.experience_maker(args, actor.tokenizer)
    records: list = []
    handle = local_actor.record_loss_inputs(trainer, records)
    lams = []
    for rollout in range(E["rollouts"]):
        mine = local_actor.rollout_experiences(actor, em, local_actor.canned_responses(rollout, E["P"], E["G"]), 0, 1,
                                               E["max_len"])
        actor.execute_batch("append", {"experience": mine}, 0, len(mine))
        actor.fit(kl_ctl=0.0)
        lams.append(trainer.lgrpo_lambda.value)
    handle.remove()
    steps, want, grads = local_actor.expected_lambda_trajectory(
        [records], lam0=ENGINE_WEIGHTING["lambda"]["init"], lr=ENGINE_WEIGHTING["lambda"]["lr"],
        r=ENGINE_WEIGHTING["r"], scope=ENGINE_SCOPE, G=E["G"])
    per_rollout = [want[(k + 1) * len(steps) // E["rollouts"] - 1] for k in range(E["rollouts"])]
    err = max(abs(a - b) for a, b in zip(lams, per_rollout))
    dev = next(engine.module.parameters()).device
    import torch.distributed as dist

    out = {"device": str(dev), "engine": type(engine).__name__, "zero_stage": engine.zero_optimization_stage(),
           "bf16": bool(engine.bfloat16_enabled()), "optimizer": type(engine.optimizer).__name__,
           "backend": dist.get_backend(), "optimizer_steps": trainer.lgrpo_optimizer_steps,
           "lambda_per_rollout": lams, "lambda_objective_fp64": per_rollout, "lambda_grads_objective_fp64": grads,
           "max_abs_lambda_difference": err, "cpu_shims": shims, "seconds": round(time.time() - t0, 2),
           "ok": bool(err < 1e-5 and abs(lams[-1] - ENGINE_WEIGHTING["lambda"]["init"]) > 1e-4
                      and trainer.lgrpo_optimizer_steps == len(steps))}
    dist.destroy_process_group()
    return out


# ----------------------------------------------------------------------------------------------
# 3.-4. cost of the wrapper and memory of one micro-batch at the 1.5B shape (CUDA only)
# ----------------------------------------------------------------------------------------------
# Qwen2.5-1.5B's architecture (its config.json values; weights are NOT needed: random init)
QWEN25_1P5B = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                   num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=131072,
                   rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu")
PAPER_MICRO = dict(batch=8, seq=3072, response=2048, gpus=4)  # train.micro_batch_size, data.max_len, max_new_tokens


def _cuda_ms(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def _loss_inputs(B, T, G, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(T // 4, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(device)
    old = (-torch.rand(B, T, generator=g) * 2).to(device)
    logp = (old + 0.05 * torch.randn(B, T, generator=g).to(device)).requires_grad_(True)
    adv = torch.randn(B, 1, generator=g).expand(B, T).contiguous().to(device)
    group_len = torch.randint(T // 4, T + 1, (B, G), generator=g).float()
    pos = torch.randint(0, G, (B,), generator=g)
    group_len[torch.arange(B), pos] = lengths.float()
    info = dict(dp_size=1, batch_num_tokens=mask.sum().float(), global_batch_size=torch.tensor(float(B), device=device))
    return logp, old, adv, mask, group_len.to(device), pos.to(device), info


def loss_timing(device: str, iters: int = 200, warmup: int = 20) -> dict:
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return {"skipped": "no CUDA"}
    PolicyLoss = load_stock_policy_loss()
    B, T = PAPER_MICRO["batch"], PAPER_MICRO["seq"]
    logp, old, adv, mask, gl, pos, info = _loss_inputs(B, T, 8, device)
    stock = PolicyLoss()
    lam = obj.LearnableLambda(init=0.5, device=device)
    wrapped = WeightedPolicyLoss(PolicyLoss(), method="lambda", lam=lam, r=PAPER_R)

    def stock_step():
        logp.grad = None
        stock(logp, old, adv, action_mask=mask, **info)[0].backward()

    def wrapped_step():
        logp.grad = None
        lam.param.grad = None
        wrapped.set_group_info(gl, pos)
        wrapped(logp, old, adv, action_mask=mask, **info)[0].backward()

    ms_stock = _cuda_ms(stock_step, iters, warmup)
    ms_wrapped = _cuda_ms(wrapped_step, iters, warmup)
    return {"shape": [B, T], "iters": iters, "stock_ms_median": ms_stock, "wrapped_ms_median": ms_wrapped,
            "wrapped_over_stock": ms_wrapped / ms_stock, "extra_ms": ms_wrapped - ms_stock}


def memory_1p5b(device: str, gpus: int = PAPER_MICRO["gpus"]) -> dict:
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return {"skipped": "no CUDA"}
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from repro.trainers.openrlhf import local_actor

    local_actor.import_stand_ins()
    from openrlhf.models import Actor

    PolicyLoss = load_stock_policy_loss()
    B, S, A = PAPER_MICRO["batch"], PAPER_MICRO["seq"], PAPER_MICRO["response"]
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    cfg = Qwen2Config(**QWEN25_1P5B)
    cfg._attn_implementation = "sdpa"
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    n_params = sum(p.numel() for p in model.parameters())
    params_bytes = torch.cuda.memory_allocated() - base
    actor = Actor(model)
    actor.packing_samples = False  # set only by Actor's from-a-path branch (models/actor.py:217)
    actor.train()
    g = torch.Generator(device="cpu").manual_seed(0)
    seqs = torch.randint(0, cfg.vocab_size, (B, S), generator=g).to(device)
    attn = torch.ones(B, S, dtype=torch.long, device=device)
    amask = torch.ones(B, S - 1, dtype=torch.bool, device=device)
    amask[:, : S - 1 - A] = False
    lens = amask.sum(-1).float()
    gl = lens[:, None].repeat(1, 8).cpu()
    gl[:, 1:] += torch.arange(1, 8).float()
    pos = torch.zeros(B, dtype=torch.long)
    lam = obj.LearnableLambda(init=0.5, device=device)
    fn = WeightedPolicyLoss(PolicyLoss(), method="lambda", lam=lam, r=PAPER_R)

    def step():
        logp, out = actor(seqs, amask, attention_mask=attn, return_output=True, return_entropy=True)
        fn.set_group_info(gl, pos)
        info = dict(dp_size=1, batch_num_tokens=amask.sum().float(), global_batch_size=torch.tensor(float(B), device=device))
        loss = fn(logp, logp.detach() + 0.01, torch.ones_like(logp), action_mask=amask, **info)[0]
        loss = loss - 0.0 * (out.entropy[:, -amask.shape[1]:] * amask).sum() / amask.sum()  # entropy_coef 0: in graph
        loss.backward()
        model.zero_grad(set_to_none=False)

    step()  # allocates the gradients
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    step()
    b.record()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    zero2_optimizer = 12 * n_params / gpus  # fp32 master + Adam m, v, partitioned over the DP ranks
    GB = 1e9
    est = peak + zero2_optimizer
    return {"config": QWEN25_1P5B, "micro_batch": [B, S], "response_tokens": A, "params": n_params,
            "params_bf16_GB": params_bytes / GB, "measured_peak_GB": peak / GB,
            "measured_includes": "bf16 params + full bf16 grads + activations (gradient checkpointing, sdpa) + fp32 logits/entropy",
            "zero2_optimizer_state_GB_per_gpu": zero2_optimizer / GB, "gpus": gpus,
            "estimate_GB_per_gpu": est / GB, "fits_80GB": bool(est < 80 * GB),
            "fwd_bwd_ms": a.elapsed_time(b)}


def markdown(res: dict) -> str:
    lines = ["# One-GPU check (`make gpu-check`)", "",
             f"Written by `python -m repro.trainers.openrlhf.gpu_check` on {res['device']} "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); versions: "
             + ", ".join(f"{k} {v}" for k, v in res["versions"].items()) + ".", "",
             f"Overall: **{'PASS' if res['ok'] else 'FAIL'}** in {res['seconds']} s.", ""]
    for key, title in (("lambda_grad", "λ gradient through the stock PolicyLoss (bf16 tiny Qwen2) vs float64 objective"),
                       ("engine", "Real DeepSpeed engine + LambdaActorPPOTrainer.ppo_train vs float64 objective"),
                       ("loss_timing", "Wrapped loss vs stock PolicyLoss (CUDA events, fwd+bwd, medians)"),
                       ("memory_1p5b", "One micro-batch at the Qwen2.5-1.5B shape")):
        lines += [f"## {title}", "", "```json", json.dumps(res[key], indent=2, default=str), "```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.trainers.openrlhf.gpu_check")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--small", action="store_true", help="small shapes (the CPU test)")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None, help="JSON results")
    ap.add_argument("--md", type=Path, default=None,
                    help="markdown results (default on CUDA: paper_artifacts/gpu_check.md)")
    a = ap.parse_args(argv)
    import tempfile

    from repro.runs import write_text_atomic

    t0 = time.time()
    cuda = str(a.device).startswith("cuda")
    res = {"device": torch.cuda.get_device_name(0) if cuda else (platform.processor() or "cpu")}
    print("[1/4] λ gradient through the stock PolicyLoss ...", flush=True)
    res["lambda_grad"] = lambda_grad_check(a.device, a.dtype, **(dict(P=2, G=4, micro=3) if a.small else {}))
    print(f"      ok={res['lambda_grad']['ok']} rel.diff={res['lambda_grad']['relative_difference']:.2e}", flush=True)
    print("[2/4] real DeepSpeed engine + ppo_train ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        res["engine"] = engine_check(a.workdir or Path(tmp))
    print(f"      ok={res['engine']['ok']} max|Δλ|={res['engine']['max_abs_lambda_difference']:.2e}", flush=True)
    print("[3/4] wrapped vs stock loss timing ...", flush=True)
    res["loss_timing"] = loss_timing(a.device)
    t = res["loss_timing"]
    print(f"      {'skipped: ' + t['skipped'] if 'skipped' in t else t}", flush=True)
    print("[4/4] memory of one micro-batch at the 1.5B shape ...", flush=True)
    res["memory_1p5b"] = memory_1p5b(a.device) if not a.small else {"skipped": "no CUDA" if not cuda else "--small"}
    m = res["memory_1p5b"]
    if "estimate_GB_per_gpu" in m and "fwd_bwd_ms" in m and "extra_ms" in res["loss_timing"]:
        res["loss_timing"]["extra_over_1p5b_fwd_bwd"] = res["loss_timing"]["extra_ms"] / m["fwd_bwd_ms"]
    print(f"      {'skipped: ' + m['skipped'] if 'skipped' in m else m}", flush=True)
    res["versions"] = {"torch": torch.__version__, "python": platform.python_version(),
                       "openrlhf": _version("openrlhf"), "deepspeed": _version("deepspeed"),
                       "transformers": _version("transformers")}
    res["seconds"] = round(time.time() - t0, 1)
    res["ok"] = bool(res["lambda_grad"]["ok"] and res["engine"]["ok"] and m.get("fits_80GB", True))
    text = json.dumps(res, indent=2, default=str)
    print(text)
    if a.out:
        write_text_atomic(a.out, text + "\n")
    md = a.md or (Path(__file__).resolve().parents[3] / "paper_artifacts" / "gpu_check.md" if cuda else None)
    if md:
        write_text_atomic(md, markdown(res))
        print(f"wrote {md}")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
