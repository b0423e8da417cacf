"""The run-folder layout and the metrics schema."""
import json

import pytest

from repro import runs as R


def good_record(step=1, **kw):
    rec = {k: 0.0 for k, (typ, _) in R.REQUIRED.items() if typ is float}
    rec.update(step=step, rollout=step, method="lambda")
    rec.update(kw)
    return rec


def test_create_log_read_roundtrip(tmp_path):
    run = R.Run.create(tmp_path / "r1", {"method": "lambda", "lr": 1e-4}, seed=3, method="lambda")
    for s in (1, 2, 3):
        run.log(good_record(s, **{"lambda": 0.1 * s}))
    again = R.Run(tmp_path / "r1")
    assert again.config() == {"method": "lambda", "lr": 1e-4}
    meta = again.meta()
    assert meta["seed"] == 3 and meta["method"] == "lambda" and "torch" in meta["versions"]
    assert [r["lambda"] for r in again.metrics()] == pytest.approx([0.1, 0.2, 0.3])
    df = R.load_metrics(R.find_runs(tmp_path))
    assert list(df["step"]) == [1, 2, 3] and set(df["seed"]) == {3}
    assert not again.is_done()
    again.mark_done({"final_lambda": 0.3})
    assert again.is_done()


@pytest.mark.parametrize("patch,msg", [
    ({"step": 1.5}, "must be an int"),
    ({"lambda": float("nan")}, "finite number"),
    ({"accuracy": None}, "is null"),
    ({"method": 3}, "must be str"),
])
def test_schema_rejects_bad_fields(tmp_path, patch, msg):
    with pytest.raises(R.SchemaError, match=msg):
        R.validate_record(good_record(**patch))


def test_schema_rejects_missing_field():
    rec = good_record()
    del rec["f_std"]
    with pytest.raises(R.SchemaError, match="lacks"):
        R.validate_record(rec)


def test_nullable_fields_allowed():
    R.validate_record(good_record(kl=None, entropy=None))


def test_torn_last_line_is_skipped_but_corruption_elsewhere_raises(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text(json.dumps({"a": 1}) + "\n" + '{"a": 2')  # an interrupted append
    assert R.read_jsonl(p) == [{"a": 1}]
    with pytest.raises(R.SchemaError, match=":2: malformed"):
        R.read_jsonl(p, strict=True)
    p.write_text('{"a": \n' + json.dumps({"a": 1}) + "\n")
    with pytest.raises(R.SchemaError, match=":1: malformed"):
        R.read_jsonl(p)


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "scores.json"
    R.write_json_atomic(target, {"ok": 1})

    class Boom(Exception):
        pass

    def crash(*a, **k):  # the process dies mid-write, after the temporary file has data
        raise Boom

    monkeypatch.setattr(R.os, "fsync", crash)
    with pytest.raises(Boom):
        R.write_json_atomic(target, {"ok": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]


def test_truncate_metrics_for_resume(tmp_path):
    run = R.Run.create(tmp_path / "r", {}, seed=0, method="dapo")
    for s in range(1, 6):
        run.log(good_record(s))
    run.truncate_metrics(3)
    assert [r["step"] for r in run.metrics()] == [1, 2, 3]


def test_find_runs_ignores_non_runs(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "meta.json").write_text("{}")  # no metrics.jsonl: not a run
    R.Run.create(tmp_path / "a" / "b", {}, seed=0, method="dapo").log(good_record())
    assert [r.path.name for r in R.find_runs(tmp_path)] == ["b"]
    assert R.find_runs(tmp_path / "missing") == []


def test_old_layouts_are_migrated_on_read_into_the_weighting_block(tmp_path):
    """Run.config() gives the weighting as the configs' weighting: block whatever layout the run
    folder was written in: today's (unchanged), the lgrpo: block of the paper-scale configs before
    the trainer contract, and the flat top-level keys of reference runs before it."""
    today = {"task": "sum", "weighting": {"method": "lambda", "r": 0.2, "sigma": "sample",
                                          "lambda": {"init": 0.0, "lr": 10.0}}}
    lgrpo = {"method": "dapo", "scope": "group",  # every parameter was carried for every method
             "lgrpo": {"method": "dapo", "r": 0.111, "sigma": "sample", "alpha": 1.0, "init": 0.0, "lr": 0.1,
                       "scope": "group", "run_dir": "/r", "record_groups": 2, "max_logprob_gap": 0.1}}
    flat = {"task": "budget", "method": "lambda", "r": 1 / 3, "sigma": "sample", "alpha": 1.0,
            "lambda_init": 0.0, "lambda_lr": 1.0}
    want = {
        "today": today,
        "lgrpo": {"method": "dapo", "scope": "group",
                  "lgrpo": {"scope": "group", "run_dir": "/r", "record_groups": 2, "max_logprob_gap": 0.1},
                  "weighting": {"method": "dapo", "lambda": {"init": 0.0, "lr": 0.1}}},
        "flat": {"task": "budget", "method": "lambda",
                 "weighting": {"method": "lambda", "r": 1 / 3, "sigma": "sample", "lambda": {"init": 0.0, "lr": 1.0}}},
    }
    for name, cfg in (("today", today), ("lgrpo", lgrpo), ("flat", flat)):
        run = R.Run.create(tmp_path / name, cfg, seed=0, method=cfg.get("method", "lambda"))
        assert run.config() == want[name], name
        assert run.weighting() == want[name]["weighting"]
        assert R.migrate_config(want[name]) == want[name]  # migrating twice changes nothing
    assert R.dotted(want["flat"])["weighting.lambda.lr"] == 1.0
    assert R.migrate_config({"method": "lambda", "lr": 1e-4}) == {"method": "lambda", "lr": 1e-4}  # no weighting
