"""One TRL run from a YAML config: ``python -m repro.trainers.trl --config C --out RUN``.

    python -m repro.trainers.trl --config repro/configs/trl/tiny-sum-cpu.yaml --method lambda --out runs/trl-sum
    python -m repro.trainers.trl --config ... --method dapo --out runs/x --set trl.max_steps=5
    python -m repro.trainers.trl --config ... --method lambda --out runs/x --resume   # newest checkpoint
    python -m repro.trainers.trl --config ... --method lambda --out runs/x --dry-run  # config + machine check

Config layout (``repro/configs/trl/``): a recipe file (every setting once) plus
``methods/<method>.yaml`` (the method's layer), composed by ``repro.config``. Sections:
``weighting:`` the trainer contract's block (method, its parameters, ``lambda: {init, lr}``),
``trl:`` ``trl.GRPOConfig`` keyword arguments verbatim, ``model:`` / ``peft:`` / ``reward:`` /
``data:`` / ``machine:`` the rest. The run folder follows ``repro.runs``:
config.yaml, meta.json, metrics.jsonl (one line per optimizer step), checkpoints/checkpoint-N
(TRL's, plus lgrpo_state.pt), tensorboard/ (TRL's own reporting), final/ (the trained model).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
TRL_VERSION = "1.16.0"


# ----------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------
def load_config(path: str | Path, method: str, sets: list[str] = ()) -> dict:
    """``path`` (a recipe: every setting once), then ``methods/<method>.yaml`` beside it (the
    method's ``weighting:`` block and what else it changes), then ``--set`` values (dotted keys,
    ``weighting.lambda.lr=10``); composed by ``repro.config``."""
    from repro.config import compose, parse_overrides

    path = Path(path)
    layer = path.parent / "methods" / f"{method}.yaml"
    if not layer.is_file():
        known = sorted(p.stem for p in (path.parent / "methods").glob("*.yaml"))
        raise ValueError(f"no method {method!r} in {layer.parent} (known: {known})")
    cfg = compose([path, layer], parse_overrides(list(sets)))
    cfg["method"] = cfg["weighting"]["method"]
    if "name" in cfg:
        cfg["name"] = cfg["name"].format(method=cfg["method"])
    return cfg


def resolve_use_vllm(value) -> bool:
    """``use_vllm: auto`` = vLLM colocate where vllm is installed and a GPU is visible."""
    if value != "auto":
        return bool(value)
    import torch

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def grpo_config(cfg: dict, run_dir: Path):
    from trl import GRPOConfig

    kw = dict(cfg["trl"])
    kw["use_vllm"] = resolve_use_vllm(kw.get("use_vllm", False))
    for k in ("learning_rate", "adam_epsilon", "weight_decay", "max_grad_norm", "beta", "epsilon",
              "epsilon_high", "temperature", "top_p", "vllm_gpu_memory_utilization"):
        if isinstance(kw.get(k), str):
            kw[k] = float(kw[k])  # YAML reads 1e-6 (no dot) as a string
    kw.setdefault("seed", int(cfg.get("seed", 0)))
    kw["output_dir"] = str(run_dir / "checkpoints")
    return GRPOConfig(**kw)


# ----------------------------------------------------------------------------------------------
# model, data, reward
# ----------------------------------------------------------------------------------------------
def load_model(cfg: dict):
    """(model, tokenizer). A local folder with tokenizer.json loads its tokenizer as
    ``PreTrainedTokenizerFast`` (as ``repro.trainers.rollout.load_policy``: ``AutoTokenizer`` would
    resolve the committed tiny checkpoint to a byte-level tokenizer without the ``\\boxed{`` token)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    name = str(cfg["model"]["name"])
    path = (REPO / name) if (REPO / name).is_dir() else Path(name)
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "auto": "auto"}[cfg["model"].get("dtype", "float32")]
    if cfg["model"].get("tokenizer", "auto") == "fast":  # tokenizer.json as is
        tok = PreTrainedTokenizerFast.from_pretrained(path)
    else:
        tok = AutoTokenizer.from_pretrained(path if path.is_dir() else name)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    kw = {"dtype": dtype}
    if cfg["model"].get("attn_implementation"):
        kw["attn_implementation"] = cfg["model"]["attn_implementation"]
    model = AutoModelForCausalLM.from_pretrained(path if path.is_dir() else name, **kw)
    return model, tok


