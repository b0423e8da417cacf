"""The one reproduce pipeline: the tiny size, multi-node layouts (OpenRLHF's own placement code,
simulated and on a real two-node Ray cluster), models fetched before the run, the comparison."""
from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from repro import runs
from repro.trainers import reproduce as pipeline
from repro.trainers.openrlhf import reproduce
from repro.trainers.openrlhf.cli_check import parse_train_ppo_ray
from repro.trainers.openrlhf.placement import LayoutError, node_table, plan_layout

REPO = Path(__file__).resolve().parents[1]


def _args(size, method="lambda", **machine):
    cfg = reproduce.resolve(reproduce.load_config(size, method, machine), Path("/r"), Path("/d"))
    return cfg, parse_train_ppo_ray(reproduce.settings_and_stock(reproduce.commands(cfg)["train"]))[0]


def _dry(*argv) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = reproduce.main(["--dry-run", *argv])
    return rc, out.getvalue()


# ----------------------------------------------------------------------------------------------
# multi-node: engines from nodes x GPUs / TP, OpenRLHF's train() placement run by the dry run
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nodes,gpus", [(2, None), (2, 4), (4, 4)])
def test_dry_run_7b_on_several_nodes_places_every_model(nodes, gpus, tmp_path):
    rc, text = _dry("--size", "7b", "--method", "lambda", "--nodes", str(nodes), "--runs", str(tmp_path),
                    *(["--gpus-per-node", str(gpus)] if gpus else []))
    g = gpus or 8  # sizes/7b.yaml: one node of 8
    assert rc == 0, text
    assert f"accepted by openrlhf's train() on {nodes} node(s) x {g} GPUs" in text
    assert f"vLLM {nodes * g} engine(s) x TP 1; colocate_all" in text
    assert f"--actor.num_nodes {nodes} --ref.num_nodes {nodes} --actor.num_gpus_per_node {g}" in text
    assert f"--vllm.num_engines {nodes * g}" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("  node ")]
    assert len(rows) == nodes
    # colocate_all: GPU k of node n holds actor, ref and vLLM engine number n*g+k, nothing else
    for n, row in enumerate(rows):
        cells = row.split(": ", 1)[1].split(" | ")
        assert len(cells) == g
        for k, cell in enumerate(cells):
            who = sorted(cell.split(": ", 1)[1].split(", "))
            r = n * g + k
            assert who == sorted([f"actor {r}", f"ref {r}", f"vllm {r}"]), (n, k, cell)


def test_openrlhf_asserts_and_unplaceable_layouts_are_refused():
    cfg, args = _args("7b", nodes=2)
    args.vllm.num_engines = 8  # not nodes x GPUs / TP: train_ppo_ray.py's colocate_all assert
    with pytest.raises(LayoutError, match=r"must be equal to vllm_num_engines .*got 16 and 8 \(train_ppo_ray\.py:\d+\)"):
        plan_layout(args, nodes=2, gpus_per_node=8)
    _, args = _args("7b", nodes=2)
    with pytest.raises(LayoutError, match="does not fit on 1 node"):  # 16 bundles on one node of 8
        plan_layout(args, nodes=1, gpus_per_node=8)
    _, args = _args("1.5b")
    args.ref.num_nodes = 2  # actor and ref colocated with KL: same nodes (train_ppo_ray.py's first assert)
    with pytest.raises(LayoutError, match="must be the same when colocate actor and ref"):
        plan_layout(args, nodes=2, gpus_per_node=4)


def test_bad_node_counts_get_one_line(tmp_path):
    # 24 ranks cannot split the paper's batch into whole groups: the launcher's layout check says so
    rc, text = _dry("--size", "7b", "--method", "lambda", "--nodes", "3", "--runs", str(tmp_path))
    assert rc == 2 and "### flags: REFUSED: launch: 64 experiences of rollout.micro_batch_size 16 do not split " \
                       "evenly over 24 actors" in text
    for argv in (["--nodes", "0"], ["--gpus-per-node", "-1"]):
        with pytest.raises(SystemExit, match="must be >= 1"):
            reproduce.main(["--size", "7b", "--dry-run", "--runs", str(tmp_path), *argv])
    from repro.trainers.trl import reproduce as trl_reproduce

    with pytest.raises(SystemExit, match="NODES=2: this path trains on one GPU"):
        trl_reproduce.main(["--dry-run", "--nodes", "2"])


