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

.PHONY: venv demo test bench data eval artifacts ablation-cpu lab reproduce-cpu reproduce-1.5b reproduce-3b reproduce-7b pretrain clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# torch first, pinned: with no torch present a bare requirement would pull a multi-GB CUDA build.
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e '.[cpu,test,openrlhf-cpu]'
	# OpenRLHF's pure-torch pieces for the CPU tests; --no-deps: its requirements pull CUDA-only wheels.
	$(VPY) -m pip install -q --no-deps $(OPENRLHF_NODEPS)
	rm -f $(VENV)/.installed-* && touch $@

# The main job: a CPU-scale run of GRPO, DAPO and λ-GRPO on the package's own model and task.
demo: venv
	$(VPY) -m repro.demo --out $(RUNS)/demo

test: venv
	$(VPY) -m pytest

bench: venv
	$(VPY) -m repro.benchmarks.objective
	$(VPY) -m repro.benchmarks.grading

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
reproduce-1.5b reproduce-3b reproduce-7b: $(if $(DRY_RUN),venv,)
	$(if $(DRY_RUN),$(VPY),$(GPU_PY)) -m repro.trainers.openrlhf.reproduce --size $(subst reproduce-,,$@) --method $(METHOD) --runs $(RUNS) --data-src $(DATA_SRC) $(if $(DRY_RUN),--dry-run,)

clean:
	rm -rf $(VENV) .pytest_cache