def peft_config(cfg: dict):
    p = cfg.get("peft") or {}
    if not p.get("enabled"):
        return None
    from peft import LoraConfig

    return LoraConfig(r=int(p["r"]), lora_alpha=int(p["alpha"]), lora_dropout=float(p.get("dropout", 0.0)),
                      target_modules=p.get("target_modules", "all-linear"), task_type="CAUSAL_LM")


def sum_task_rows(n: int, seed: int, task: str = "sum") -> list[dict]:
    """Training prompts of the package's synthetic task (``repro.tasks.arith``), as the tiny model
    was pretrained on them: ``<bos>`` + ``Q12+34=``; ``label`` is the gold sum."""
    from repro.tasks.arith import get_variant, sample_problems

    get_variant(task)
    probs = sample_problems(n, random.Random(f"trl-{seed}"), "train")
    return [{"prompt": "<bos>" + p.prompt, "label": p.answer} for p in probs]


def train_rows(cfg: dict) -> list[dict]:
    d = cfg["data"]
    if d.get("task"):
        return sum_task_rows(int(d["prompts"]), int(cfg.get("seed", 0)), d["task"])
    path = Path(d["prompts_jsonl"])
    if not path.exists():
        raise FileNotFoundError(f"{path}: prepare the prompts first (make reproduce-1gpu does)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def apply_stop_rule(model, tokenizer, args) -> list[int]:
    """The one stop rule (``repro.stop``) in TRL 1.16.0; returns the model's end ids.

    The end markers that are one token of ``tokenizer`` (a base Qwen2.5: ``<|im_end|>`` 151645,
    ``<|endoftext|>`` 151643) join ``model.generation_config.eos_token_id``, which TRL reads into
    ``self.eos_token_ids`` (``grpo_trainer.py:409-416``): transformers' ``generate`` stops at them
    (``generation_kwargs``, :1160) and the completion mask ends at the first of them, included
    (:1880-1885), so the completion, its decoded text (the reward's input) and its length are
    those the evaluation scores. With ``use_vllm`` they also go to vLLM as ``stop_token_ids`` and
    the other markers (``</s>``) as ``stop`` strings, through ``generation_kwargs``
    (``vllm_generation.py:662-683``), which TRL gives only to vLLM when ``use_vllm`` is set."""
    from repro.stop import eos_token_ids, marker_token_ids, string_markers

    markers = marker_token_ids(tokenizer)
    ends = list(dict.fromkeys([*eos_token_ids(tokenizer, model.generation_config.eos_token_id), *markers]))
    model.generation_config.eos_token_id = ends
    if args.use_vllm and markers:
        gk = dict(args.generation_kwargs or {})
        gk["stop_token_ids"] = list(dict.fromkeys([*(gk.get("stop_token_ids") or []), *markers]))
        gk["stop"] = list(dict.fromkeys([*(gk.get("stop") or []), *string_markers(tokenizer)]))
        args.generation_kwargs = gk
    return ends


def build_trainer(cfg: dict, run_dir: Path, run=None, *, model=None, tokenizer=None, rows=None, cls=None):
    """The configured ``LambdaGRPOTrainer`` (or subclass ``cls``); model and rows can be passed in.
    Generation stops at the evaluation's end markers (``apply_stop_rule``)."""
    from datasets import Dataset

    from repro.trainers.contract import WeightingConfig
    from repro.trainers.trl.reward import PaperReward
    from repro.trainers.trl.trainer import LambdaGRPOTrainer

    weighting = WeightingConfig.from_dict(cfg["weighting"])
    args = grpo_config(cfg, run_dir)
    if model is None:
        model, tokenizer = load_model(cfg)
    r = cfg.get("reward", {})
    reward = PaperReward(r.get("grader", "qwen"), timeout_s=float(r.get("timeout_s", 10)),
                         workers=int(r.get("workers", 4)))
    apply_stop_rule(model, tokenizer, args)
    ds = Dataset.from_list(rows if rows is not None else train_rows(cfg))
    extra = {"task": cfg["data"]["task"]} if cfg["data"].get("task") else {}
    return (cls or LambdaGRPOTrainer)(model=model, reward_funcs=[reward], args=args, train_dataset=ds,
                             processing_class=tokenizer, peft_config=peft_config(cfg),
                             weighting=weighting, run=run, record_extra=extra)


# ----------------------------------------------------------------------------------------------
# machine check
# ----------------------------------------------------------------------------------------------
def machine_problems(cfg: dict, *, gpu: bool) -> list[str]:
    """Plain sentences, one per missing piece (empty: this machine can run ``cfg``)."""
    from importlib import metadata

    out = []
    for mod, dist, why in (("trl", "trl", f"in environment.lock.txt; or pip install --no-deps trl=={TRL_VERSION}"),
                           ("datasets", "datasets", "the TRL trainer's dataset"),
                           ("accelerate", "accelerate", "TRL's device placement")):
        if importlib.util.find_spec(mod) is None:
            out.append(f"{mod} is not installed ({why})")
    try:
        v = metadata.version("trl")
        if v != TRL_VERSION:
            out.append(f"trl {v} is installed; the seams are checked against trl {TRL_VERSION}")
    except metadata.PackageNotFoundError:
        pass
    if (cfg.get("peft") or {}).get("enabled") and importlib.util.find_spec("peft") is None:
        out.append("peft.enabled but peft is not installed")
    if gpu:
        from repro.trainers.machine import cuda_problems, visible_gpus

        mem, why = visible_gpus()
        n = len(mem)
        if why:
            out.append(why)
        out += cuda_problems(gpus_seen=n)  # the driver against torch's CUDA (no nvcc: no DeepSpeed here)
        need = cfg.get("machine", {})
        if n < int(need.get("gpus", 1)):
            out.append(f"needs {need.get('gpus', 1)} CUDA GPU(s); this machine has {n}")
        small = [f"GPU {i}: {m:.0f} GiB" for i, m in enumerate(mem) if m < float(need.get("min_gpu_memory_gib", 0))]
        if small:
            out.append(f"GPUs with less than {need['min_gpu_memory_gib']} GiB: {', '.join(small)}")
        if cfg["trl"].get("use_vllm") is True and importlib.util.find_spec("vllm") is None:
            out.append("trl.use_vllm: true but vllm is not installed (use 'auto' to fall back to transformers generate)")
    if cfg["trl"].get("use_vllm") == "auto" and importlib.util.find_spec("vllm") is None:
        out.append("note: vllm is not installed, so generation uses transformers' generate (slow at 1024 tokens)")
    d = cfg.get("data", {})
    if d.get("train_parquet") and not Path(d["train_parquet"]).exists():
        out.append(f"training data {d['train_parquet']} not found (set DATA_SRC)")
    name = str(cfg["model"]["name"])
    if not (REPO / name).is_dir() and not Path(name).is_dir():
        try:
            from huggingface_hub import snapshot_download

            snapshot_download(name, local_files_only=True)
        except Exception:  # noqa: BLE001 - not in the local cache
            out.append(f"model {name} is not in the local Hugging Face cache (it is downloaded at start)")
    return out


# ----------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------
def last_checkpoint(run_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    d = run_dir / "checkpoints"
    return get_last_checkpoint(str(d)) if d.is_dir() else None


def train(cfg: dict, run_dir: str | Path, *, resume: bool = False):
    from repro.runs import Run

    run_dir = Path(run_dir)
    ckpt = last_checkpoint(run_dir) if resume else None
    if resume and ckpt is None:
        raise FileNotFoundError(f"--resume: no checkpoint-N under {run_dir / 'checkpoints'}")
    if ckpt is None:
        if Run(run_dir).metrics_path.exists():
            raise FileExistsError(f"{Run(run_dir).metrics_path} exists: use --resume or a new --out")
        run = Run.create(run_dir, cfg, seed=int(cfg.get("seed", 0)), method=cfg["method"],
                         extra_meta={"trainer": "repro.trainers.trl", "trl": _trl_version(),
                                     "task": cfg["data"].get("task")})
    else:
        run = Run(run_dir)
    # TRL's TensorBoard reporting (transformers 5 reads its folder from this variable)
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(run_dir / "tensorboard"))
    trainer = build_trainer(cfg, run_dir, run)
    try:
        trainer.train(resume_from_checkpoint=ckpt)
        trainer.save_model(str(run_dir / "final"))
    finally:
        for f in trainer.reward_funcs:
            if hasattr(f, "close"):
                f.close()
    if trainer.accelerator.is_main_process:
        lam = trainer.lgrpo_lambda.value if trainer.lgrpo_lambda is not None else 0.0
        run.mark_done({"steps": int(trainer.state.global_step), "rollouts": trainer.lgrpo_rollouts,
                       "lambda": lam, "trainer": "trl"})
    return run, trainer


def _trl_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("trl")
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.trainers.trl", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True, help="run folder")
    ap.add_argument("--method", required=True, help="a file of methods/ beside the config: grpo | dapo | dr_grpo | lambda | delta_l")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="print the resolved config and the machine check")
    a = ap.parse_args(argv)
    from repro.config import config_errors

    with config_errors("python -m repro.trainers.trl"):  # one line, exit code 2
        cfg = load_config(a.config, a.method, a.set)
    if a.dry_run:
        return dry_run(cfg, gpu=bool(cfg.get("machine", {}).get("gpus", 0)))
    _, trainer = train(cfg, a.out, resume=a.resume)
    print(f"done: {a.out} ({trainer.state.global_step} steps)")
    return 0


