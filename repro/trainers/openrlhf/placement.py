"""OpenRLHF's own placement and colocation code, run on declared nodes before anything starts.

``plan_layout(args, nodes=N, gpus_per_node=G)`` executes the installed OpenRLHF 0.11.2 code that
decides where every model goes: ``train()`` of ``cli/train_ppo_ray.py`` (its colocation asserts:
actor and ref on the same nodes x GPUs; ``actor nodes x GPUs == vLLM engines x TP`` under
``colocate_all``, ``:41-63``), ``create_vllm_engines`` (``trainer/ray/vllm_engine.py:209-306``:
the engines' placement group and bundle indices), ``get_bundle_indices`` (``trainer/ray/utils.py:7``)
and ``RayActorGroup._initiate_actors`` (``trainer/ray/launcher.py:240-289``: ranks to bundles).
Their source is read from the installed package and compiled under its own file name (an assert
names its line), with Ray replaced by ``SimCluster``: N nodes of G GPUs, placement groups placed
as Ray's ``PACK`` does (as few nodes as possible, bundles in order), actors into their bundles.
A placement group that does not fit is an error here (Ray would wait for it forever). The run
stops where ``train()`` creates the PPO trainer: by then every model is placed.

``plan_layout(..., ray_module=ray)`` runs the same code against a real Ray cluster (the test uses
``ray.cluster_utils.Cluster`` with two nodes of logical GPUs) with light stand-in actors that
report their node and GPU ids, so the simulated layout is checked against Ray's.
"""
from __future__ import annotations

import ast
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path


class LayoutError(ValueError):
    """OpenRLHF's train() would fail (an assert) or wait forever (a placement that does not fit)."""


def _openrlhf_dir() -> Path:
    spec = importlib.util.find_spec("openrlhf")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("openrlhf is not installed")
    return Path(list(spec.submodule_search_locations)[0])


class _NoOpenRLHFImports(ast.NodeTransformer):
    """``from openrlhf... import X`` inside a function: X comes from the namespace instead."""

    def visit_ImportFrom(self, node):
        return ast.Pass() if (node.module or "").startswith("openrlhf") else node


def _definitions(path: Path, names: set[str]) -> ast.Module:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    body = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names]
    missing = names - {n.name for n in body}
    if missing:
        raise LayoutError(f"{path}: {sorted(missing)} not found (not openrlhf 0.11.2?)")
    mod = ast.Module(body=body, type_ignores=[])
    return ast.fix_missing_locations(_NoOpenRLHFImports().visit(mod))


# ----------------------------------------------------------------------------------------------
# the simulated cluster
# ----------------------------------------------------------------------------------------------
@dataclass
class Placed:
    role: str  # actor, ref, vllm, critic, reward
    rank: int
    node: int
    gpus: list[int]  # GPU indices on that node
    share: float  # of each GPU


@dataclass
class SimCluster:
    nodes: int
    gpus_per_node: int
    cpus_per_node: int = 1024
    free_gpu: list = field(default_factory=list)  # [node][gpu] -> free share
    placed: list[Placed] = field(default_factory=list)

    def __post_init__(self):
        self.free_gpu = [[1.0] * self.gpus_per_node for _ in range(self.nodes)]


class _Ref:
    def __init__(self, value=None):
        self.value = value


class _PG:
    def __init__(self, cluster: SimCluster, bundles: list[dict], strategy: str):
        self.bundle_specs = bundles
        gpus_needed = [int(b.get("GPU", 0)) for b in bundles]
        if any(g > 1 for g in gpus_needed):
            raise LayoutError(f"bundles of more than one GPU: {bundles[:1]}")
        # PACK: fill the nodes in order, as few as possible; each 1-GPU bundle takes one whole GPU
        self.where: list[tuple[int, int | None]] = []
        for b, g in enumerate(gpus_needed):
            if not g:
                self.where.append((0, None))
                continue
            spot = next(((n, i) for n in range(cluster.nodes) for i, f in enumerate(cluster.free_gpu[n]) if f >= 1.0
                         and (n, i) not in self.where), None)
            if spot is None:
                total = sum(gpus_needed)
                raise LayoutError(f"a placement group of {total} bundles {{GPU: 1}} does not fit on {cluster.nodes} "
                                  f"node(s) x {cluster.gpus_per_node} GPUs (with what is already placed): Ray would "
                                  "wait for it forever")
            self.where.append(spot)
        for n, i in self.where:
            if i is not None:
                cluster.free_gpu[n][i] = 0.0
        self.left = [1.0 if i is not None else 0.0 for _, i in self.where]

    def ready(self):
        return _Ref(True)


