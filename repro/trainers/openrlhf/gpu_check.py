"""One-GPU check of the λ path (the issue's "On a GPU" item), in well under 10 minutes, offline.

    python -m repro.trainers.openrlhf.gpu_check [--device cuda] [--dtype bf16] [--out FILE]

A tiny Qwen2-architecture model built from a config (random weights, nothing downloaded) computes
the response log-probs of synthetic groups on the device in bf16. The λ-weighted loss goes
through the package's ``WeightedPolicyLoss`` around OpenRLHF 0.11.2's *stock* ``PolicyLoss``,
split into micro-batches with OpenRLHF's window normalisers and DeepSpeed's 1/gas, as in
training. The λ gradient that reaches λ on the device is compared with ``repro.objective`` on
CPU in float64 on the same log-probs; the policy gradient must be finite. Results (numbers,
versions, device) go to a JSON file.

OpenRLHF's ``models/loss.py`` and ``models/utils.py`` are loaded by file location (needs only
``openrlhf`` and ``deepspeed`` installed, ``--no-deps`` is enough; flash-attn and vLLM are not
needed).
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


def run(device: str = "cuda", dtype: str = "bf16", P: int = 4, G: int = 8, micro: int = 8, lam0: float = 0.7,
        seed: int = 0) -> dict:
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
    fn = WeightedPolicyLoss(PolicyLoss(), method="lambda", lam=lam, r=1 / 9)
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
                          denominator=T_step, scope="batch", lam=lt, r=1 / 9).loss
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.trainers.openrlhf.gpu_check")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    res = run(a.device, a.dtype)
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        from repro.runs import write_text_atomic

        write_text_atomic(a.out, text + "\n")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