def dry_run(cfg: dict, *, gpu: bool) -> int:
    from repro.trainers.contract import WeightingConfig

    print(f"# DRY RUN: {cfg.get('name', cfg['method'])} (nothing is started)")
    problems = machine_problems(cfg, gpu=gpu)
    print("### machine check: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
    for p in problems:
        print(f"- {p}")
    print("### resolved config")
    print(yaml.safe_dump(cfg, sort_keys=False).rstrip())
    weighting = WeightingConfig.from_dict(cfg["weighting"])
    if importlib.util.find_spec("trl") is not None:
        from repro.trainers.trl.options import check_config

        import torch

        check = cfg
        if cfg["trl"].get("bf16") and not torch.cuda.is_available():
            # GRPOConfig refuses bf16 without a GPU: check everything else with bf16 off on CPU
            check = {**cfg, "trl": {**cfg["trl"], "bf16": False, "use_cpu": True}}
            print("### (no GPU here: trl.GRPOConfig is checked with bf16: false, use_cpu: true)")
        try:
            args = grpo_config(check, Path("/nonexistent-dry-run"))
        except (TypeError, ValueError) as e:
            print(f"### trl.GRPOConfig rejects the trl: section: {e}")
            return 2
        refused = check_config(args, weighting)
        print("### λ-seam checks: " + ("ok" if not refused else "REFUSED"))
        for p in refused:
            print(f"- {p}")
        return 2 if refused else 0
    print("### trl.GRPOConfig: NOT checked (trl is not installed here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