class _Strategy:
    def __init__(self, placement_group=None, placement_group_bundle_index=-1, placement_group_capture_child_tasks=None):
        self.pg, self.index = placement_group, placement_group_bundle_index


class _SimRay:
    """The few calls of ``ray`` that the placement code makes."""

    def __init__(self, cluster: SimCluster):
        self.cluster = cluster
        ray = self

        class util:  # noqa: N801 - ray.util.placement_group_table
            @staticmethod
            def placement_group_table(pg):
                return {"bundles_to_node_id": {b: f"node{n}" for b, (n, _) in enumerate(pg.where)}}

        self.util = util

    def is_initialized(self):
        return True

    def init(self, *a, **k):
        return None

    def get(self, x):
        if isinstance(x, list):
            return [self.get(i) for i in x]
        return x.value if isinstance(x, _Ref) else x


def _actor_class(role: str, cluster: SimCluster | None, record: list):
    """A stand-in for a Ray actor class: ``.options(...).remote(...)`` places (simulated) or
    records the request (real Ray: the caller starts a light actor instead)."""

    class _Handle:
        def __init__(self, value):
            self._value = value

        def __getattr__(self, name):
            return _Method()

    class _Method:
        def remote(self, *a, **k):
            return _Ref(("127.0.0.1", 29500))

    class _Options:
        def __init__(self, num_gpus=1, scheduling_strategy=None, **_):
            self.num_gpus, self.strategy = float(num_gpus or 0), scheduling_strategy

        def remote(self, *args, **kwargs):
            rank = sum(1 for p in record if p.role == role)
            if cluster is not None:
                node, gpus = _place(cluster, self.num_gpus, self.strategy, role, rank)
                record.append(Placed(role, rank, node, gpus, self.num_gpus))
            return _Handle(rank)

    class _Cls:
        __name__ = role

        @staticmethod
        def options(**kw):
            return _Options(**kw)

    return _Cls


def _place(cluster: SimCluster, share: float, strategy, role: str, rank: int) -> tuple[int, list[int]]:
    if strategy is not None and strategy.pg is not None:
        pg, b = strategy.pg, strategy.index
        node, gpu = pg.where[b]
        if share > pg.left[b] + 1e-9:
            raise LayoutError(f"{role} {rank}: {share} GPU asked of bundle {b}, which has {pg.left[b]:.1f} left")
        pg.left[b] -= share
        return node, ([] if gpu is None else [gpu])
    for n in range(cluster.nodes):
        for i, f in enumerate(cluster.free_gpu[n]):
            if f >= share - 1e-9 and share > 0:
                cluster.free_gpu[n][i] -= share
                return n, [i]
    raise LayoutError(f"{role} {rank}: no GPU with {share} free on {cluster.nodes} node(s) x {cluster.gpus_per_node} "
                      "GPUs: Ray would wait for it forever")


class _Stop(Exception):
    pass


# ----------------------------------------------------------------------------------------------
# running OpenRLHF's code
# ----------------------------------------------------------------------------------------------
@dataclass
class Layout:
    nodes: int
    gpus_per_node: int
    placed: list[Placed]
    engines: int
    tp: int
    colocate_all: bool


