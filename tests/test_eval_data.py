"""The 8 benchmarks load from the shared data folder with exact row counts and a gold per row;
the data checks fail clearly; the prompt is the pinned qwen-boxed text."""
from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest

from repro.eval import data as D
from repro.eval.prompts import build_prompt, stop_strings

SRC = D.default_src()
pytestmark = pytest.mark.skipif(
    not (SRC / "eval").is_dir(),
    reason=f"shared data folder {SRC} is absent (set DATA_SRC to the folder holding eval/ and train/)")

# Row counts from the issue / shared/data/README.md, typed here independently of the manifest.
COUNTS = {"gsm8k": 1319, "math500": 500, "minerva_math": 272, "gaokao2023en": 385,
          "olympiadbench": 675, "college_math": 2818, "aime24": 30, "amc23": 40}
GAOKAO_EMPTY_ANSWER_ROWS = {167, 192}  # the source file has answer "" there


def raw(name):
    with open(SRC / "eval" / name / "test.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def last_boxed_independent(text: str) -> str:
    """Brace-matched content of the last \\boxed{...} (written here, for the test)."""
    start = text.rindex("\\boxed{") + len("\\boxed{")
    depth = 1
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    raise AssertionError("unclosed box")


@pytest.fixture(scope="module")
def loaded():
    return {b: D.load_benchmark(b, SRC) for b in COUNTS}


def test_every_benchmark_has_its_exact_row_count(loaded):
    from repro.paper import BENCHMARK_NAMES

    assert list(BENCHMARK_NAMES) == list(COUNTS)
    for b, n in COUNTS.items():
        assert len(loaded[b]) == n, b
        assert [r["id"] for r in loaded[b]] == list(range(n))
        assert all(r["question"].strip() for r in loaded[b]), b


def test_every_row_has_a_parsed_gold(loaded):
    for b, rows in loaded.items():
        for r in rows:
            assert isinstance(r["gold"], str), (b, r["id"])
            if b == "gaokao2023en" and r["id"] in GAOKAO_EMPTY_ANSWER_ROWS:
                assert r["gold"] == "" and r["gold_missing"] is True
                continue
            assert r["gold"].strip(), (b, r["id"])
            assert "gold_missing" not in r


def test_golds_match_independent_parses(loaded):
    for r, x in zip(loaded["gsm8k"], raw("gsm8k")):
        want = re.search(r"####\s*(.+?)\s*$", x["answer"]).group(1)
        assert r["gold"] == want
        float(r["gold"].replace(",", ""))  # every GSM8K gold is a number
    for r, x in zip(loaded["math500"], raw("math500")):
        assert r["gold"] == x["answer"]  # the boxed answer of the solution = the answer field
    for r, x in zip(loaded["minerva_math"], raw("minerva_math")):
        assert r["gold"] == last_boxed_independent(x["solution"]).strip()
    for r, x in zip(loaded["olympiadbench"], raw("olympiadbench")):
        assert r["gold"] == x["final_answer"][0].strip("$").strip()
        assert len(r["answers"]) == len(x["final_answer"])
    for b in ("gaokao2023en", "college_math"):
        for r, x in zip(loaded[b], raw(b)):
            assert "$" not in r["gold"] and r["gold"] == x["answer"].replace("$", "").strip()
    assert all(re.fullmatch(r"\d{3}", r["gold"]) for r in loaded["aime24"])
    assert all(float(r["gold"]) == x["answer"] for r, x in zip(loaded["amc23"], raw("amc23")))


def test_known_rows(loaded):
    assert loaded["gsm8k"][0]["gold"] == "18"
    assert loaded["math500"][0]["gold"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert loaded["minerva_math"][1]["gold"] == "4.5e33"
    assert loaded["gaokao2023en"][0]["gold"] == "\\{x|-2\\leq x < 1\\}"
    assert loaded["amc23"][0]["gold"] == "27.0"
    assert loaded["college_math"][0]["gold"] == "10-4 n"
    multi = [r for r in loaded["olympiadbench"] if r["is_multiple_answer"]]
    assert len(multi) == 94 and all(r["answers"] for r in multi)


def test_yes_no_questions_get_the_suffix(loaded):
    for b, rows in loaded.items():
        for r in rows:
            low = r["gold"].lower()
            assert r["question"].endswith(" (Yes or No)") == (low in ("yes", "no")), (b, r["id"])


def test_college_math_subset_is_the_seeded_draw():
    rows = D.load_benchmark("college_math", SRC, college_math_subset_size=500)
    random.seed(42)
    want = sorted(random.sample(range(2818), 500))
    assert [r["id"] for r in rows] == want


def _copy_src(tmp_path: Path, names) -> Path:
    src = tmp_path / "src"
    for n in names:
        (src / "eval" / n).mkdir(parents=True)
        shutil.copy(SRC / "eval" / n / "test.jsonl", src / "eval" / n / "test.jsonl")
    return src


def test_bad_hash_missing_file_and_wrong_count_fail_clearly(tmp_path):
    src = _copy_src(tmp_path, ["aime24"])
    with pytest.raises(D.DataError, match="missing file"):
        D.load_benchmark("amc23", src)
    f = src / "eval" / "aime24" / "test.jsonl"
    f.write_bytes(f.read_bytes().replace(b"204", b"205", 1))
    with pytest.raises(D.DataError, match="bad sha256"):
        D.load_benchmark("aime24", src)
    entry = dict(D.manifest()["amc23"], rows=41)
    with pytest.raises(D.DataError, match="wrong row count.*40, expected 41"):
        D.check_file(entry, SRC / entry["file"])


def test_make_data_cli_writes_normalised_files_and_reports_failures(tmp_path, capsys):
    out = tmp_path / "cache"
    assert D.main(["--src", str(SRC), "--out", str(out), "--offline",
                   "--only", "aime24", "amc23"]) == 0
    rows = D.load_normalised("amc23", out)
    assert len(rows) == 40 and rows[0]["gold"] == "27.0"
    src = _copy_src(tmp_path, ["aime24"])
    (src / "eval" / "aime24" / "test.jsonl").write_text("{}\n")
    out2 = tmp_path / "cache2"
    assert D.main(["--src", str(src), "--out", str(out2), "--offline",
                   "--only", "aime24", "amc23"]) == 1
    err = capsys.readouterr().err
    assert "aime24: bad sha256" in err and "amc23: missing file" in err
    assert not out2.exists() or not list(out2.glob("*.jsonl"))  # nothing half-written


def test_manifest_covers_the_data_folder():
    m = D.manifest()
    assert set(COUNTS) <= set(m)
    assert m[D.TRAIN]["rows"] == 8523
    for e in m.values():
        assert re.fullmatch(r"[0-9a-f]{64}", e["sha256"]) and e["url"].startswith("https://")
        assert (SRC / e["file"]).is_file(), e["file"]


def test_qwen_boxed_prompt_is_exact():
    want = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            "What is $1+1$?\nPlease reason step by step, and put your final answer within "
            "\\boxed{}.<|im_end|>\n<|im_start|>assistant\n")
    assert build_prompt("What is $1+1$?") == want
    assert build_prompt("{x} and {{y}}").count("{x} and {{y}}") == 1  # braces in questions survive
    assert stop_strings() == ["<|im_end|>", "<|endoftext|>", "</s>"]


def test_download_is_checked_and_atomic(tmp_path):
    """The internet path, exercised with a file:// URL (no network in tests)."""
    entry = dict(D.manifest()["aime24"], url=(SRC / "eval/aime24/test.jsonl").resolve().as_uri())
    out = tmp_path / "out"
    p = D.locate(entry, tmp_path / "empty-src", out, offline=False)
    assert p == out / "raw" / entry["file"] and D.sha256_file(p) == entry["sha256"]
    bad = dict(entry, name="amc23-as-aime", file="eval/x/test.jsonl",
               url=(SRC / "eval/amc23/test.jsonl").resolve().as_uri())
    with pytest.raises(D.DataError, match="bad sha256"):
        D.locate(bad, tmp_path / "empty-src", out, offline=False)
    assert not list((out / "raw" / "eval" / "x").iterdir())  # no partial file left behind
    with pytest.raises(D.DataError, match="missing file"):
        D.locate(bad, tmp_path / "empty-src", out, offline=True)
