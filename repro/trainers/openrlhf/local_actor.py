"""OpenRLHF 0.11.2's actor half (``PolicyModelActor`` + ``DeepspeedStrategy`` + the real DeepSpeed
engine) in a plain process, outside Ray: for the CPU engine test and the one-GPU check.

What a Ray actor would get from OpenRLHF's launcher is done here by hand (the env vars of
``BaseDistributedActor.__init__``, ``trainer/ray/launcher.py:27-36``); the methods that then run
(``init_model_from_pretrained``, ``forward``, ``append``, ``fit``, ``save_checkpoint``) are the stock
ones, called on the plain class behind ``__ray_actor_class__``.

Shims (each one is listed, with the OpenRLHF/DeepSpeed line it answers, in the docstring of
``tests/test_openrlhf_engine.py``):

* ``cpu_shims()``: only on a machine without CUDA. OpenRLHF calls ``torch.cuda.*`` and builds a
  ``"cuda"`` device mesh unconditionally; DeepSpeed itself selects its CPU accelerator (gloo).
* ``torch_adam()``: everywhere. DeepSpeed's ``FusedAdam`` is a C++/CUDA op compiled at first use
  (``op_builder/cpu/fused_adam.py``; on a GPU it needs nvcc, which a pip-installed torch lacks);
  DeepSpeed's own ``torch_adam`` switch (``runtime/engine.py:2172``) uses ``torch.optim.AdamW``,
  the same update rule, inside the same ZeRO-2 optimizer.
* ``import_stand_ins()``: where ray / vllm / flash_attn are not installed (the GPU machine, this
  CI): importable modules whose callables raise; nothing on the actor path calls them.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys
import types
from pathlib import Path

# ----------------------------------------------------------------------------------------------
# import stand-ins
# ----------------------------------------------------------------------------------------------
def _raiser(name):
    def f(*a, **k):
        raise RuntimeError(f"{name} is a stand-in (the real package is not installed here)")
    return f


def _ray_stand_in() -> types.ModuleType:
    """``ray`` as far as OpenRLHF's and the package's modules use it at import time:
    ``ray.remote`` as a decorator (keeps the class reachable as ``__ray_actor_class__``, like
    Ray's ActorClass) and the names imported from ``ray.util``; everything else raises."""
    ray = types.ModuleType("ray")
    ray.__stand_in__ = True

    def remote(*args, **kwargs):
        def wrap(cls):
            return types.SimpleNamespace(__ray_actor_class__=cls, remote=_raiser("ray actor .remote"),
                                         options=_raiser("ray actor .options"))
        if len(args) == 1 and not kwargs and isinstance(args[0], type):
            return wrap(args[0])
        return wrap

    ray.remote = remote
    for n in ("get", "put", "wait", "init", "get_gpu_ids", "kill", "get_actor", "is_initialized"):
        setattr(ray, n, _raiser(f"ray.{n}"))
    util = types.ModuleType("ray.util")
    pg = types.ModuleType("ray.util.placement_group")
    pg.PlacementGroup = type("PlacementGroup", (), {})
    pg.placement_group = _raiser("ray.util.placement_group")
    ss = types.ModuleType("ray.util.scheduling_strategies")
    ss.PlacementGroupSchedulingStrategy = type("PlacementGroupSchedulingStrategy", (), {})
    ss.NodeAffinitySchedulingStrategy = type("NodeAffinitySchedulingStrategy", (), {})
    util.placement_group, util.scheduling_strategies = pg, ss
    util.placement_group_table = _raiser("ray.util.placement_group_table")
    util.get_current_placement_group = _raiser("ray.util.get_current_placement_group")
    ray.util = util
    priv = types.ModuleType("ray._private")
    priv.services = types.SimpleNamespace(get_node_ip_address=lambda: "127.0.0.1")
    ray._private = priv
    return ray


class _StandInType(type):
    """Stand-in classes: instantiating raises; any attribute is another stand-in class (so
    annotations such as ``PIL.Image.Image`` evaluate at import time)."""

    def __getattr__(cls, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _stand_in_class(f"{cls.__qualname__}.{attr}")


def _stand_in_class(name: str):
    return _StandInType(name.rsplit(".", 1)[-1], (), {"__init__": _raiser(name), "__stand_in__": True,
                                                      "__qualname__": name})


class _StandInModule(types.ModuleType):
    """A module whose every attribute is a stand-in class."""

    __stand_in__ = True

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        cls = _stand_in_class(f"{self.__name__}.{attr}")
        setattr(self, attr, cls)
        return cls


class _StandInFinder:
    """Import hook: ``import NAME`` / ``from NAME.sub import x`` for the given top-level names."""

    def __init__(self, roots):
        self.roots = set(roots)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.roots:
            return importlib.util.spec_from_loader(name, self, is_package=True)
        return None

    def create_module(self, spec):
        m = _StandInModule(spec.name)
        m.__version__ = "0.0.0+stand-in"  # OpenRLHF reads vllm.__version__ at import time
        return m

    def exec_module(self, module):
        module.__path__ = []


class FlashAttnStandIn:
    """Import hook for ``flash_attn`` where it is not installed: only the modules and names
    OpenRLHF 0.11.2 imports at module level (``models/ring_attn_utils.py:3-4``; ring attention
    and packing, which are GPU-only), each name raising when called. Any other ``flash_attn``
    submodule stays missing, so OpenRLHF's own fallbacks run: ``models/utils.py:180`` imports
    ``flash_attn.ops.triton.cross_entropy`` inside ``try/except ImportError`` and otherwise
    computes the log-probs in torch (a stand-in there would raise instead)."""

    MODULES = {"flash_attn": (), "flash_attn.utils": (),
               "flash_attn.bert_padding": ("index_first_axis", "pad_input", "unpad_input", "rearrange"),
               "flash_attn.utils.distributed": ("all_gather",)}

    def find_spec(self, name, path=None, target=None):
        if name in self.MODULES:
            return importlib.util.spec_from_loader(name, self, is_package=name in ("flash_attn", "flash_attn.utils"))
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__stand_in__ = True
        if module.__name__ == "flash_attn":
            module.__version__ = "0.0.0+stand-in"
        for n in self.MODULES[module.__name__]:
            setattr(module, n, _raiser(f"{module.__name__}.{n}"))


# imported at module level by OpenRLHF's trainer modules (patches.py needs ppo_trainer), never
# called on the actor path: the prompt datasets (datasets), the agent/HTTP reward code (aiohttp),
# the VLM helpers (PIL)
GENERIC_STAND_INS = ("datasets", "aiohttp", "PIL")


def import_stand_ins() -> list[str]:
    """Make ``ray``, ``vllm``, ``flash_attn`` and ``GENERIC_STAND_INS`` importable where they are
    not installed: ray from ``_ray_stand_in``, the others as ``_StandInModule``s (the package
    does not read the test tree; the CPU tests put their own stubs on the path first, and a
    package found on the path is never stood in). Returns the names that were stood in."""
    used = []
    generic = [n for n in (*GENERIC_STAND_INS, "vllm") if n not in sys.modules and importlib.util.find_spec(n) is None]
    if generic:
        sys.meta_path.append(_StandInFinder(generic))
        used += generic
    if "flash_attn" not in sys.modules and importlib.util.find_spec("flash_attn") is None:
        sys.meta_path.append(FlashAttnStandIn())
        used.append("flash_attn")
    if "ray" not in sys.modules and importlib.util.find_spec("ray") is None:
        ray = _ray_stand_in()
        sys.modules.update({"ray": ray, "ray.util": ray.util, "ray.util.placement_group": ray.util.placement_group,
                            "ray.util.scheduling_strategies": ray.util.scheduling_strategies,
                            "ray._private": ray._private})
        used.append("ray")
    return used


# ----------------------------------------------------------------------------------------------
# shims
# ----------------------------------------------------------------------------------------------
def cpu_shims() -> list[str]:
    """On a machine without CUDA: the torch.cuda calls and the "cuda" device mesh that
    OpenRLHF hard-codes (see the test's table). Returns what was shimmed; no-op with CUDA."""
    import torch

    if torch.cuda.is_available():
        return []
    import openrlhf.trainer.ppo_utils.replay_buffer as rb
    import openrlhf.utils.deepspeed.deepspeed as ods

    return [*shim_torch_cuda(), *shim_device_mesh(ods), *shim_replay_buffer(rb)]


def shim_torch_cuda() -> list[str]:
    """``torch.cuda.set_device`` / ``synchronize`` -> no-op, ``current_device`` -> ``"cpu"``
    (CPU torch raises on each; CPU ops are synchronous)."""
    import torch

    torch.cuda.set_device = lambda device=None: None
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.synchronize = lambda device=None: None
    return ["torch.cuda.set_device", "torch.cuda.current_device", "torch.cuda.synchronize"]


def shim_device_mesh(ods) -> list[str]:
    """``init_device_mesh("cuda", ...)`` -> ``"cpu"`` in ``openrlhf.utils.deepspeed.deepspeed``."""
    if not getattr(ods.init_device_mesh, "_lgrpo_cpu", False):
        real_mesh = ods.init_device_mesh

        @functools.wraps(real_mesh)
        def init_device_mesh(device_type, *a, **k):
            return real_mesh("cpu" if device_type == "cuda" else device_type, *a, **k)

        init_device_mesh._lgrpo_cpu = True
        ods.init_device_mesh = init_device_mesh
    return ["init_device_mesh('cuda')"]


def shim_replay_buffer(rb) -> list[str]:
    """``NaiveReplayBuffer`` built with ``current_device() = 0``, then ``target_device = cpu``."""
    import torch

    if not getattr(rb.NaiveReplayBuffer.__init__, "_lgrpo_cpu", False):
        real_init = rb.NaiveReplayBuffer.__init__

        @functools.wraps(real_init)
        def __init__(self, *a, **k):
            with current_device_as(0):  # builds torch.device("cuda:0"), an unused name
                real_init(self, *a, **k)
            self.target_device = torch.device("cpu")  # only sample() uses it; ppo_train does not

        __init__._lgrpo_cpu = True
        rb.NaiveReplayBuffer.__init__ = __init__
    return ["NaiveReplayBuffer.target_device"]


@contextlib.contextmanager
def current_device_as(value):
    """``torch.cuda.current_device()`` answers ``value`` within the block (no GPU here)."""
    import torch

    old = torch.cuda.current_device
    torch.cuda.current_device = lambda: value
    try:
        yield
    finally:
        torch.cuda.current_device = old


def torch_adam() -> None:
    """DeepSpeed's ``torch_adam`` optimizer switch in the config OpenRLHF builds
    (``utils/deepspeed/deepspeed.py:359``: AdamW params; ``deepspeed_utils.py:73``)."""
    import openrlhf.utils.deepspeed.deepspeed as ods

    if getattr(ods.get_train_ds_config, "_lgrpo_torch_adam", False):
        return
    real = ods.get_train_ds_config

    @functools.wraps(real)
    def get_train_ds_config(*a, **k):
        cfg = real(*a, **k)
        if cfg.get("optimizer", {}).get("type") in ("Adam", "AdamW"):
            cfg["optimizer"]["params"]["torch_adam"] = True
        return cfg

    get_train_ds_config._lgrpo_torch_adam = True
    ods.get_train_ds_config = get_train_ds_config


# ----------------------------------------------------------------------------------------------
# the actor
# ----------------------------------------------------------------------------------------------
def set_rank_env(rank: int, world: int, port: int, addr: str = "127.0.0.1") -> None:
    """What ``BaseDistributedActor.__init__`` sets in each Ray actor (launcher.py:27-36)."""
    os.environ.update(MASTER_ADDR=addr, MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK="0" if world == 1 else str(rank))


def parse_args(argv: list[str]):
    """The hierarchical args ``train()`` would get from the installed OpenRLHF parser."""
    from repro.trainers.openrlhf.cli_check import parse_train_ppo_ray

    args, _ = parse_train_ppo_ray(argv)
    return args


def policy_actor(args, pretrain: str, max_steps: int, *, lambda_settings=None):
    """``init_model_from_pretrained`` of the package's policy actor (the stock one + λ), run on
    the plain class: strategy, DeepSpeed engine, optional checkpoint load, LambdaActorPPOTrainer."""
    from openrlhf.utils.utils import get_strategy

    from repro.trainers.openrlhf.patches import _LambdaPolicyModelActorBase
    from repro.trainers.openrlhf.settings import ENV_VAR

    if lambda_settings is not None:
        os.environ[ENV_VAR] = lambda_settings.to_json()
    strategy = get_strategy(args)
    actor = _LambdaPolicyModelActorBase.__new__(_LambdaPolicyModelActorBase)
    actor.init_model_from_pretrained(strategy, pretrain, max_steps=max_steps)
    return actor


def save_tiny_qwen2(path, *, vocab_size=32, hidden=32, layers=2, heads=4, kv_heads=2, seed=0,
                    tokenizer_from=None) -> str:
    """A tiny Qwen2 made from a config (random weights) saved where ``Actor`` can load it, plus a
    tokenizer (copied from ``tokenizer_from``: the package's tiny-sum asset by default)."""
    import shutil

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=256, tie_word_embeddings=False, pad_token_id=0,
                      bos_token_id=1, eos_token_id=2)
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    src = Path(tokenizer_from) if tokenizer_from else Path(__file__).resolve().parents[2] / "assets" / "tiny-sum"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, path / name)
    return str(path)


