"""``{tag}_hf`` checkpoints are rotated by ``ckpt.max_num`` (OpenRLHF 0.11.2 never removes them)."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest



from repro.trainers.openrlhf.checkpoints import rotate_hf_checkpoints  # noqa: E402


def _mk(root: Path, *names: str) -> None:
    for n in names:
        (root / n).mkdir(parents=True)
        (root / n / "model.safetensors").write_bytes(b"x")


def test_rotation_keeps_the_newest_by_step_and_touches_nothing_else(tmp_path):
    # steps chosen so that name order (100 < 20 < 5) and step order differ
    _mk(tmp_path, "global_step5_hf", "global_step10_hf", "global_step20_hf", "global_step100_hf",
        "global_step15_hf", "best_global_step10_hf", "best_global_step20_hf",
        "_actor/global_step5", "_actor/global_step100", "notes_hf", "global_step7")
    (tmp_path / "global_step3_hf").write_text("a file, not a checkpoint folder")
    deleted = rotate_hf_checkpoints(tmp_path, max_num=3)
    assert [d.name for d in deleted] == ["global_step5_hf", "best_global_step10_hf", "global_step10_hf"]
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.iterdir())
    assert left == ["_actor", "best_global_step20_hf", "global_step100_hf", "global_step15_hf",
                    "global_step20_hf", "global_step3_hf", "global_step7", "notes_hf"]
    assert sorted(p.name for p in (tmp_path / "_actor").iterdir()) == ["global_step100", "global_step5"]
    assert rotate_hf_checkpoints(tmp_path, max_num=3) == []  # idempotent
    assert rotate_hf_checkpoints(tmp_path / "missing", max_num=3) == []
    with pytest.raises(ValueError):
        rotate_hf_checkpoints(tmp_path, max_num=0)


def test_the_actor_save_rotates_what_the_stock_save_wrote(tmp_path, monkeypatch):
    """Through the seam subclass: the stock PolicyModelActor.save_checkpoint writes
    ``ckpt.path/{tag}_hf`` (via strategy.save_model), then the subclass rotates on rank 0."""
    import openrlhf.trainer.ray.ppo_actor as pa

    from repro.trainers.openrlhf import patches

    monkeypatch.setattr(pa, "torch_dist_barrier_and_cuda_sync", lambda: None)  # no process group / CUDA here
    saved, printed = [], []

    class Strategy:  # the two calls the stock save makes, and what the rotation reads
        args = types.SimpleNamespace(ckpt=types.SimpleNamespace(path=str(tmp_path), max_num=2, max_mem=1000,
                                                                save_hf=True),
                                     train=types.SimpleNamespace(enable_ema=False))

        def save_ckpt(self, model, save_dir, tag, *a, **k):
            saved.append((Path(save_dir).name, tag))

        def save_model(self, model, tokenizer, output_dir):
            _mk(Path(output_dir).parent, Path(output_dir).name)

        def is_rank_0(self):
            return True

        def print(self, msg):
            printed.append(msg)

    actor = object.__new__(patches._LambdaPolicyModelActorBase)
    actor.strategy, actor.disable_ds_ckpt, actor.save_hf_ckpt = Strategy(), False, True
    actor.actor, actor.ema_model, actor.tokenizer = types.SimpleNamespace(model=object()), None, None
    actor.trainer = types.SimpleNamespace(lgrpo_state=lambda: {"lambda": 0.0})
    for step in (1, 2, 3, 4):
        actor.save_checkpoint(f"global_step{step}")
    assert saved == [("_actor", f"global_step{s}") for s in (1, 2, 3, 4)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_step3_hf", "global_step4_hf"]
    assert len(printed) == 2 and "global_step1_hf" in printed[0] and "ckpt.max_num=2" in printed[0]
    # rank != 0 and save_hf off leave the folders alone
    Strategy.is_rank_0 = lambda self: False
    actor.save_checkpoint("global_step5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_step3_hf", "global_step4_hf", "global_step5_hf"]
    Strategy.is_rank_0 = lambda self: True
    Strategy.args.ckpt.save_hf = False
    patches.rotate_saved_hf(actor.strategy)
    assert len(list(tmp_path.iterdir())) == 3
