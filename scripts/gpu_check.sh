#!/usr/bin/env bash
# The one-GPU check, offline (make gpu-check). Run from the repository root on the GPU machine,
# with the wheels from scripts/gpu_wheels.sh in ./gpu_wheels (carried there). It makes a venv
# that sees the machine's own torch/transformers/accelerate/peft (--system-site-packages),
# installs the carried wheels into it with --no-deps, and runs the check under a time limit.
# Results: paper_artifacts/gpu_check.md (atomic) and $OUT/gpu_check.json when $OUT is set.
set -euo pipefail
WHEELS=${WHEELS:-gpu_wheels}
VENV=${GPU_VENV:-.venv-gpu}
LIMIT=${GPU_CHECK_TIMEOUT:-480}  # 8 minutes
PY=${PY:-python3}
test -d "$WHEELS" || { echo "no $WHEELS/: run scripts/gpu_wheels.sh (make gpu-wheels) first" >&2; exit 2; }
test -x "$VENV/bin/python" || $PY -m venv --system-site-packages "$VENV"
"$VENV/bin/python" -m pip install -q --no-deps --no-index "$WHEELS"/*.whl
"$VENV/bin/python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
JSON=${OUT:+$OUT/gpu_check.json}
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout "$LIMIT" "$VENV/bin/python" -m repro.trainers.openrlhf.gpu_check \
    ${JSON:+--out "$JSON"} "$@"