# ----------------------------------------------------------------------------------------------
# a rollout, and what λ must be
# ----------------------------------------------------------------------------------------------
def canned_responses(rollout: int, P: int, G: int, vocab: int = 20, max_response: int = 14):
    """What ``vllm_engine.generate_responses`` hands back for P prompts x G samples: token ids
    of prompt + response, the response span, and the reward-file result. Deterministic per
    rollout; response lengths vary a lot (2..max_response), so ranks get uneven token counts."""
    import random

    rnd = random.Random(1000 + rollout)
    out = []
    for p in range(P):
        prompt = [rnd.randrange(3, vocab) for _ in range(rnd.randint(3, 6))]
        for i in range(G):
            n = rnd.randint(2, max_response)
            resp = [rnd.randrange(3, vocab) for _ in range(n - 1)] + [2]  # ends with eos
            reward = [1.0, -0.5, -1.0][rnd.randrange(3)] if p else [1.0, -1.0][i % 2]
            out.append(dict(prompt=f"p{rollout}.{p}", label=str(p), observation_tokens=prompt + resp,
                            action_ranges=[(len(prompt), len(prompt) + n)], reward=reward, scores=reward,
                            rollout_log_probs=None, truncated=False, extra_logs={}))
    return out


def experience_maker(args, tokenizer):
    """The package's LambdaExperienceMaker without its Ray model groups (only the methods that
    need none are called on it)."""
    from repro.trainers.openrlhf.patches import LambdaExperienceMaker

    em = LambdaExperienceMaker.__new__(LambdaExperienceMaker)
    em.strategy = types.SimpleNamespace(args=args)
    em.args, em.tokenizer = args, tokenizer
    em.advantage_estimator = args.algo.advantage.estimator
    em.kl_ctl = types.SimpleNamespace(value=0.0)
    return em


