#!/usr/bin/env bash
# Prepare the wheels the one-GPU check carries to a machine without network (make gpu-wheels).
# That machine has Python 3.12, torch (CUDA), transformers, accelerate and peft, but not
# DeepSpeed, OpenRLHF or their small pure-python dependencies. Everything here is installed
# there with `pip install --no-deps` (scripts/gpu_check.sh). Ray, vLLM, flash-attn and the
# datasets stack are NOT carried (too big / CUDA-built): the check imports OpenRLHF's actor path
# with import stand-ins (repro/trainers/openrlhf/local_actor.py, import_stand_ins).
# DeepSpeed is published as a source archive only: it is built into a wheel here (no CUDA ops
# are compiled at build time; the check uses DeepSpeed's torch_adam, so no op is JIT-built).
set -euo pipefail
OUT=${1:-gpu_wheels}
PY=${PY:-python3}
mkdir -p "$OUT"
# pure-python wheels: any Python 3 (py3-none-any)
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform any -d "$OUT" \
    openrlhf==0.11.2 hjson==3.1.0 py-cpuinfo==9.0.0 einops==0.8.2 torchdata==0.11.0 \
    pylatexenc==2.11 annotated-types==0.8.0 typing-inspection==0.4.5 pydantic==2.14.4
# compiled wheels for CPython 3.12 on x86_64 Linux
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$OUT" \
    msgpack==1.2.4 ninja==1.13.2 pydantic-core==2.50.5
# DeepSpeed: sdist only -> build a wheel (pure python without prebuilt ops)
if ! ls "$OUT"/deepspeed-0.19.6-*.whl >/dev/null 2>&1; then
  DS_BUILD_OPS=0 $PY -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" deepspeed==0.19.6
fi
du -ch "$OUT"/*.whl | tail -1
ls -la "$OUT"