def plan_layout(args, *, nodes: int, gpus_per_node: int, ray_module=None, actor_factory=None) -> Layout:
    """Run OpenRLHF's placement code for the parsed ``args`` (``cli_check.parse_train_ppo_ray``)
    on ``nodes`` x ``gpus_per_node`` GPUs. Raises ``LayoutError`` with OpenRLHF's own assert
    message (and line) or the placement that cannot be satisfied."""
    import typing
    from packaging import version

    root = _openrlhf_dir()
    cluster = SimCluster(nodes, gpus_per_node) if ray_module is None else None
    ray = _SimRay(cluster) if ray_module is None else ray_module
    record: list[Placed] = []

    def actor(role):
        return actor_factory(role, record) if actor_factory else _actor_class(role, cluster, record)

    class _PPOTrainer:
        @staticmethod
        def remote(*a, **k):
            raise _Stop

    class _Strategy_:
        def print(self, *a, **k):
            pass

    if ray_module is None:
        pg_factory, strategy_cls = (lambda bundles, strategy="PACK": _PG(cluster, bundles, strategy)), _Strategy
    else:
        from ray.util.placement_group import placement_group as pg_factory
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy as strategy_cls
    fake_vllm = type(sys)("vllm")
    fake_vllm.__version__ = "0.29.0"
    ns: dict = {"ray": ray, "placement_group": pg_factory, "PlacementGroupSchedulingStrategy": strategy_cls,
                "PlacementGroup": object, "Dict": typing.Dict, "Type": typing.Type, "Optional": typing.Optional,
                "List": typing.List, "Any": typing.Any, "BaseModelActor": object, "version": version,
                "vllm": fake_vllm, "os": __import__("os"), "get_strategy": lambda a: _Strategy_(),
                "PPOTrainer": _PPOTrainer, "RolloutRayActor": actor("vllm"), "PolicyModelActor": actor("actor"),
                "ReferenceModelActor": actor("ref"), "RewardModelActor": actor("reward"),
                "CriticModelActor": actor("critic"), "batch_vllm_engine_call": lambda *a, **k: None}
    sources = [(root / "trainer" / "ray" / "utils.py", {"get_bundle_indices"}),
               (root / "trainer" / "ray" / "vllm_engine.py", {"create_vllm_engines"}),
               (root / "trainer" / "ray" / "launcher.py", {"RayActorGroup"}),
               (root / "cli" / "train_ppo_ray.py", {"train"})]
    saved = sys.modules.get("ray")
    try:
        for path, names in sources:
            exec(compile(_definitions(path, names), str(path), "exec"), ns)  # noqa: S102 - OpenRLHF's own code
        sys.modules["ray"] = ray  # get_bundle_indices imports ray inside the function
        try:
            ns["train"](args)
        except _Stop:
            pass
        except AssertionError as e:
            tb = e.__traceback__
            while tb.tb_next is not None:
                tb = tb.tb_next
            raise LayoutError(f"{e} ({Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno})") from None
    finally:
        if saved is not None:
            sys.modules["ray"] = saved
        else:
            sys.modules.pop("ray", None)
    return Layout(nodes, gpus_per_node, record, int(args.vllm.num_engines or 0), int(args.vllm.tensor_parallel_size),
                  bool(args.train.colocate_all))


def node_table(layout: Layout) -> dict[int, dict[int, list[str]]]:
    """``{node: {gpu: ["actor 0", "ref 0", "vllm 0"]}}``."""
    out: dict[int, dict[int, list[str]]] = {n: {g: [] for g in range(layout.gpus_per_node)} for n in range(layout.nodes)}
    for p in layout.placed:
        for g in p.gpus:
            out[p.node][g].append(f"{p.role} {p.rank}")
    return out


def layout_lines(layout: Layout) -> list[str]:
    roles = {}
    for p in layout.placed:
        roles[p.role] = roles.get(p.role, 0) + 1
    head = (f"### placement: accepted by openrlhf's train() on {layout.nodes} node(s) x {layout.gpus_per_node} GPUs "
            f"(its colocation asserts and placement groups ran): "
            + ", ".join(f"{n} {r}" for r, n in roles.items())
            + f"; vLLM {layout.engines} engine(s) x TP {layout.tp}" + ("; colocate_all" if layout.colocate_all else ""))
    lines = [head]
    for n, gpus in node_table(layout).items():
        lines.append(f"  node {n}: " + " | ".join(f"GPU {g}: {', '.join(who) or '-'}" for g, who in gpus.items()))
    return lines