def chunk_bounds(n: int, world: int, rank: int) -> tuple[int, int]:
    """RayActorGroup.async_run_method_batch's split (launcher.py:354-363)."""
    size = n // world + (1 if n % world else 0)
    return rank * size, min((rank + 1) * size, n)


def rollout_experiences(actor, em, responses, rank: int, world: int, max_len: int):
    """One rollout as the PPO trainer prepares it for this rank: stock samples from the vLLM
    responses, stock split, old log-probs by the actor's stock ``forward`` on this rank's chunk
    (make_experience's fields), stock advantages + group info; returns this rank's chunk."""
    import torch
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

    gen = SamplesGenerator.__new__(SamplesGenerator)
    samples = [gen._process_response_into_experience(r, max_len=max_len) for r in responses]
    exps = em.split_rollout_samples(samples)
    lo, hi = chunk_bounds(len(exps), world, rank)
    for k, e in enumerate(exps):  # make_experience's fields; log-probs only where this rank forwards
        if lo <= k < hi:
            e.action_log_probs = actor.forward(e.sequences, e.action_mask, e.attention_mask)
        else:
            e.action_log_probs = torch.zeros(e.action_mask.shape)
        e.base_action_log_probs, e.values = None, None
        e.kl = torch.zeros_like(e.action_log_probs)
        e.info["kl"] = torch.zeros(e.action_mask.shape[0])
    exps = em.compute_advantages_and_returns(exps)
    return exps[lo:hi]