def test_layout_on_a_real_two_node_ray_cluster_matches_the_simulation():
    """OpenRLHF's placement code run against ``ray.cluster_utils.Cluster`` (two nodes of two
    logical GPUs), with light actors that report where Ray put them; the simulated layout of the
    dry run puts every model on the same node, and the colocated ones on one GPU."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cfg, args = _args("7b", nodes=2, gpus=2)
    sim = plan_layout(args, nodes=2, gpus_per_node=2)

    @ray.remote
    class Probe:
        def __init__(self, role, rank):
            self.role, self.rank = role, rank

        def where(self):
            return ray.get_runtime_context().get_node_id(), tuple(ray.get_gpu_ids())

        def get_master_addr_port(self):
            return "127.0.0.1", 29500

    handles = []

    def factory(role, record):
        class Cls:
            @staticmethod
            def options(num_cpus=None, num_gpus=None, scheduling_strategy=None, resources=None, **_):
                class Opt:
                    @staticmethod
                    def remote(*a, **k):
                        rank = sum(1 for r, _ in handles if r[0] == role)
                        h = Probe.options(num_cpus=num_cpus or 0, num_gpus=num_gpus or 0,
                                          scheduling_strategy=scheduling_strategy).remote(role, rank)
                        handles.append(((role, rank), h))
                        return h
                return Opt
        return Cls

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "num_gpus": 2})
    cluster.add_node(num_cpus=4, num_gpus=2)
    try:
        ray.init(address=cluster.address)
        cluster.wait_for_nodes()
        plan_layout(args, nodes=2, gpus_per_node=2, ray_module=ray, actor_factory=factory)
        real = {who: ray.get(h.where.remote(), timeout=120) for who, h in handles}
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert sorted(real) == sorted((p.role, p.rank) for p in sim.placed)
    node_ids = sorted({n for n, _ in real.values()})
    assert len(node_ids) == 2  # both nodes used
    sim_node = {(p.role, p.rank): p.node for p in sim.placed}
    # the same grouping: two models share a node (and a GPU) in Ray exactly when they do in the simulation
    for a in real:
        for b in real:
            assert (real[a][0] == real[b][0]) == (sim_node[a] == sim_node[b]), (a, b)
            same_gpu_sim = sim_node[a] == sim_node[b] and a[1] == b[1]
            assert (real[a] == real[b]) == same_gpu_sim, (a, b, real[a], real[b])
    assert all(len(g) == 1 for _, g in real.values())  # each model on one (logical) GPU
    assert node_table(sim)[0][0] == ["vllm 0", "actor 0", "ref 0"]


# ----------------------------------------------------------------------------------------------
# the tiny size
# ----------------------------------------------------------------------------------------------
def test_tiny_config_and_dry_run(tmp_path):
    rc, text = _dry("--size", "tiny", "--method", "dapo,lambda", "--runs", str(tmp_path))
    assert rc == 0, text
    assert text.count("accepted by the installed openrlhf 0.11.2 parser") == 2
    assert text.count("accepted by openrlhf's train() on 1 node(s) x 1 GPUs") == 2
    for m in ("dapo", "lambda"):
        cfg = reproduce.resolve(reproduce.load_config("tiny", m), tmp_path, tmp_path / "data")
        o = cfg["openrlhf"]
        assert o["actor.model_name_or_path"] == str(REPO / "repro" / "assets" / "tiny-sum")
        assert o["rollout.n_samples_per_prompt"] in range(4, 9) and o["vllm.num_engines"] == 1
        assert not o["vllm.enable_sleep"] and o["vllm.sync_backend"] == "gloo"
        # a few optimizer steps: prompts / rollout batch x samples / train batch
        steps = cfg["data"]["prompts"] // o["rollout.batch_size"] * (
            o["rollout.batch_size"] * o["rollout.n_samples_per_prompt"] // o["train.batch_size"])
        assert 2 <= steps <= 16
        cmds = reproduce.commands(cfg)
        assert cmds["prepare_prompts"][-4:] == ["--task", "sum", "--n", "16"]
        ev = cmds["eval"]
        assert ev[ev.index("--backend") + 1] == "vllm" and ev[ev.index("--benchmarks") + 1] == "sum_heldout"
        assert "--paper-size" not in ev and ev[ev.index("--heldout-problems") + 1] == "64"
        assert ev[ev.index("--model") + 1] == str(tmp_path.resolve() / "reproduce-tiny" / f"tiny-{m}-seed42" / "final")
        assert cmds["eval_base"][cmds["eval_base"].index("--model") + 1] == o["actor.model_name_or_path"]
        assert reproduce.OpenRLHFPlan("tiny", tmp_path, tmp_path).comparison_paths(tmp_path, "tiny") == [
            tmp_path / "reproduce-tiny" / "comparison-tiny.csv"]  # never paper_artifacts/


def test_task_prompts(tmp_path):
    out = tmp_path / "p.jsonl"
    assert reproduce.main(["prepare-prompts", "--task", "sum", "--n", "18", "--multiple-of", "4",
                           "--seed", "3", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    m = json.loads(reproduce.prompt_manifest_path(out).read_text())
    assert len(rows) == 16 == m["kept"] and m["dropped"] == 2 and m["source_rows"] == 18
    for r in rows:
        q = re.fullmatch(r"<bos>Q(\d+(?:\+\d+)+)=", r["prompt"])
        assert q and r["label"] == str(sum(int(x) for x in q.group(1).split("+")))
    again = tmp_path / "q.jsonl"
    reproduce.main(["prepare-prompts", "--task", "sum", "--n", "18", "--multiple-of", "4", "--seed", "3",
                    "--out", str(again)])
    assert again.read_text() == out.read_text()
    for argv, msg in ((["--task", "nope", "--n", "4"], "unknown"), (["--task", "sum", "--n", "2", "--multiple-of", "4"],
                                                                     "fewer than one rollout batch")):
        with pytest.raises(SystemExit, match=msg):
            reproduce.main(["prepare-prompts", "--out", str(tmp_path / "x.jsonl"), *argv])


def test_tiny_comparison_in_table1_layout(tmp_path):
    def scores(acc):
        return {"primary_grader": "qwen", "graders": {"qwen": {"benchmarks": {"sum_heldout": {
            "accuracy": acc, "n_items": 64}}, "average": acc}}}

    dirs = {}
    for m, acc in (("dapo", 50.0), ("lambda", 56.25)):
        rd = runs.Run.create(tmp_path / m, {"x": 1}, seed=0, method=m)
        runs.write_json_atomic(rd.eval_dir / "scores.json", scores(acc))
        dirs[m] = rd.path
    runs.write_json_atomic(tmp_path / "base" / "scores.json", scores(43.75))
    t = pipeline.comparison_table("tiny", dirs, tmp_path / "base")
    assert list(t["method"]) == ["base", "dapo", "lambda"]
    assert list(t["sum_heldout"]) == [43.75, 50.0, 56.25]
    assert (t["row"] == "this run (qwen)").all() and "paper" not in set(t["row"])
    missing = pipeline.comparison_table("tiny", {"grpo": tmp_path / "nothing"})
    assert missing.iloc[0]["note"] == "no eval/scores.json"


# ----------------------------------------------------------------------------------------------
# models fetched once, before Ray
# ----------------------------------------------------------------------------------------------
def test_models_checked_before_anything_starts(tmp_path, monkeypatch):
    from repro.trainers import models

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    got = models.model_problems(["Qwen/Qwen2.5-7B", str(tmp_path / "nope"), str(REPO / "repro/assets/tiny-sum")],
                                target="reproduce-7b")
    assert len(got) == 2
    assert "Qwen/Qwen2.5-7B is not in the Hugging Face cache" in got[0] and "make models SIZE=7b" in got[0]
    assert "does not exist" in got[1]
    cfg = reproduce.resolve(reproduce.load_config("7b", "lambda"), tmp_path, tmp_path)
    assert any("make models SIZE=7b" in p for p in reproduce.machine_problems(cfg))
    assert reproduce.train_env(cfg)["HF_HUB_OFFLINE"] == "1"
    # the run stops at the machine check, before Ray or any step starts
    monkeypatch.setattr(reproduce, "machine_problems",
                        lambda c: models.model_problems([c["openrlhf"]["actor.model_name_or_path"]], target="reproduce-7b"))
    started = []
    monkeypatch.setattr(pipeline, "run_cmd", lambda *a, **k: started.append(a))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = reproduce.main(["--size", "7b", "--method", "lambda", "--runs", str(tmp_path), "--data-src", str(tmp_path)])
    assert rc == 2 and started == [] and "make models SIZE=7b" in out.getvalue()
    assert models.fetch_models([str(REPO / "repro/assets/tiny-sum")]) == 0
    assert models.fetch_models(["no-such-org/no-such-model-lgrpo"]) == 2  # offline: one line, exit code 2