def record_loss_inputs(trainer, records: list):
    """Record every micro-batch the trainer's loss sees (a forward pre-hook on the wrapper): the
    current and old log-probs, advantages, mask, group info, λ and the optimizer step."""
    def hook(module, args, kwargs):
        gl, pos = module._pending
        log_probs, old, adv = args[:3]
        records.append(dict(step=trainer.lgrpo_optimizer_steps, lam=trainer.lgrpo_lambda.value,
                            logp=log_probs.detach().double().cpu(), old=old.detach().double().cpu(),
                            adv=adv.detach().double().cpu(), mask=kwargs["action_mask"].detach().cpu(),
                            group_len=gl.detach().double().cpu(), pos=pos.detach().cpu(),
                            batch_num_tokens=float(kwargs["batch_num_tokens"]),
                            global_batch_size=float(kwargs["global_batch_size"]), dp_size=kwargs["dp_size"]))
    return trainer.actor_loss_fn.register_forward_pre_hook(hook, with_kwargs=True)


def expected_lambda_trajectory(records_by_rank, *, lam0: float, lr: float, r: float, scope: str, G: int):
    """λ after each optimizer step from ``repro.objective`` (float64) over all micro-batches of
    that step on all ranks, as recorded by ``record_loss_inputs``. Also checks OpenRLHF's window
    normalisers and the λ each micro-batch used against this trajectory (ValueError if not).
    Returns (steps, λ after each step, λ gradient of each step)."""
    import math

    import torch

    from repro import objective as obj

    world = len(records_by_rank)
    steps = sorted({rec["step"] for recs in records_by_rank for rec in recs})
    lam, lams, grads = lam0, [], []
    for k in steps:
        recs = [rec for recs in records_by_rank for rec in recs if rec["step"] == k]
        T = max(rec["logp"].shape[1] for rec in recs)
        pad = lambda t, v=0: torch.nn.functional.pad(t, (0, T - t.shape[1]), value=v)  # noqa: E731
        logp, old, adv = (torch.cat([pad(rec[n]) for rec in recs]) for n in ("logp", "old", "adv"))
        mask = torch.cat([pad(rec["mask"], False) for rec in recs])
        gl, pos = torch.cat([rec["group_len"] for rec in recs]), torch.cat([rec["pos"] for rec in recs])
        n_tok, n_seq = float(mask.sum()), float(gl.shape[0])
        gas = len(recs) / world
        for rec in recs:
            if not (math.isclose(rec["batch_num_tokens"] * gas, n_tok, rel_tol=1e-6)
                    and math.isclose(rec["global_batch_size"] * gas, n_seq, rel_tol=1e-6) and rec["dp_size"] == world):
                raise ValueError(f"step {k}: OpenRLHF's window normalisers disagree with the recorded micro-batches")
            if not math.isclose(rec["lam"], lam, rel_tol=1e-6, abs_tol=1e-7):
                raise ValueError(f"step {k}: the loss used λ={rec['lam']}, the objective's trajectory has {lam}")
        denom = n_tok if scope == "batch" else n_seq / G
        lt = torch.tensor(lam, dtype=torch.float64, requires_grad=True)
        out = obj.policy_loss(logp, old, adv, mask, gl, pos, method="lambda", denominator=denom, scope=scope,
                              lam=lt, r=r)
        (g,) = torch.autograd.grad(out.loss, lt)
        grads.append(float(g))
        lam = lam - lr * float(g)
        lams.append(lam)
    return steps, lams, grads
